package contracts

import (
	"testing"

	"github.com/hyperledger/fabric-contract-api-go/v2/contractapi"
)

// Patient certificates: a client certificate marked with OU patient speaks for its patient and never for the org
// whose CA issued it, on every channel (the mark is in the certificate, the bindings only on providers).

// patientVariants are certificates Fabric accepts as a client of the org (one NodeOU) or as its admin, marked as a
// patient's; the contracts refuse each of them every org action.
var patientVariants = []struct {
	name string
	ous  []string
}{
	{"client marked patient", []string{"client", PatientOU}},
	{"mark before the NodeOU", []string{PatientOU, "client"}},
	{"admin marked patient", []string{"admin", PatientOU}},
}

// TestPatientCertificatesDoNotActForTheirOrg runs every write of every contract, on its own channel, with a patient
// certificate of the org allowed to make it (not bound to any patient: on claims and pharma no binding is in the
// world state), and the reads that show an org's private data or its own listing: every one is refused with
// FORBIDDEN before anything is written, and the committed state does not change. TestWritesCheckTheRole runs the
// same calls with the org's ordinary clients and admins, which succeed.
func TestPatientCertificatesDoNotActForTheirOrg(t *testing.T) {
	hospital, insurer := client(t, "HospitalMSP"), client(t, "InsurerMSP")
	cl := newClaims(testConfig)
	adjudicated := func(t *testing.T, w *world) {
		_, err := submit(t, w, hospital, submission("cl-1"), detail("cl-1"))
		mustOK(t, err)
		_, err = adjudicate(t, w, insurer, "cl-1", approveAll(0))
		mustOK(t, err)
	}
	orgReads := []write{
		{"Claims.Lines", "claims", "HospitalMSP", adjudicated, func(t *testing.T, w *world, a actor) error {
			return do(w, a, cl, func(ctx contractapi.TransactionContextInterface) (*ClaimDetail, error) {
				return cl.Lines(ctx, ref("cl-1"))
			})
		}},
		{"Claims.AdjudicationOf", "claims", "InsurerMSP", adjudicated, func(t *testing.T, w *world, a actor) error {
			return do(w, a, cl, func(ctx contractapi.TransactionContextInterface) (*Adjudication, error) {
				return cl.AdjudicationOf(ctx, ref("cl-1"))
			})
		}},
		{"Claims.DueForPurge", "claims", "InsurerMSP", adjudicated, func(t *testing.T, w *world, a actor) error {
			return do(w, a, cl, func(ctx contractapi.TransactionContextInterface) (*ClaimPage, error) {
				return cl.DueForPurge(ctx, "2027-01-01T00:00:00Z", 10, "")
			})
		}},
	}
	for _, wr := range append(writes(t), orgReads...) {
		for _, v := range patientVariants {
			t.Run(wr.name+"/"+v.name, func(t *testing.T) {
				w := newWorld(wr.channel)
				if wr.prep != nil {
					wr.prep(t, w)
				}
				before := snapshot(w)
				err := wr.move(t, w, newActorOUs(t, wr.org, "patient-app", v.ous...))
				refused(t, w, err, CodeForbidden, "patient's own identity")
				if !sameState(before, snapshot(w)) {
					t.Fatal("the committed state changed after a refusal")
				}
			})
		}
	}
}

