package contracts

import (
	"testing"

	"github.com/hyperledger/fabric-contract-api-go/v2/contractapi"
)

func TestTrialsLifecycle(t *testing.T) {
	w, hospital, patient := consentWorld(t)
	clinic := client(t, "ClinicMSP")
	tr := newTrials(testConfig)
	registerStudy := func(a actor, id, digest string) error {
		_, err := call(w, a, tr, nil, func(ctx contractapi.TransactionContextInterface) (*Study, error) {
			return tr.RegisterStudy(ctx, id, digest)
		})
		return err
	}
	enrol := func(a actor, study, subject, consent string) error {
		_, err := call(w, a, tr, nil, func(ctx contractapi.TransactionContextInterface) (*Enrolment, error) {
			return tr.Enrol(ctx, study, subject, ref(consent))
		})
		return err
	}
	anchor := func(a actor, study, version, digest string) error {
		_, err := call(w, a, tr, nil, func(ctx contractapi.TransactionContextInterface) (*Dataset, error) {
			return tr.AnchorDataset(ctx, study, version, digest)
		})
		return err
	}
	verify := func(study, version, digest string) (*DatasetCheck, error) {
		return call(w, clinic, tr, nil, func(ctx contractapi.TransactionContextInterface) (*DatasetCheck, error) {
			return tr.VerifyDataset(ctx, study, version, digest)
		})
	}

	// Enrolment needs a registered study.
	wantErr(t, enrol(hospital, "study-1", patientA, "c-research"), CodeNotFound, "before enrolment")
	wantErr(t, registerStudy(hospital, "study-1", "short"), CodeInvalid, "protocolDigest")
	mustOK(t, registerStudy(hospital, "study-1", digest1))
	wantErr(t, registerStudy(clinic, "study-1", digest2), CodeConflict, "cannot change")

	// The subject's research consent to the sponsor.
	_, err := doGrant(t, w, patient, grant("c-treat", "HospitalMSP", []string{"*"}, "TREAT", "2026-01-01T00:00:00Z", ""))
	mustOK(t, err)
	wantErr(t, enrol(hospital, "study-1", patientA, "c-treat"), CodeForbidden, "purpose")
	wantErr(t, enrol(hospital, "study-1", patientA, "missing"), CodeNotFound, "does not exist")
	_, err = register(t, w, hospital, entry(patientB, "Patient", "p2", 1, digest1))
	mustOK(t, err)
	wantErr(t, enrol(hospital, "study-1", patientB, "c-treat"), CodeForbidden, "not the subject's consent")
	_, err = doGrant(t, w, patient, grant("c-research", "HospitalMSP", []string{"*"}, "HRESCH", "2026-01-01T00:00:00Z", ""))
	mustOK(t, err)
	wantErr(t, enrol(client(t, "InsurerMSP"), "study-1", patientA, "c-research"), CodeForbidden, "only provider")
	wantErr(t, enrol(clinic, "study-1", patientA, "c-research"), CodeForbidden, "holds no records")
	mustOK(t, enrol(hospital, "study-1", patientA, "c-research"))
	if ev := lastEvent(t, w); ev.Name != "Trials.SubjectEnrolled" {
		t.Fatalf("event %s", ev.Name)
	}
	wantErr(t, enrol(hospital, "study-1", patientA, "c-research"), CodeConflict, "enrolled")

	// Datasets: the sponsor anchors each version once; anyone verifies.
	wantErr(t, anchor(clinic, "study-1", "v1", digest1), CodeForbidden, "only the sponsor")
	wantErr(t, anchor(hospital, "study-1", "v 1", digest1), CodeInvalid, "version")
	mustOK(t, anchor(hospital, "study-1", "v1", digest1))
	wantErr(t, anchor(hospital, "study-1", "v1", digest2), CodeConflict, "anchored already")
	ok, err := verify("study-1", "v1", digest1)
	mustOK(t, err)
	tampered, err := verify("study-1", "v1", digest2)
	mustOK(t, err)
	if !ok.Match || tampered.Match || tampered.AnchoredDigest != digest1 {
		t.Fatalf("verify: %+v / %+v", ok, tampered)
	}
	_, err = verify("study-1", "v2", digest1)
	wantErr(t, err, CodeNotFound, "not anchored")

	ens, err := call(w, clinic, tr, nil, func(ctx contractapi.TransactionContextInterface) ([]Enrolment, error) {
		return tr.Enrolments(ctx, "study-1")
	})
	mustOK(t, err)
	if len(ens) != 1 || ens[0].ConsentID != ref("c-research") || ens[0].EnrolledBy != "HospitalMSP" {
		t.Fatalf("enrolments %+v", ens)
	}
}

