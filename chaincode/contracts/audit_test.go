package contracts

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/hyperledger/fabric-contract-api-go/v2/contractapi"
)

// Resources of access requests, named by their keys.
var (
	obsO1  = "Observation/" + ref("Observation/o1")
	condC1 = "Condition/" + ref("Condition/c1")
)

func accessReq(patient, accessor, resource, purpose string) AccessRequest {
	return AccessRequest{Patient: patient, Accessor: accessor, Resource: resource, Purpose: purpose}
}

func access(t *testing.T, w *world, a actor, req AccessRequest) (*AuditEntry, error) {
	t.Helper()
	c := newAudit(testConfig)
	return call(w, a, c, nil, func(ctx contractapi.TransactionContextInterface) (*AuditEntry, error) {
		return c.RecordAccess(ctx, mustJSON(t, req))
	})
}

func TestAuditRecordsPermitAndDeny(t *testing.T) {
	w, hospital, patient := consentWorld(t)
	_, err := doGrant(t, w, patient, grant("c-obs", "ClinicMSP", []string{"Observation"}, "TREAT", "2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z"))
	mustOK(t, err)
	cases := []struct {
		name     string
		req      AccessRequest
		decision string
	}{
		{"consented type", accessReq(patientA, "ClinicMSP", obsO1, "TREAT"), "permit"},
		{"other type", accessReq(patientA, "ClinicMSP", condC1, "TREAT"), "deny"},
		{"whole record with an Observation grant: that part only", accessReq(patientA, "ClinicMSP", Everything, "TREAT"), "partial"},
		{"no consent at all", accessReq(patientA, "InsurerMSP", obsO1, "HPAYMT"), "deny"},
	}
	for _, tc := range cases {
		w.now = w.now.Add(time.Minute)
		e, err := access(t, w, hospital, tc.req)
		mustOK(t, err)
		if e.Decision != tc.decision || e.Custodian != "HospitalMSP" {
			t.Fatalf("%s: %+v", tc.name, e)
		}
		if ev := lastEvent(t, w); ev.Name != "Audit.Logged" {
			t.Fatalf("%s: event %s", tc.name, ev.Name)
		}
	}
	_, err = doGrant(t, w, patient, grant("c-all", "ClinicMSP", []string{"*"}, "TREAT", "2026-03-01T00:00:00Z", ""))
	mustOK(t, err)
	w.now = w.now.Add(time.Minute)
	e, err := access(t, w, hospital, accessReq(patientA, "ClinicMSP", Everything, "TREAT"))
	mustOK(t, err)
	if e.Decision != "permit" || e.ConsentID != ref("c-all") {
		t.Fatalf("everything with a * grant: %+v", e)
	}

	c := newAudit(testConfig)
	byPatient, err := call(w, hospital, c, nil, func(ctx contractapi.TransactionContextInterface) (*AuditPage, error) {
		return c.ByPatient(ctx, patientA, "2026-03-01T00:00:00Z", "2026-03-02T00:00:00Z", 100, "")
	})
	mustOK(t, err)
	if len(byPatient.Entries) != 5 || byPatient.Entries[0].Resource != obsO1 || byPatient.Entries[2].Decision != Partial || byPatient.Entries[4].Decision != Permit {
		t.Fatalf("by patient: %+v", byPatient.Entries)
	}
	window, err := call(w, hospital, c, nil, func(ctx contractapi.TransactionContextInterface) (*AuditPage, error) {
		return c.ByPeriod(ctx, "2026-03-01T12:01:30Z", "2026-03-01T12:03:30Z", 1, "")
	})
	mustOK(t, err)
	if len(window.Entries) != 1 || window.Bookmark == "" || window.Entries[0].Resource != condC1 {
		t.Fatalf("first page of the period: %+v", window)
	}
	next, err := call(w, hospital, c, nil, func(ctx contractapi.TransactionContextInterface) (*AuditPage, error) {
		return c.ByPeriod(ctx, "2026-03-01T12:01:30Z", "2026-03-01T12:03:30Z", 1, window.Bookmark)
	})
	mustOK(t, err)
	if len(next.Entries) != 1 || next.Entries[0].Resource != Everything {
		t.Fatalf("second page of the period: %+v", next)
	}

	// A whole type, as a search asks for it: decided like one resource of that type.
	for typ, want := range map[string]string{"Observation": "permit", "Condition": "permit", "Specimen": "permit"} {
		w.now = w.now.Add(time.Minute)
		e, err := access(t, w, hospital, accessReq(patientA, "ClinicMSP", typ, "TREAT"))
		mustOK(t, err)
		if e.Decision != want || e.Resource != typ {
			t.Fatalf("%s: %+v", typ, e)
		}
	}
	_, err = doRevoke(w, patient, "c-all", "")
	mustOK(t, err)
	w.now = w.now.Add(time.Minute)
	if e, _ := access(t, w, hospital, accessReq(patientA, "ClinicMSP", "Condition", "TREAT")); e.Decision != "deny" {
		t.Fatalf("Condition after the * grant is revoked: %+v", e)
	}
}