// TestPatientCertificatesActForTheirPatient: with patientA's certificate confirmed at the hospital, the patient's
// own actions work with it, and what it records is recorded as the patient's.
func TestPatientCertificatesActForTheirPatient(t *testing.T) {
	c := newConsent(testConfig)
	own := func(id string) Grant {
		g := grant(id, "practitioner:npi|1111111111", []string{"*"}, "TREAT", "2026-03-01T00:00:00Z", "")
		g.DocumentDigest = ""
		return g
	}
	cases := []struct {
		name string
		prep func(t *testing.T, w *world, hospital actor)
		move func(t *testing.T, w *world, patient actor) (string, error) // what was recorded, in a word
		want string
	}{
		{"grants as the patient", nil, func(t *testing.T, w *world, p actor) (string, error) {
			rec, err := doGrant(t, w, p, own("g1"))
			if err != nil {
				return "", err
			}
			return rec.GrantedVia, nil
		}, ViaPatient},
		{"grants with a document digest, still as the patient", nil, func(t *testing.T, w *world, p actor) (string, error) {
			rec, err := doGrant(t, w, p, grant("g1", "ClinicMSP", []string{"*"}, "TREAT", "2026-03-01T00:00:00Z", ""))
			if err != nil {
				return "", err
			}
			return rec.GrantedVia, nil
		}, ViaPatient},
		{"revokes its own grant", nil, func(t *testing.T, w *world, p actor) (string, error) {
			if _, err := doGrant(t, w, p, own("g1")); err != nil {
				return "", err
			}
			rec, err := doRevoke(w, p, "g1", "")
			if err != nil {
				return "", err
			}
			return rec.RevokedVia, nil
		}, ViaPatient},
		{"revokes the custodian's grant", func(t *testing.T, w *world, hospital actor) {
			_, err := doGrant(t, w, hospital, grant("c1", "InsurerMSP", []string{"*"}, "HPAYMT", "2026-03-01T00:00:00Z", ""))
			mustOK(t, err)
		}, func(t *testing.T, w *world, p actor) (string, error) {
			rec, err := doRevoke(w, p, "c1", "")
			if err != nil {
				return "", err
			}
			return rec.RevokedVia, nil
		}, ViaPatient},
		{"rotates to a new patient certificate, which confirms", nil, func(t *testing.T, w *world, p actor) (string, error) {
			next := patientCert(t, "HospitalMSP", "patient-next")
			if err := do(w, p, c, func(ctx contractapi.TransactionContextInterface) (*IdentityChange, error) {
				return c.RotatePatientIdentity(ctx, patientA, next.pem())
			}); err != nil {
				return "", err
			}
			if err := confirmIdentity(w, next, patientA); err != nil {
				return "", err
			}
			if identities(t, w, patientA)["HospitalMSP"].Fingerprint != next.fingerprint() {
				return "", nil
			}
			return "rotated", nil
		}, "rotated"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w, hospital, patient := consentWorld(t)
			if tc.prep != nil {
				tc.prep(t, w, hospital)
			}
			got, err := tc.move(t, w, patient)
			mustOK(t, err)
			if got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// TestCustodiansDoNotActWithPatientCertificates: a custodian's consent steps (a grant with the signed document, a
// revocation of its own grant) are refused to a patient certificate of that custodian that is not confirmed for
// the patient, pending or not, and to the patient certificate confirmed for another patient.
func TestCustodiansDoNotActWithPatientCertificates(t *testing.T) {
	pending := patientCert(t, "HospitalMSP", "patient-pending")
	stranger := patientCert(t, "HospitalMSP", "patient-nobody")
	otherPatient := patientCert(t, "HospitalMSP", "patient-b")
	fixture := func(t *testing.T) (*world, actor) {
		w, hospital, patient := consentWorld(t)
		_, err := register(t, w, hospital, entry(patientB, "Patient", "pb", 1, digest1))
		mustOK(t, err)
		mustOK(t, registerIdentity(w, hospital, patientB, otherPatient))
		mustOK(t, confirmIdentity(w, otherPatient, patientB))
		c := newConsent(testConfig)
		mustOK(t, do(w, patient, c, func(ctx contractapi.TransactionContextInterface) (*IdentityChange, error) {
			return c.RotatePatientIdentity(ctx, patientA, pending.pem()) // pending until it confirms
		}))
		_, err = doGrant(t, w, hospital, grant("c-hosp", "InsurerMSP", []string{"*"}, "HPAYMT", "2026-03-01T00:00:00Z", ""))
		mustOK(t, err)
		return w, hospital
	}
	cases := []struct {
		name string
		who  actor
		msg  string
	}{
		{"a patient certificate pending for the patient", pending, "patient's own identity"},
		{"a patient certificate bound to nobody", stranger, "patient's own identity"},
		{"another patient's confirmed certificate", otherPatient, "another patient's own identity"},
	}
	for _, tc := range cases {
		t.Run(tc.name+"/grant", func(t *testing.T) {
			w, _ := fixture(t)
			_, err := doGrant(t, w, tc.who, grant("c-new", "ClinicMSP", []string{"*"}, "TREAT", "2026-03-01T00:00:00Z", ""))
			refused(t, w, err, CodeForbidden, tc.msg)
		})
		t.Run(tc.name+"/revoke", func(t *testing.T) {
			w, _ := fixture(t)
			_, err := doRevoke(w, tc.who, "c-hosp", digest1)
			refused(t, w, err, CodeForbidden, "patient's own identity")
		})
	}
}

// TestPatientIdentitiesAreMarkedCertificates: RegisterPatientIdentity, RotatePatientIdentity and
// RecoverPatientIdentity take only a client certificate marked with OU patient.
func TestPatientIdentitiesAreMarkedCertificates(t *testing.T) {
	certs := []struct {
		name string
		ous  []string
		ok   bool
	}{
		{"client marked patient", []string{"client", PatientOU}, true},
		{"mark before the NodeOU", []string{PatientOU, "client"}, true},
		{"client with other OUs too", []string{"client", "ward-7", PatientOU}, true},
		{"client without the mark", []string{"client"}, false},
		{"admin marked patient", []string{"admin", PatientOU}, false},
		{"peer marked patient", []string{"peer", PatientOU}, false},
		{"orderer marked patient", []string{"orderer", PatientOU}, false},
		{"the mark without a NodeOU", []string{PatientOU}, false},
		{"another spelling", []string{"client", "Patient"}, false},
		{"a longer OU", []string{"client", "patients"}, false},
		{"no OU", nil, false},
	}
	c := newConsent(testConfig)
	paths := []struct {
		name string
		move func(w *world, hospital, patient, cert actor) error
	}{
		{"register", func(w *world, hospital, _, cert actor) error {
			return registerIdentity(w, hospital, patientB, cert)
		}},
		{"rotate", func(w *world, _, patient, cert actor) error {
			return do(w, patient, c, func(ctx contractapi.TransactionContextInterface) (*IdentityChange, error) {
				return c.RotatePatientIdentity(ctx, patientA, cert.pem())
			})
		}},
		{"recover", func(w *world, hospital, _, cert actor) error {
			return do(w, hospital, c, func(ctx contractapi.TransactionContextInterface) (*PatientIdentity, error) {
				return c.RecoverPatientIdentity(ctx, patientA, cert.pem(), digest2)
			})
		}},
	}
	for _, p := range paths {
		for _, tc := range certs {
			t.Run(p.name+"/"+tc.name, func(t *testing.T) {
				w, hospital, patient := consentWorld(t)
				_, err := register(t, w, hospital, entry(patientB, "Patient", "pb", 1, digest1))
				mustOK(t, err)
				cert := newActorOUs(t, "HospitalMSP", "patient-cert", tc.ous...)
				err = p.move(w, hospital, patient, cert)
				if !tc.ok {
					refused(t, w, err, CodeInvalid, "not a patient certificate")
					return
				}
				mustOK(t, err)
				target := patientA
				if p.name == "register" {
					target = patientB
				}
				mustOK(t, confirmIdentity(w, cert, target))
				if identities(t, w, target)["HospitalMSP"].Fingerprint != cert.fingerprint() {
					t.Fatalf("the binding did not take the certificate: %+v", identities(t, w, target))
				}
			})
		}
	}
}

// writeBinding stores a binding as it was made before patient certificates were marked (not through the contract):
// a pending or confirmed unmarked certificate.
func writeBinding(t *testing.T, w *world, custodian actor, patient string, cert actor, confirmed bool) {
	t.Helper()
	pid := &PatientIdentity{Patient: patient, RegisteredBy: custodian.msp, PendingVia: ViaRegistration, Version: 1}
	if confirmed {
		pid.Fingerprint, pid.PendingVia = cert.fingerprint(), ""
	} else {
		pid.Pending = cert.fingerprint()
	}
	c := newConsent(testConfig)
	mustOK(t, do(w, custodian, c, func(ctx contractapi.TransactionContextInterface) (any, error) {
		return nil, saveBinding(ctx, pid, "")
	}))
}

// TestOnlyPatientCertificatesConfirm: a binding proposed before the mark existed, to an unmarked certificate, is
// never confirmed by it; so every confirmed identity made from now on is marked.
func TestOnlyPatientCertificatesConfirm(t *testing.T) {
	cases := []struct {
		name string
		ous  []string
		ok   bool
	}{
		{"client marked patient", []string{"client", PatientOU}, true},
		{"unmarked client", []string{"client"}, false},
		{"admin marked patient", []string{"admin", PatientOU}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld("providers")
			hospital := client(t, "HospitalMSP")
			_, err := register(t, w, hospital, entry(patientA, "Patient", "p1", 1, digest1))
			mustOK(t, err)
			cert := newActorOUs(t, "HospitalMSP", "legacy", tc.ous...)
			writeBinding(t, w, hospital, patientA, cert, false)
			err = confirmIdentity(w, cert, patientA)
			if !tc.ok {
				refused(t, w, err, CodeForbidden, "only a patient certificate")
				if pid := identities(t, w, patientA)["HospitalMSP"]; pid.Fingerprint != "" || pid.Pending != cert.fingerprint() {
					t.Fatalf("binding changed: %+v", pid)
				}
				return
			}
			mustOK(t, err)
		})
	}
}

// TestAnUnmarkedConfirmedIdentity: a binding confirmed before the mark existed still keeps its certificate from
// acting for the org on providers (by the binding), and the patient moves to a marked certificate by rotation.
func TestAnUnmarkedConfirmedIdentity(t *testing.T) {
	w := newWorld("providers")
	hospital := client(t, "HospitalMSP")
	legacy := newActor(t, "HospitalMSP", "client", "legacy-patient-app")
	_, err := register(t, w, hospital, entry(patientA, "Patient", "p1", 1, digest1))
	mustOK(t, err)
	writeBinding(t, w, hospital, patientA, legacy, true)

	_, err = register(t, w, legacy, entry(patientA, "Observation", "o1", 1, digest1))
	refused(t, w, err, CodeForbidden, "patient's own identity")
	g := grant("g1", "ClinicMSP", []string{"*"}, "TREAT", "2026-03-01T00:00:00Z", "")
	g.DocumentDigest = ""
	rec, err := doGrant(t, w, legacy, g)
	mustOK(t, err)
	if rec.GrantedVia != ViaPatient {
		t.Fatalf("grant %+v", rec)
	}

	c := newConsent(testConfig)
	marked := patientCert(t, "HospitalMSP", "patient-app")
	mustOK(t, do(w, legacy, c, func(ctx contractapi.TransactionContextInterface) (*IdentityChange, error) {
		return c.RotatePatientIdentity(ctx, patientA, marked.pem())
	}))
	mustOK(t, confirmIdentity(w, marked, patientA))
	if pid := identities(t, w, patientA)["HospitalMSP"]; pid.Fingerprint != marked.fingerprint() {
		t.Fatalf("after rotation %+v", pid)
	}
}
