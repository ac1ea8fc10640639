package contracts

import (
	"strings"
	"testing"
	"time"

	"github.com/hyperledger/fabric-contract-api-go/v2/contractapi"
)

func grant(id, grantee string, scope []string, purpose, start, end string) Grant {
	return Grant{ConsentID: ref(id), Patient: patientA, Grantee: grantee, Action: "read", Scope: scope, Purpose: purpose,
		Start: start, End: end, DocumentDigest: digest1}
}

// consentWorld has patientA's records at HospitalMSP, and patientA's own identity registered by the hospital and
// confirmed by the patient.
func consentWorld(t *testing.T) (*world, actor, actor) {
	t.Helper()
	w := newWorld("providers")
	hospital := client(t, "HospitalMSP")
	patient := patientCert(t, "HospitalMSP", "patient-app")
	_, err := register(t, w, hospital, entry(patientA, "Patient", "p1", 1, digest1))
	mustOK(t, err)
	mustOK(t, registerIdentity(w, hospital, patientA, patient))
	mustOK(t, confirmIdentity(w, patient, patientA))
	return w, hospital, patient
}

func registerIdentity(w *world, custodian actor, patient string, identity actor) error {
	c := newConsent(testConfig)
	_, err := call(w, custodian, c, nil, func(ctx contractapi.TransactionContextInterface) (*PatientIdentity, error) {
		return c.RegisterPatientIdentity(ctx, patient, identity.pem())
	})
	return err
}

func confirmIdentity(w *world, identity actor, patient string) error {
	c := newConsent(testConfig)
	_, err := call(w, identity, c, nil, func(ctx contractapi.TransactionContextInterface) (*IdentityChange, error) {
		return c.ConfirmPatientIdentity(ctx, patient)
	})
	return err
}

func doGrant(t *testing.T, w *world, a actor, g Grant) (*ConsentRecord, error) {
	c := newConsent(testConfig)
	return call(w, a, c, nil, func(ctx contractapi.TransactionContextInterface) (*ConsentRecord, error) {
		return c.Grant(ctx, mustJSON(t, g))
	})
}

func doRevoke(w *world, a actor, id, doc string) (*ConsentRecord, error) {
	c := newConsent(testConfig)
	return call(w, a, c, nil, func(ctx contractapi.TransactionContextInterface) (*ConsentRecord, error) {
		return c.Revoke(ctx, ref(id), doc)
	})
}

// check asks whether HospitalMSP may release patientA's records.
func check(t *testing.T, w *world, grantee, typ, purpose string) *Decision {
	t.Helper()
	return checkAt(t, w, "HospitalMSP", grantee, typ, purpose)
}

func checkAt(t *testing.T, w *world, custodian, grantee, typ, purpose string) *Decision {
	t.Helper()
	c := newConsent(testConfig)
	d, err := call(w, client(t, "ClinicMSP"), c, nil, func(ctx contractapi.TransactionContextInterface) (*Decision, error) {
		return c.Check(ctx, patientA, custodian, grantee, typ, purpose)
	})
	mustOK(t, err)
	return d
}

func TestConsentGrantValidation(t *testing.T) {
	ok := grant("c1", "ClinicMSP", []string{"Observation"}, "TREAT", "2026-03-01T00:00:00Z", "2026-03-08T00:00:00Z")
	cases := []struct {
		name   string
		mutate func(g *Grant)
		msg    string
	}{
		{"bad id", func(g *Grant) { g.ConsentID = "" }, "consentId"},
		{"patient name", func(g *Grant) { g.Patient = "Jane Doe" }, "pseudonym"},
		{"bad grantee", func(g *Grant) { g.Grantee = "Dr Smith" }, "grantee"},
		{"write action", func(g *Grant) { g.Action = "write" }, "action"},
		{"empty scope", func(g *Grant) { g.Scope = nil }, "scope"},
		{"bad scope", func(g *Grant) { g.Scope = []string{"observation"} }, "resource type"},
		{"bad purpose", func(g *Grant) { g.Purpose = "MARKETING" }, "purpose"},
		{"bad start", func(g *Grant) { g.Start = "soon" }, "start"},
		{"end before start", func(g *Grant) { g.End = "2026-02-01T00:00:00Z" }, "after start"},
		{"bad document digest", func(g *Grant) { g.DocumentDigest = "abc" }, "documentDigest"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w, hospital, _ := consentWorld(t)
			g := ok
			tc.mutate(&g)
			_, err := doGrant(t, w, hospital, g)
			refused(t, w, err, CodeInvalid, tc.msg)
		})
	}
}