func TestAuditRejections(t *testing.T) {
	w, hospital, _ := consentWorld(t)
	cases := []struct {
		name   string
		caller actor
		req    AccessRequest
		code   string
		msg    string
	}{
		{"not a custodian", client(t, "ClinicMSP"), accessReq(patientA, "InsurerMSP", obsO1, "HPAYMT"), CodeForbidden, "holds no records"},
		{"insurer cannot log", client(t, "InsurerMSP"), accessReq(patientA, "InsurerMSP", obsO1, "HPAYMT"), CodeForbidden, "only provider"},
		{"a FHIR id instead of the key", hospital, accessReq(patientA, "ClinicMSP", "Observation/o1", "TREAT"), CodeInvalid, "resourceKey"},
		{"the old $everything form with a patient id", hospital, accessReq(patientA, "ClinicMSP", "Patient/p1/$everything", "TREAT"), CodeInvalid, "resourceKey"},
		{"bad type", hospital, accessReq(patientA, "ClinicMSP", "observation", "TREAT"), CodeInvalid, "Type/<resourceKey>"},
		{"bad patient", hospital, accessReq("Jane", "ClinicMSP", obsO1, "TREAT"), CodeInvalid, "pseudonym"},
		{"bad accessor", hospital, accessReq(patientA, "clinic", obsO1, "TREAT"), CodeInvalid, "grantee"},
		{"bad purpose", hospital, accessReq(patientA, "ClinicMSP", obsO1, "X"), CodeInvalid, "purpose"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := access(t, w, tc.caller, tc.req)
			refused(t, w, err, tc.code, tc.msg) // nothing logged
		})
	}
	c := newAudit(testConfig)
	_, err := call(w, hospital, c, nil, func(ctx contractapi.TransactionContextInterface) (*AuditPage, error) {
		return c.ByPeriod(ctx, "2026-03-02T00:00:00Z", "2026-03-01T00:00:00Z", 10, "")
	})
	wantErr(t, err, CodeInvalid, "after from")
}

// TestAuditAttacks: patientA's records are at HospitalMSP, the patient's own identity is confirmed there, and the
// patient granted ClinicMSP read access to Observations for treatment.
func TestAuditAttacks(t *testing.T) {
	var patient actor
	fixture := func(t *testing.T) *world {
		w, _, p := consentWorld(t)
		patient = p
		_, err := doGrant(t, w, patient, grant("c-obs", "ClinicMSP", []string{"Observation"}, "TREAT", "2026-03-01T00:00:00Z", ""))
		mustOK(t, err)
		return w
	}
	log := func(a func(t *testing.T) actor, req AccessRequest) func(t *testing.T, w *world) error {
		return func(t *testing.T, w *world) error { _, err := access(t, w, a(t), req); return err }
	}
	byMSP := func(msp, role string) func(t *testing.T) actor {
		return func(t *testing.T) actor { return newActor(t, msp, role, "someone") }
	}
	obs := accessReq(patientA, "ClinicMSP", obsO1, "TREAT")
	runAttacks(t, fixture, []attack{
		{name: "peer identity logs an access", move: log(byMSP("HospitalMSP", "peer"), obs), code: CodeForbidden, msg: "may not submit"},
		{name: "org without the records logs an access to them", move: log(byMSP("ClinicMSP", "client"), obs), code: CodeForbidden, msg: "holds no records"},
		{name: "insurer logs an access", move: log(byMSP("InsurerMSP", "client"), obs), code: CodeForbidden, msg: "only provider orgs"},
		{name: "the patient's certificate logs an access in its org's name", move: log(func(*testing.T) actor { return patient }, obs), code: CodeForbidden, msg: "patient's own identity"},
		{
			name: "dummy custodian logs its own decision to manufacture a permit",
			prep: func(t *testing.T, w *world) {
				_, err := register(t, w, client(t, "ClinicMSP"), entry(patientA, "Observation", "dummy", 1, digest2))
				mustOK(t, err)
			},
			move: log(byMSP("ClinicMSP", "client"), accessReq(patientA, "ClinicMSP", condC1, "TREAT")),
			then: func(t *testing.T, w *world) {
				var e AuditEntry
				mustOK(t, json.Unmarshal(lastEvent(t, w).Payload, &e))
				if e.Decision != "deny" || e.Custodian != "ClinicMSP" {
					t.Fatalf("the patient's grant opens the hospital's records, not the clinic's: %+v", e)
				}
			},
		},
	})
}