// TestTrialsAttacks: HospitalMSP holds patientA (whose identity is confirmed there) and sponsors study-1; the patient
// signed c-research, a research consent to the hospital.
func TestTrialsAttacks(t *testing.T) {
	hospital, clinic := client(t, "HospitalMSP"), client(t, "ClinicMSP")
	var patient actor
	tr := newTrials(testConfig)
	fixture := func(t *testing.T) *world {
		w, _, p := consentWorld(t)
		patient = p
		mustOK(t, do(w, hospital, tr, func(ctx contractapi.TransactionContextInterface) (*Study, error) {
			return tr.RegisterStudy(ctx, "study-1", digest1)
		}))
		g := grant("c-research", "HospitalMSP", []string{"*"}, "HRESCH", "2026-01-01T00:00:00Z", "")
		g.DocumentDigest = ""
		_, err := doGrant(t, w, patient, g)
		mustOK(t, err)
		return w
	}
	registerStudy := func(a func(t *testing.T) actor) func(t *testing.T, w *world) error {
		return func(t *testing.T, w *world) error {
			return do(w, a(t), tr, func(ctx contractapi.TransactionContextInterface) (*Study, error) {
				return tr.RegisterStudy(ctx, "study-2", digest2)
			})
		}
	}
	enrol := func(a func(t *testing.T) actor, consent string) func(t *testing.T, w *world) error {
		return func(t *testing.T, w *world) error {
			return do(w, a(t), tr, func(ctx contractapi.TransactionContextInterface) (*Enrolment, error) {
				return tr.Enrol(ctx, "study-1", patientA, ref(consent))
			})
		}
	}
	anchor := func(a func(t *testing.T) actor) func(t *testing.T, w *world) error {
		return func(t *testing.T, w *world) error {
			return do(w, a(t), tr, func(ctx contractapi.TransactionContextInterface) (*Dataset, error) {
				return tr.AnchorDataset(ctx, "study-1", "v1", digest1)
			})
		}
	}
	as := func(msp, role string) func(t *testing.T) actor {
		return func(t *testing.T) actor { return newActor(t, msp, role, "someone") }
	}
	thePatient := func(*testing.T) actor { return patient }
	clinicIsDummyCustodian := func(t *testing.T, w *world) {
		_, err := register(t, w, clinic, entry(patientA, "Observation", "dummy", 1, digest2))
		mustOK(t, err)
	}
	runAttacks(t, fixture, []attack{
		{name: "peer identity registers a study", move: registerStudy(as("HospitalMSP", "peer")), code: CodeForbidden, msg: "may not submit"},
		{name: "insurer registers a study", move: registerStudy(as("InsurerMSP", "client")), code: CodeForbidden, msg: "only provider or manufacturer orgs"},
		{name: "org outside the consortium registers a study", move: registerStudy(as("NowhereMSP", "client")), code: CodeForbidden, msg: "only provider or manufacturer"},
		{name: "the patient's certificate registers a study in its org's name", move: registerStudy(thePatient), code: CodeForbidden, msg: "patient's own identity"},
		{name: "another org re-registers the study with its protocol", move: func(t *testing.T, w *world) error {
			return do(w, clinic, tr, func(ctx contractapi.TransactionContextInterface) (*Study, error) {
				return tr.RegisterStudy(ctx, "study-1", digest2)
			})
		}, code: CodeConflict, msg: "cannot change"},
		{name: "peer identity enrols", move: enrol(as("HospitalMSP", "peer"), "c-research"), code: CodeForbidden, msg: "may not submit"},
		{name: "insurer enrols", move: enrol(as("InsurerMSP", "client"), "c-research"), code: CodeForbidden, msg: "only provider orgs"},
		{name: "org without the subject's records enrols", move: enrol(as("ClinicMSP", "client"), "c-research"), code: CodeForbidden, msg: "holds no records"},
		{name: "the patient's certificate enrols in its org's name", move: enrol(thePatient, "c-research"), code: CodeForbidden, msg: "patient's own identity"},
		{
			name: "dummy custodian enrols under the consent the patient gave the real custodian",
			prep: clinicIsDummyCustodian, move: enrol(as("ClinicMSP", "client"), "c-research"),
			code: CodeForbidden, msg: "does not open ClinicMSP's records",
		},
		{
			name: "sponsor enrols under a consent a dummy custodian recorded",
			prep: func(t *testing.T, w *world) {
				clinicIsDummyCustodian(t, w)
				_, err := doGrant(t, w, clinic, grant("c-forged", "HospitalMSP", []string{"*"}, "HRESCH", "2026-01-01T00:00:00Z", ""))
				mustOK(t, err)
			},
			move: enrol(as("HospitalMSP", "client"), "c-forged"),
			code: CodeForbidden, msg: "recorded by ClinicMSP; it does not open HospitalMSP's records",
		},
		{name: "peer identity anchors a dataset", move: anchor(as("HospitalMSP", "peer")), code: CodeForbidden, msg: "may not submit"},
		{name: "another org anchors the sponsor's dataset", move: anchor(as("ClinicMSP", "client")), code: CodeForbidden, msg: "only the sponsor"},
		{name: "the patient's certificate anchors in its org's name", move: anchor(thePatient), code: CodeForbidden, msg: "patient's own identity"},
	})
}