func TestConsentWhoMayGrantAndRevoke(t *testing.T) {
	g := grant("c1", "ClinicMSP", []string{"*"}, "TREAT", "2026-03-01T00:00:00Z", "")
	cases := []struct {
		name    string
		caller  func(t *testing.T, patient actor) actor
		doc     string
		code    string
		msg     string
		wantVia string
	}{
		{"patient's own identity, no document", func(t *testing.T, p actor) actor { return p }, "", "", "", ViaPatient},
		{"custodian with signed document", func(t *testing.T, _ actor) actor { return client(t, "HospitalMSP") }, digest1, "", "", ViaCustodian},
		{"custodian's admin with signed document", func(t *testing.T, _ actor) actor { return admin(t, "HospitalMSP") }, digest1, "", "", ViaCustodian},
		{"custodian without document", func(t *testing.T, _ actor) actor { return client(t, "HospitalMSP") }, "", CodeForbidden, "signed consent document", ""},
		{"org without the patient's records", func(t *testing.T, _ actor) actor { return client(t, "ClinicMSP") }, digest1, CodeForbidden, "neither the patient nor a custodian", ""},
		{"a user of an org without the records", func(t *testing.T, _ actor) actor { return newActor(t, "ClinicMSP", "client", "mallory") }, "", CodeForbidden, "neither", ""},
		{"an insurer", func(t *testing.T, _ actor) actor { return client(t, "InsurerMSP") }, digest1, CodeForbidden, "neither", ""},
		{"peer identity", func(t *testing.T, _ actor) actor { return peerOf(t, "HospitalMSP") }, digest1, CodeForbidden, "may not submit", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w, _, patient := consentWorld(t)
			gg := g
			gg.DocumentDigest = tc.doc
			a := tc.caller(t, patient)
			rec, err := doGrant(t, w, a, gg)
			if tc.code != "" {
				refused(t, w, err, tc.code, tc.msg)
				return
			}
			mustOK(t, err)
			if rec.GrantedVia != tc.wantVia || rec.Status != "active" || rec.GrantedBy != "HospitalMSP" {
				t.Fatalf("record %+v", rec)
			}
			if (tc.wantVia == ViaPatient) != (rec.Signer == patient.fingerprint()) {
				t.Fatalf("signer %q", rec.Signer)
			}
			if ev := lastEvent(t, w); ev.Name != "Consent.Granted" {
				t.Fatalf("event %s", ev.Name)
			}
			_, err = doGrant(t, w, a, gg)
			refused(t, w, err, CodeConflict, "exists already")
			_, err = doRevoke(w, client(t, "ClinicMSP"), "c1", digest1)
			refused(t, w, err, CodeForbidden, "")
			rec, err = doRevoke(w, a, "c1", tc.doc)
			mustOK(t, err)
			if rec.Status != "revoked" || rec.RevokedVia != tc.wantVia || rec.RevokedBy != "HospitalMSP" {
				t.Fatalf("revoked %+v", rec)
			}
			if ev := lastEvent(t, w); ev.Name != "Consent.Revoked" {
				t.Fatalf("event %s", ev.Name)
			}
			_, err = doRevoke(w, a, "c1", tc.doc)
			refused(t, w, err, CodeConflict, "revoked already")
			_, err = doRevoke(w, a, "nope", tc.doc)
			refused(t, w, err, CodeNotFound, "does not exist")
		})
	}
}

func TestConsentCustodianGrantRevokedByThePatient(t *testing.T) {
	w, hospital, patient := consentWorld(t)
	_, err := doGrant(t, w, hospital, grant("c1", "ClinicMSP", []string{"*"}, "TREAT", "2026-03-01T00:00:00Z", ""))
	mustOK(t, err)
	rec, err := doRevoke(w, patient, "c1", "")
	mustOK(t, err)
	if rec.RevokedVia != ViaPatient {
		t.Fatalf("revoked %+v", rec)
	}
}

