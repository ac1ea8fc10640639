package contracts

import (
	"strings"
	"testing"
	"time"

	"github.com/hyperledger/fabric-contract-api-go/v2/contractapi"
)

func grant(id, grantee string, scope []string, purpose, start, end string) Grant {
	return Grant{ConsentID: id, Patient: patientA, Grantee: grantee, Action: "read", Scope: scope, Purpose: purpose,
		Start: start, End: end, DocumentDigest: digest1}
}

// consentWorld has patientA's records at HospitalMSP, and patientA's own identity registered by the hospital.
func consentWorld(t *testing.T) (*world, actor, actor) {
	t.Helper()
	w := newWorld("providers")
	hospital := client(t, "HospitalMSP")
	patient := newActor(t, "HospitalMSP", "client", "patient-app")
	_, err := register(t, w, hospital, entry(patientA, "Patient", "p1", 1, digest1))
	mustOK(t, err)
	c := newConsent(testConfig)
	_, err = call(w, hospital, c, nil, func(ctx contractapi.TransactionContextInterface) (*PatientIdentity, error) {
		return c.RegisterPatientIdentity(ctx, patientA, patient.pem())
	})
	mustOK(t, err)
	return w, hospital, patient
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
		return c.Revoke(ctx, id, doc)
	})
}

func check(t *testing.T, w *world, grantee, typ, purpose string) *Decision {
	t.Helper()
	c := newConsent(testConfig)
	d, err := call(w, client(t, "ClinicMSP"), c, nil, func(ctx contractapi.TransactionContextInterface) (*Decision, error) {
		return c.Check(ctx, patientA, grantee, typ, purpose)
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
			wantErr(t, err, CodeInvalid, tc.msg)
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
		{"patient's own identity, no document", func(t *testing.T, p actor) actor { return p }, "", "", "", "patient"},
		{"custodian with signed document", func(t *testing.T, _ actor) actor { return client(t, "HospitalMSP") }, digest1, "", "", "custodian"},
		{"custodian without document", func(t *testing.T, _ actor) actor { return client(t, "HospitalMSP") }, "", CodeForbidden, "signed consent document", ""},
		{"org without the patient's records", func(t *testing.T, _ actor) actor { return client(t, "ClinicMSP") }, digest1, CodeForbidden, "neither the patient nor a custodian", ""},
		{"a user of an org without the records", func(t *testing.T, _ actor) actor { return newActor(t, "ClinicMSP", "client", "mallory") }, "", CodeForbidden, "neither", ""},
		{"peer identity", func(t *testing.T, _ actor) actor { return newActor(t, "HospitalMSP", "peer", "peer0") }, digest1, CodeForbidden, "may not submit", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w, _, patient := consentWorld(t)
			gg := g
			gg.DocumentDigest = tc.doc
			a := tc.caller(t, patient)
			rec, err := doGrant(t, w, a, gg)
			if tc.code != "" {
				wantErr(t, err, tc.code, tc.msg)
				return
			}
			mustOK(t, err)
			if rec.GrantedVia != tc.wantVia || rec.Status != "active" {
				t.Fatalf("record %+v", rec)
			}
			if ev := lastEvent(t, w); ev.Name != "Consent.Granted" {
				t.Fatalf("event %s", ev.Name)
			}
			_, err = doGrant(t, w, a, gg)
			wantErr(t, err, CodeConflict, "exists already")
			_, err = doRevoke(w, client(t, "ClinicMSP"), "c1", digest1)
			wantErr(t, err, CodeForbidden, "neither")
			_, err = doRevoke(w, a, "c1", tc.doc)
			mustOK(t, err)
			_, err = doRevoke(w, a, "c1", tc.doc)
			wantErr(t, err, CodeConflict, "revoked already")
			_, err = doRevoke(w, a, "nope", tc.doc)
			wantErr(t, err, CodeNotFound, "does not exist")
		})
	}
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
	someone := newActor(t, "HospitalMSP", "client", "p")
	wantErr(t, reg(client(t, "ClinicMSP"), someone.pem()), CodeForbidden, "holds no records")
	wantErr(t, reg(client(t, "InsurerMSP"), someone.pem()), CodeForbidden, "only provider orgs")
	wantErr(t, reg(client(t, "HospitalMSP"), "not a pem"), CodeInvalid, "PEM")
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
		{surgeon, "Condition", "TREAT", "permit", "stay-surgeon permits"},
		{lab, "Specimen", "TREAT", "permit", "stay-lab"},
		{lab, "Condition", "TREAT", "deny", "does not cover Condition"},
		{anest, "Observation", "TREAT", "permit", ""},
		{anest, "Observation", "HPAYMT", "deny", "purpose TREAT, not HPAYMT"},
		{"practitioner:npi|9999999999", "Observation", "TREAT", "deny", "no consent grants"},
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
	cases := []struct{ patient, grantee, typ, purpose, msg string }{
		{"Jane", "ClinicMSP", "Observation", "TREAT", "pseudonym"},
		{patientA, "nobody", "Observation", "TREAT", "grantee"},
		{patientA, "ClinicMSP", "obs", "TREAT", "resource type"},
		{patientA, "ClinicMSP", "Observation", "FUN", "purpose"},
	}
	for _, tc := range cases {
		_, err := call(w, client(t, "ClinicMSP"), c, nil, func(ctx contractapi.TransactionContextInterface) (*Decision, error) {
			return c.Check(ctx, tc.patient, tc.grantee, tc.typ, tc.purpose)
		})
		wantErr(t, err, CodeInvalid, tc.msg)
	}
}
