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
			return tr.Enrol(ctx, study, subject, consent)
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
	wantErr(t, enrol(hospital, "study-1", patientB, "c-treat"), CodeForbidden, "not the subject's consent")
	_, err = doGrant(t, w, patient, grant("c-research", "HospitalMSP", []string{"*"}, "HRESCH", "2026-01-01T00:00:00Z", ""))
	mustOK(t, err)
	wantErr(t, enrol(client(t, "InsurerMSP"), "study-1", patientA, "c-research"), CodeForbidden, "only provider")
	mustOK(t, enrol(clinic, "study-1", patientA, "c-research"))
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
	if len(ens) != 1 || ens[0].ConsentID != "c-research" || ens[0].EnrolledBy != "ClinicMSP" {
		t.Fatalf("enrolments %+v", ens)
	}
}