func identities(t *testing.T, w *world, patient string) map[string]PatientIdentity {
	t.Helper()
	c := newConsent(testConfig)
	all, err := call(w, client(t, "ClinicMSP"), c, nil, func(ctx contractapi.TransactionContextInterface) ([]PatientIdentity, error) {
		return c.PatientIdentities(ctx, patient)
	})
	mustOK(t, err)
	out := map[string]PatientIdentity{}
	for _, pid := range all {
		out[pid.RegisteredBy] = pid
	}
	return out
}

func TestConsentPatientIdentityLifecycle(t *testing.T) {
	w := newWorld("providers")
	hospital, clinic := client(t, "HospitalMSP"), client(t, "ClinicMSP")
	phone := patientCert(t, "HospitalMSP", "patient-phone")
	newPhone := patientCert(t, "HospitalMSP", "patient-new-phone")
	lost := patientCert(t, "HospitalMSP", "patient-after-loss")
	_, err := register(t, w, hospital, entry(patientA, "Patient", "p1", 1, digest1))
	mustOK(t, err)
	_, err = register(t, w, clinic, entry(patientA, "Patient", "p9", 1, digest1))
	mustOK(t, err)
	c := newConsent(testConfig)
	rotate := func(a actor, to actor) error {
		return do(w, a, c, func(ctx contractapi.TransactionContextInterface) (*IdentityChange, error) {
			return c.RotatePatientIdentity(ctx, patientA, to.pem())
		})
	}
	recover := func(a actor, to actor, doc string) error {
		return do(w, a, c, func(ctx contractapi.TransactionContextInterface) (*PatientIdentity, error) {
			return c.RecoverPatientIdentity(ctx, patientA, to.pem(), doc)
		})
	}
	stayGrant := func(id string) Grant {
		g := grant(id, "practitioner:npi|1111111111", []string{"*"}, "TREAT", "2026-03-01T00:00:00Z", "")
		g.DocumentDigest = ""
		return g
	}

	// Proposed, not yet confirmed: the certificate is no patient identity yet, and never acts for its org.
	mustOK(t, registerIdentity(w, hospital, patientA, phone))
	if ev := lastEvent(t, w); ev.Name != "Consent.PatientIdentityRegistered" {
		t.Fatalf("event %s", ev.Name)
	}
	if pid := identities(t, w, patientA)["HospitalMSP"]; pid.Fingerprint != "" || pid.Pending != phone.fingerprint() || pid.PendingVia != ViaRegistration {
		t.Fatalf("pending binding %+v", pid)
	}
	_, err = doGrant(t, w, phone, stayGrant("g0"))
	refused(t, w, err, CodeForbidden, "no custodian has confirmed for this patient")
	refused(t, w, confirmIdentity(w, newPhone, patientA), CodeForbidden, "waiting for the caller's certificate")
	mustOK(t, registerIdentity(w, hospital, patientA, phone)) // a retry proposes nothing new
	wroteNothing(t, w)

	// Both custodians bind the same certificate; one confirmation confirms both.
	mustOK(t, registerIdentity(w, clinic, patientA, phone))
	mustOK(t, confirmIdentity(w, phone, patientA))
	if ev := lastEvent(t, w); ev.Name != "Consent.PatientIdentityConfirmed" {
		t.Fatalf("event %s", ev.Name)
	}
	for _, custodian := range []string{"HospitalMSP", "ClinicMSP"} {
		if pid := identities(t, w, patientA)[custodian]; pid.Fingerprint != phone.fingerprint() || pid.Pending != "" || pid.Version != 2 {
			t.Fatalf("%s binding %+v", custodian, pid)
		}
	}
	mustOK(t, registerIdentity(w, hospital, patientA, phone))
	wroteNothing(t, w)
	refused(t, w, registerIdentity(w, hospital, patientA, newPhone), CodeConflict, "confirmed to another certificate")

	_, err = doGrant(t, w, phone, stayGrant("g1"))
	mustOK(t, err)
	if d := checkAt(t, w, "HospitalMSP", "practitioner:npi|1111111111", "Observation", "TREAT"); d.Decision != "permit" {
		t.Fatalf("the patient's grant at the hospital: %+v", d)
	}

	// Rotation: signed by the bound identity; the old one counts until the new one confirms.
	refused(t, w, rotate(hospital, newPhone), CodeForbidden, "not this patient's confirmed identity")
	refused(t, w, rotate(phone, phone), CodeInvalid, "the one in use")
	mustOK(t, rotate(phone, newPhone))
	if ev := lastEvent(t, w); ev.Name != "Consent.PatientIdentityRotationRequested" {
		t.Fatalf("event %s", ev.Name)
	}
	if d := checkAt(t, w, "HospitalMSP", "practitioner:npi|1111111111", "Observation", "TREAT"); d.Decision != "permit" {
		t.Fatalf("before the new identity confirms: %+v", d)
	}
	mustOK(t, confirmIdentity(w, newPhone, patientA))
	for _, custodian := range []string{"HospitalMSP", "ClinicMSP"} {
		if pid := identities(t, w, patientA)[custodian]; pid.Fingerprint != newPhone.fingerprint() {
			t.Fatalf("%s after rotation %+v", custodian, pid)
		}
	}
	if d := checkAt(t, w, "HospitalMSP", "practitioner:npi|1111111111", "Observation", "TREAT"); d.Decision != "deny" {
		t.Fatalf("a grant signed by the rotated-away certificate: %+v", d)
	}
	_, err = doGrant(t, w, phone, stayGrant("g2"))
	refused(t, w, err, CodeForbidden, "no custodian has confirmed") // the old phone speaks for nobody now
	_, err = doGrant(t, w, newPhone, stayGrant("g3"))
	mustOK(t, err)

	// Recovery: the hospital, with the identity-proofing document, drops the certificate at once.
	refused(t, w, recover(hospital, lost, ""), CodeInvalid, "documentDigest")
	refused(t, w, recover(newPhone, lost, digest2), CodeForbidden, "patient's own identity")
	mustOK(t, recover(hospital, lost, digest2))
	if ev := lastEvent(t, w); ev.Name != "Consent.PatientIdentityRecovered" {
		t.Fatalf("event %s", ev.Name)
	}
	if d := checkAt(t, w, "HospitalMSP", "practitioner:npi|1111111111", "Observation", "TREAT"); d.Decision != "deny" {
		t.Fatalf("after recovery started: %+v", d)
	}
	if d := checkAt(t, w, "ClinicMSP", "practitioner:npi|1111111111", "Observation", "TREAT"); d.Decision != "permit" {
		t.Fatalf("the clinic still knows the patient by the new phone: %+v", d)
	}
	mustOK(t, confirmIdentity(w, lost, patientA))
	hist, err := call(w, clinic, c, nil, func(ctx contractapi.TransactionContextInterface) ([]PatientIdentity, error) {
		return c.PatientIdentityHistory(ctx, patientA, "HospitalMSP")
	})
	mustOK(t, err)
	var trail []string
	for _, h := range hist {
		trail = append(trail, h.PendingVia+":"+short(h.Fingerprint)+">"+short(h.Pending))
	}
	want := "registration:>" + short(phone.fingerprint()) + " :" + short(phone.fingerprint()) + ">" +
		" rotation:" + short(phone.fingerprint()) + ">" + short(newPhone.fingerprint()) +
		" :" + short(newPhone.fingerprint()) + ">" +
		" recovery:>" + short(lost.fingerprint()) + " :" + short(lost.fingerprint()) + ">"
	if strings.Join(trail, " ") != want {
		t.Fatalf("history\n got %s\nwant %s", strings.Join(trail, " "), want)
	}
	if hist[4].DocumentDigest != digest2 || hist[5].Version != 6 {
		t.Fatalf("recovery record %+v / %+v", hist[4], hist[5])
	}
}

func short(fp string) string {
	if len(fp) < 6 {
		return fp
	}
	return fp[:6]
}

func TestConsentRegisterPatientIdentity(t *testing.T) {
	w, _, _ := consentWorld(t)
	c := newConsent(testConfig)
	reg := func(a actor, pem string) error {
		_, err := call(w, a, c, nil, func(ctx contractapi.TransactionContextInterface) (*PatientIdentity, error) {
			return c.RegisterPatientIdentity(ctx, patientA, pem)
		})
		return err
	}
	someone := patientCert(t, "HospitalMSP", "p")
	hospital := client(t, "HospitalMSP")
	refused(t, w, reg(client(t, "ClinicMSP"), someone.pem()), CodeForbidden, "holds no records")
	refused(t, w, reg(client(t, "InsurerMSP"), someone.pem()), CodeForbidden, "only provider orgs")
	refused(t, w, reg(hospital, "not a pem"), CodeInvalid, "PEM")
	refused(t, w, reg(hospital, someone.pem()+someone.pem()), CodeInvalid, "not a chain")
	refused(t, w, reg(hospital, hospital.pem()), CodeInvalid, "not a patient certificate")
}

// The surgery case: a surgeon, a lab and an anesthesiologist get read access for the stay; the lab's access is
// revoked early, the others expire with the stay, and later reads are denied.
func TestConsentSurgeryStay(t *testing.T) {
	w, _, patient := consentWorld(t)
	surgeon, lab, anest := "practitioner:npi|1111111111", "ClinicMSP", "practitioner:npi|2222222222"
	stayStart, stayEnd := "2026-03-01T06:00:00Z", "2026-03-04T18:00:00Z"
	for _, g := range []Grant{
		grant("stay-surgeon", surgeon, []string{"*"}, "TREAT", stayStart, stayEnd),
		grant("stay-lab", lab, []string{"ServiceRequest", "Specimen"}, "TREAT", stayStart, stayEnd),
		grant("stay-anest", anest, []string{"Observation", "MedicationStatement"}, "TREAT", stayStart, stayEnd),
	} {
		_, err := doGrant(t, w, patient, g)
		mustOK(t, err)
	}
	w.now = time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	cases := []struct {
		grantee, typ, purpose, decision, reason string
	}{
		{surgeon, "Condition", "TREAT", "permit", ref("stay-surgeon") + " permits"},
		{lab, "Specimen", "TREAT", "permit", ref("stay-lab")},
		{lab, "Condition", "TREAT", "deny", "does not cover Condition"},
		{anest, "Observation", "TREAT", "permit", ""},
		{anest, "Observation", "HPAYMT", "deny", "purpose TREAT, not HPAYMT"},
		{"practitioner:npi|9999999999", "Observation", "TREAT", "deny", "no consent that opens HospitalMSP's records"},
		{"InsurerMSP", "Observation", "HPAYMT", "deny", "no consent"},
	}
	for _, tc := range cases {
		d := check(t, w, tc.grantee, tc.typ, tc.purpose)
		if d.Decision != tc.decision || !strings.Contains(d.Reason, tc.reason) {
			t.Errorf("%s %s %s: got %+v, want %s (%s)", tc.grantee, tc.typ, tc.purpose, d, tc.decision, tc.reason)
		}
	}
	_, err := doRevoke(w, patient, "stay-lab", "")
	mustOK(t, err)
	if d := check(t, w, lab, "Specimen", "TREAT"); d.Decision != "deny" || !strings.Contains(d.Reason, "revoked at") {
		t.Fatalf("after revoke: %+v", d)
	}
	w.now = time.Date(2026, 3, 5, 9, 0, 0, 0, time.UTC)
	if d := check(t, w, surgeon, "Condition", "TREAT"); d.Decision != "deny" || !strings.Contains(d.Reason, "expired at "+stayEnd) {
		t.Fatalf("after the stay: %+v", d)
	}
	w.now = time.Date(2026, 2, 28, 9, 0, 0, 0, time.UTC)
	if d := check(t, w, anest, "Observation", "TREAT"); d.Decision != "deny" || !strings.Contains(d.Reason, "not valid before") {
		t.Fatalf("before the stay: %+v", d)
	}
}

func TestConsentCheckRejectsBadInput(t *testing.T) {
	w, _, _ := consentWorld(t)
	c := newConsent(testConfig)
	cases := []struct{ patient, custodian, grantee, typ, purpose, msg string }{
		{"Jane", "HospitalMSP", "ClinicMSP", "Observation", "TREAT", "pseudonym"},
		{patientA, "HospitalMSP", "nobody", "Observation", "TREAT", "grantee"},
		{patientA, "HospitalMSP", "ClinicMSP", "obs", "TREAT", "resource type"},
		{patientA, "HospitalMSP", "ClinicMSP", "Observation", "FUN", "purpose"},
		{patientA, "hospital", "ClinicMSP", "Observation", "TREAT", "custodian"},
		{patientA, "InsurerMSP", "ClinicMSP", "Observation", "TREAT", "not a provider"},
		{patientA, "NowhereMSP", "ClinicMSP", "Observation", "TREAT", "not a provider"},
	}
	for _, tc := range cases {
		_, err := call(w, client(t, "ClinicMSP"), c, nil, func(ctx contractapi.TransactionContextInterface) (*Decision, error) {
			return c.Check(ctx, tc.patient, tc.custodian, tc.grantee, tc.typ, tc.purpose)
		})
		wantErr(t, err, CodeInvalid, tc.msg)
	}
}

// TestConsentAttacks replays what an org holding ordinary member credentials, or a patient's own certificate,
// tried against the consent model. The fixture: HospitalMSP holds patientA and patientB; patientA's own identity
// (a HospitalMSP-issued certificate) is confirmed at the hospital; the hospital recorded c-hosp (InsurerMSP, payment)
// with the patient's signed document, and the patient signed c-pat (a practitioner, treatment).
func TestConsentAttacks(t *testing.T) {
	hospital, clinic := client(t, "HospitalMSP"), client(t, "ClinicMSP")
	patient := patientCert(t, "HospitalMSP", "patient-app")
	mallory := patientCert(t, "ClinicMSP", "mallory")
	fixture := func(t *testing.T) *world {
		w := newWorld("providers")
		_, err := register(t, w, hospital, entry(patientA, "Patient", "p1", 1, digest1), entry(patientB, "Patient", "p2", 1, digest1))
		mustOK(t, err)
		mustOK(t, registerIdentity(w, hospital, patientA, patient))
		mustOK(t, confirmIdentity(w, patient, patientA))
		_, err = doGrant(t, w, hospital, grant("c-hosp", "InsurerMSP", []string{"*"}, "HPAYMT", "2026-03-01T00:00:00Z", ""))
		mustOK(t, err)
		g := grant("c-pat", "practitioner:npi|1111111111", []string{"*"}, "TREAT", "2026-03-01T00:00:00Z", "")
		g.DocumentDigest = ""
		_, err = doGrant(t, w, patient, g)
		mustOK(t, err)
		return w
	}
	dummy := func(t *testing.T, w *world) { // the clinic makes itself a custodian of patientA
		_, err := register(t, w, clinic, entry(patientA, "Observation", "dummy", 1, digest2))
		mustOK(t, err)
	}
	selfGrant := func(id string) Grant { // a random document digest: the clinic holds no document
		return grant(id, "ClinicMSP", []string{"*"}, "TREAT", "2026-03-01T00:00:00Z", "")
	}
	hospitalDenies := func(t *testing.T, w *world) {
		t.Helper()
		e, err := access(t, w, hospital, accessReq(patientA, "ClinicMSP", Everything, "TREAT"))
		mustOK(t, err)
		if e.Decision != "deny" {
			t.Fatalf("the hospital serves the clinic: %+v", e)
		}
		if d := checkAt(t, w, "HospitalMSP", "ClinicMSP", "Observation", "TREAT"); d.Decision != "deny" {
			t.Fatalf("Check at the hospital: %+v", d)
		}
	}
	hospitalBindingIntact := func(t *testing.T, w *world) {
		t.Helper()
		if pid := identities(t, w, patientA)["HospitalMSP"]; pid.Fingerprint != patient.fingerprint() || pid.Pending != "" {
			t.Fatalf("the hospital's binding changed: %+v", pid)
		}
	}
	consentActive := func(id string) func(t *testing.T, w *world) {
		return func(t *testing.T, w *world) {
			t.Helper()
			c := newConsent(testConfig)
			rec, err := call(w, clinic, c, nil, func(ctx contractapi.TransactionContextInterface) (*ConsentRecord, error) {
				return c.Get(ctx, ref(id))
			})
			mustOK(t, err)
			if rec.Status != "active" {
				t.Fatalf("%s is %s", id, rec.Status)
			}
		}
	}
	c := newConsent(testConfig)
	runAttacks(t, fixture, []attack{
		{
			name: "dummy custodian grants itself access and asks the real custodian",
			prep: dummy,
			move: func(t *testing.T, w *world) error { _, err := doGrant(t, w, clinic, selfGrant("c-self")); return err },
			then: func(t *testing.T, w *world) {
				hospitalDenies(t, w)
				if d := checkAt(t, w, "ClinicMSP", "ClinicMSP", "Observation", "TREAT"); d.Decision != "permit" {
					t.Fatalf("the clinic's grant does open the clinic's own dummy record: %+v", d)
				}
			},
		},
		{
			name: "dummy custodian binds an identity it controls and grants as the patient",
			prep: func(t *testing.T, w *world) {
				dummy(t, w)
				mustOK(t, registerIdentity(w, clinic, patientA, mallory))
				mustOK(t, confirmIdentity(w, mallory, patientA))
			},
			move: func(t *testing.T, w *world) error {
				g := selfGrant("c-mallory")
				g.DocumentDigest = ""
				rec, err := doGrant(t, w, mallory, g)
				if err == nil && rec.GrantedVia != ViaPatient {
					t.Fatalf("mallory's grant %+v", rec)
				}
				return err
			},
			then: func(t *testing.T, w *world) { hospitalDenies(t, w); hospitalBindingIntact(t, w) },
		},
		{
			name: "dummy custodian overwrites the identity the real custodian registered",
			prep: dummy,
			move: func(t *testing.T, w *world) error { return registerIdentity(w, clinic, patientA, mallory) },
			then: func(t *testing.T, w *world) {
				hospitalBindingIntact(t, w)
				if pid := identities(t, w, patientA)["ClinicMSP"]; pid.Pending != mallory.fingerprint() {
					t.Fatalf("the clinic's own binding: %+v", pid)
				}
			},
		},
		{
			name: "the real custodian replaces a confirmed identity without recovery",
			move: func(t *testing.T, w *world) error { return registerIdentity(w, hospital, patientA, mallory) },
			code: CodeConflict, msg: "confirmed to another certificate",
			then: hospitalBindingIntact,
		},
		{
			name: "dummy custodian runs the recovery path",
			prep: dummy,
			move: func(t *testing.T, w *world) error {
				return do(w, clinic, c, func(ctx contractapi.TransactionContextInterface) (*PatientIdentity, error) {
					return c.RecoverPatientIdentity(ctx, patientA, mallory.pem(), digest2)
				})
			},
			code: CodeNotFound, msg: "ClinicMSP has no binding",
			then: hospitalBindingIntact,
		},
		{
			name: "an org without the patient's records runs the recovery path",
			move: func(t *testing.T, w *world) error {
				return do(w, clinic, c, func(ctx contractapi.TransactionContextInterface) (*PatientIdentity, error) {
					return c.RecoverPatientIdentity(ctx, patientA, mallory.pem(), digest2)
				})
			},
			code: CodeForbidden, msg: "holds no records",
		},
		{
			name: "an org rotates the patient's identity to its own certificate",
			move: func(t *testing.T, w *world) error {
				return do(w, hospital, c, func(ctx contractapi.TransactionContextInterface) (*IdentityChange, error) {
					return c.RotatePatientIdentity(ctx, patientA, mallory.pem())
				})
			},
			code: CodeForbidden, msg: "not this patient's confirmed identity",
		},
		{
			name: "a stranger confirms an identity proposed for someone else",
			prep: func(t *testing.T, w *world) { mustOK(t, registerIdentity(w, hospital, patientB, hospital2(t))) },
			move: func(t *testing.T, w *world) error { return confirmIdentity(w, mallory, patientB) },
			code: CodeForbidden, msg: "waiting for the caller's certificate",
		},
		{
			name: "dummy custodian proposes the real custodian's gateway certificate as a patient identity",
			prep: dummy,
			move: func(t *testing.T, w *world) error { return registerIdentity(w, clinic, patientA, hospital) },
			code: CodeInvalid, msg: "not a patient certificate",
			then: func(t *testing.T, w *world) {
				_, err := register(t, w, hospital, entry(patientA, "Observation", "o1", 1, digest1))
				mustOK(t, err)
			},
		},
		{
			name: "the patient's certificate records a custodian consent for another patient",
			move: func(t *testing.T, w *world) error {
				g := selfGrant("c-forged")
				g.Patient = patientB
				_, err := doGrant(t, w, patient, g)
				return err
			},
			code: CodeForbidden, msg: "another patient's own identity",
		},
		{
			name: "the patient's certificate revokes a grant as the custodian of another patient",
			prep: func(t *testing.T, w *world) {
				g := grant("c-b", "ClinicMSP", []string{"*"}, "TREAT", "2026-03-01T00:00:00Z", "")
				g.Patient = patientB
				_, err := doGrant(t, w, hospital, g)
				mustOK(t, err)
			},
			move: func(t *testing.T, w *world) error { _, err := doRevoke(w, patient, "c-b", digest1); return err },
			code: CodeForbidden, msg: "patient's own identity",
			then: consentActive("c-b"),
		},
		{
			name: "another org revokes the patient's own grant",
			move: func(t *testing.T, w *world) error { _, err := doRevoke(w, clinic, "c-pat", digest1); return err },
			code: CodeForbidden, msg: "only the certificate that signed it",
			then: consentActive("c-pat"),
		},
		{
			name: "the custodian revokes the patient's own grant",
			move: func(t *testing.T, w *world) error { _, err := doRevoke(w, hospital, "c-pat", digest1); return err },
			code: CodeForbidden, msg: "only the certificate that signed it",
			then: consentActive("c-pat"),
		},
		{
			name: "dummy custodian revokes the real custodian's grant with a document",
			prep: dummy,
			move: func(t *testing.T, w *world) error { _, err := doRevoke(w, clinic, "c-hosp", digest1); return err },
			code: CodeForbidden, msg: "recorded by HospitalMSP",
			then: consentActive("c-hosp"),
		},
		{
			name: "an identity the dummy custodian bound revokes the real custodian's grant",
			prep: func(t *testing.T, w *world) {
				dummy(t, w)
				mustOK(t, registerIdentity(w, clinic, patientA, mallory))
				mustOK(t, confirmIdentity(w, mallory, patientA))
			},
			move: func(t *testing.T, w *world) error { _, err := doRevoke(w, mallory, "c-hosp", ""); return err },
			code: CodeForbidden, msg: "recorded by HospitalMSP",
			then: consentActive("c-hosp"),
		},
		{
			name: "the custodian revokes its grant without the document",
			move: func(t *testing.T, w *world) error { _, err := doRevoke(w, hospital, "c-hosp", ""); return err },
			code: CodeForbidden, msg: "signed revocation document",
			then: consentActive("c-hosp"),
		},
		{
			name: "an insurer grants itself access",
			move: func(t *testing.T, w *world) error {
				_, err := doGrant(t, w, client(t, "InsurerMSP"), grant("c-ins", "InsurerMSP", []string{"*"}, "HPAYMT", "2026-03-01T00:00:00Z", ""))
				return err
			},
			code: CodeForbidden, msg: "neither the patient nor a custodian",
		},
		{
			name: "peer identity grants",
			move: func(t *testing.T, w *world) error {
				_, err := doGrant(t, w, peerOf(t, "HospitalMSP"), selfGrant("c-peer"))
				return err
			},
			code: CodeForbidden, msg: "may not submit",
		},
		{
			name: "peer identity revokes",
			move: func(t *testing.T, w *world) error {
				_, err := doRevoke(w, peerOf(t, "HospitalMSP"), "c-hosp", digest1)
				return err
			},
			code: CodeForbidden, msg: "may not submit",
		},
		{
			name: "peer identity registers a patient identity",
			move: func(t *testing.T, w *world) error {
				return registerIdentity(w, peerOf(t, "HospitalMSP"), patientB, mallory)
			},
			code: CodeForbidden, msg: "may not submit",
		},
		{
			name: "peer identity confirms a patient identity",
			move: func(t *testing.T, w *world) error { return confirmIdentity(w, peerOf(t, "HospitalMSP"), patientA) },
			code: CodeForbidden, msg: "may not submit",
		},
		{
			name: "peer identity rotates a patient identity",
			move: func(t *testing.T, w *world) error {
				return do(w, peerOf(t, "HospitalMSP"), c, func(ctx contractapi.TransactionContextInterface) (*IdentityChange, error) {
					return c.RotatePatientIdentity(ctx, patientA, mallory.pem())
				})
			},
			code: CodeForbidden, msg: "may not submit",
		},
		{
			name: "peer identity recovers a patient identity",
			move: func(t *testing.T, w *world) error {
				return do(w, peerOf(t, "HospitalMSP"), c, func(ctx contractapi.TransactionContextInterface) (*PatientIdentity, error) {
					return c.RecoverPatientIdentity(ctx, patientA, mallory.pem(), digest2)
				})
			},
			code: CodeForbidden, msg: "may not submit",
		},
	})
}

func hospital2(t *testing.T) actor { return patientCert(t, "HospitalMSP", "patient-b-app") }
