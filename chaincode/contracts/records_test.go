package contracts

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/hyperledger/fabric-contract-api-go/v2/contractapi"
)

// Test pseudonyms and digests: 64 lower-case hex characters, like the gateway's HMACs.
var (
	patientA = strings.Repeat("a1", 32)
	patientB = strings.Repeat("b2", 32)
	digest1  = strings.Repeat("d1", 32)
	digest2  = strings.Repeat("d2", 32)
)

func entry(patient, typ, id string, version int, digest string) RecordEntry {
	return RecordEntry{Patient: patient, ResourceType: typ, ID: id, Version: version, Digest: digest,
		LastUpdated: "2026-03-01T10:00:00Z", Size: 512}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}

func register(t *testing.T, w *world, a actor, entries ...RecordEntry) (int, error) {
	t.Helper()
	r := newRecords(testConfig)
	return call(w, a, r, nil, func(ctx contractapi.TransactionContextInterface) (int, error) {
		return r.Register(ctx, mustJSON(t, entries))
	})
}

func TestRecordsRegisterBundleAtomically(t *testing.T) {
	w := newWorld("providers")
	hospital := client(t, "HospitalMSP")
	n, err := register(t, w, hospital,
		entry(patientA, "Patient", "p1", 1, digest1),
		entry(patientA, "Observation", "o1", 1, digest2),
		entry(patientB, "Patient", "p2", 1, digest1))
	mustOK(t, err)
	if n != 3 {
		t.Fatalf("registered %d, want 3", n)
	}
	ev := lastEvent(t, w)
	if ev.Name != "Records.Registered" || !strings.Contains(string(ev.Payload), `"custodian":"HospitalMSP"`) {
		t.Fatalf("event %s %s", ev.Name, ev.Payload)
	}
	// One bad entry rejects the whole bundle: the good entry before it is not registered either.
	_, err = register(t, w, hospital, entry(patientA, "Observation", "o2", 1, digest1), entry(patientA, "Observation", "o3", 1, "nothex"))
	refused(t, w, err, CodeInvalid, "entries[1].digest")
	// A bundle whose last entry conflicts is refused before its first entry is written.
	_, err = register(t, w, hospital, entry(patientA, "Observation", "o2", 1, digest1), entry(patientA, "Observation", "o1", 3, digest2))
	refused(t, w, err, CodeConflict, "entries[1]")
}

func TestRecordsRegisterRejections(t *testing.T) {
	cases := []struct {
		name    string
		caller  func(t *testing.T) actor
		entries []RecordEntry
		code    string
		msg     string
	}{
		{"insurer may not register", func(t *testing.T) actor { return client(t, "InsurerMSP") },
			[]RecordEntry{entry(patientA, "Patient", "x", 1, digest1)}, CodeForbidden, "only provider orgs"},
		{"peer role may not write", func(t *testing.T) actor { return newActor(t, "HospitalMSP", "peer", "peer0") },
			[]RecordEntry{entry(patientA, "Patient", "x", 1, digest1)}, CodeForbidden, "may not submit"},
		{"empty bundle", nil, []RecordEntry{}, CodeInvalid, "1 to 5000"},
		{"name instead of pseudonym", nil, []RecordEntry{entry("Jane Doe", "Patient", "x", 1, digest1)}, CodeInvalid, "pseudonym"},
		{"bad resource type", nil, []RecordEntry{entry(patientA, "patient", "x", 1, digest1)}, CodeInvalid, "resource type"},
		{"bad id", nil, []RecordEntry{entry(patientA, "Patient", "x/y", 1, digest1)}, CodeInvalid, "FHIR id"},
		{"version 0", nil, []RecordEntry{entry(patientA, "Patient", "x", 0, digest1)}, CodeInvalid, "version"},
		{"first version 2", nil, []RecordEntry{entry(patientA, "Patient", "x", 2, digest1)}, CodeConflict, "first version is 1"},
		{"bad time", nil, []RecordEntry{{Patient: patientA, ResourceType: "Patient", ID: "x", Version: 1, Digest: digest1, LastUpdated: "yesterday"}}, CodeInvalid, "RFC 3339"},
		{"negative size", nil, []RecordEntry{{Patient: patientA, ResourceType: "Patient", ID: "x", Version: 1, Digest: digest1, LastUpdated: "2026-01-01T00:00:00Z", Size: -1}}, CodeInvalid, "size"},
		{"same resource twice", nil, []RecordEntry{entry(patientA, "Patient", "x", 1, digest1), entry(patientA, "Patient", "x", 2, digest2)}, CodeInvalid, "twice"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld("providers")
			a := client(t, "HospitalMSP")
			if tc.caller != nil {
				a = tc.caller(t)
			}
			_, err := register(t, w, a, tc.entries...)
			refused(t, w, err, tc.code, tc.msg)
		})
	}
	t.Run("unknown field", func(t *testing.T) {
		w := newWorld("providers")
		r := newRecords(testConfig)
		_, err := call(w, client(t, "HospitalMSP"), r, nil, func(ctx contractapi.TransactionContextInterface) (int, error) {
			return r.Register(ctx, `[{"patient":"`+patientA+`","name":"Jane"}]`)
		})
		wantErr(t, err, CodeInvalid, "unknown field")
	})
	t.Run("wrong channel", func(t *testing.T) {
		w := newWorld("claims")
		_, err := register(t, w, client(t, "HospitalMSP"), entry(patientA, "Patient", "x", 1, digest1))
		wantErr(t, err, CodeForbidden, "does not serve channel")
	})
}

func TestRecordsVersionsAndCustody(t *testing.T) {
	w := newWorld("providers")
	hospital, clinic := client(t, "HospitalMSP"), client(t, "ClinicMSP")
	_, err := register(t, w, hospital, entry(patientA, "Observation", "o1", 1, digest1))
	mustOK(t, err)

	n, err := register(t, w, hospital, entry(patientA, "Observation", "o1", 1, digest1))
	mustOK(t, err)
	if n != 0 {
		t.Fatalf("a retried registration wrote %d entries", n)
	}
	_, err = register(t, w, hospital, entry(patientA, "Observation", "o1", 1, digest2))
	wantErr(t, err, CodeConflict, "version 1 is taken")
	_, err = register(t, w, hospital, entry(patientA, "Observation", "o1", 3, digest2))
	wantErr(t, err, CodeConflict, "the next is 2")
	_, err = register(t, w, clinic, entry(patientA, "Observation", "o1", 2, digest2))
	wantErr(t, err, CodeForbidden, "held by HospitalMSP")
	_, err = register(t, w, hospital, entry(patientB, "Observation", "o1", 2, digest2))
	wantErr(t, err, CodeInvalid, "another patient")
	_, err = register(t, w, hospital, entry(patientA, "Observation", "o1", 2, digest2))
	mustOK(t, err)
	_, err = register(t, w, clinic, entry(patientA, "Condition", "c1", 1, digest1))
	mustOK(t, err)

	r := newRecords(testConfig)
	hist, err := call(w, clinic, r, nil, func(ctx contractapi.TransactionContextInterface) ([]Record, error) {
		return r.History(ctx, "Observation", "o1")
	})
	mustOK(t, err)
	if len(hist) != 2 || hist[0].Version != 1 || hist[1].Version != 2 || hist[1].Digest != digest2 {
		t.Fatalf("history %+v", hist)
	}
	latest, err := call(w, clinic, r, nil, func(ctx contractapi.TransactionContextInterface) (*Record, error) {
		return r.Get(ctx, "Observation", "o1", 0)
	})
	mustOK(t, err)
	if latest.Version != 2 || latest.Custodian != "HospitalMSP" {
		t.Fatalf("latest %+v", latest)
	}
	custodians, err := call(w, clinic, r, nil, func(ctx contractapi.TransactionContextInterface) ([]Custodianship, error) {
		return r.Custodians(ctx, patientA)
	})
	mustOK(t, err)
	if len(custodians) != 2 || custodians[0].Custodian != "ClinicMSP" || custodians[1].Custodian != "HospitalMSP" {
		t.Fatalf("custodians %+v", custodians)
	}
	_, err = call(w, clinic, r, nil, func(ctx contractapi.TransactionContextInterface) (*Record, error) {
		return r.Get(ctx, "Observation", "missing", 0)
	})
	wantErr(t, err, CodeNotFound, "not registered")
}

func TestRecordsPatientIndexPages(t *testing.T) {
	w := newWorld("providers")
	hospital := client(t, "HospitalMSP")
	var entries []RecordEntry
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		entries = append(entries, entry(patientA, "Observation", id, 1, digest1))
	}
	entries = append(entries, entry(patientB, "Observation", "z", 1, digest1))
	_, err := register(t, w, hospital, entries...)
	mustOK(t, err)
	r := newRecords(testConfig)
	var got []string
	bookmark := ""
	for pages := 0; pages < 5; pages++ {
		p, err := call(w, hospital, r, nil, func(ctx contractapi.TransactionContextInterface) (*RecordPage, error) {
			return r.PatientIndex(ctx, patientA, 2, bookmark)
		})
		mustOK(t, err)
		for _, rec := range p.Records {
			got = append(got, rec.ID)
		}
		if bookmark = p.Bookmark; bookmark == "" {
			break
		}
	}
	if strings.Join(got, ",") != "a,b,c,d,e" {
		t.Fatalf("paged index %v", got)
	}
	_, err = call(w, hospital, r, nil, func(ctx contractapi.TransactionContextInterface) (*RecordPage, error) {
		return r.PatientIndex(ctx, patientA, 0, "")
	})
	wantErr(t, err, CodeInvalid, "pageSize")
}

func TestRecordsErasure(t *testing.T) {
	w := newWorld("providers")
	hospital, clinic := client(t, "HospitalMSP"), client(t, "ClinicMSP")
	_, err := register(t, w, hospital, entry(patientA, "Patient", "p1", 1, digest1))
	mustOK(t, err)
	r := newRecords(testConfig)
	erase := func(a actor) error {
		_, err := call(w, a, r, nil, func(ctx contractapi.TransactionContextInterface) (*Erasure, error) {
			return r.RecordErasure(ctx, patientA)
		})
		return err
	}
	wantErr(t, erase(clinic), CodeForbidden, "holds no records")
	mustOK(t, erase(hospital))
	if ev := lastEvent(t, w); ev.Name != "Records.Erased" {
		t.Fatalf("event %s", ev.Name)
	}
}

// TestRecordsAttacks: HospitalMSP holds patientA's Observation o1 (version 1), and patientA's own certificate (issued
// by the hospital's CA) is confirmed as the patient's identity at the hospital.
func TestRecordsAttacks(t *testing.T) {
	hospital, clinic := client(t, "HospitalMSP"), client(t, "ClinicMSP")
	patient := newActor(t, "HospitalMSP", "client", "patient-app")
	fixture := func(t *testing.T) *world {
		w := newWorld("providers")
		_, err := register(t, w, hospital, entry(patientA, "Observation", "o1", 1, digest1))
		mustOK(t, err)
		mustOK(t, registerIdentity(w, hospital, patientA, patient))
		mustOK(t, confirmIdentity(w, patient, patientA))
		return w
	}
	r := newRecords(testConfig)
	reg := func(a actor, e RecordEntry) func(t *testing.T, w *world) error {
		return func(t *testing.T, w *world) error { _, err := register(t, w, a, e); return err }
	}
	erase := func(a actor) func(t *testing.T, w *world) error {
		return func(t *testing.T, w *world) error {
			return do(w, a, r, func(ctx contractapi.TransactionContextInterface) (*Erasure, error) {
				return r.RecordErasure(ctx, patientA)
			})
		}
	}
	fresh := entry(patientA, "Observation", "o2", 1, digest1)
	runAttacks(t, fixture, []attack{
		{name: "peer identity registers a bundle", move: reg(peerOf(t, "HospitalMSP"), fresh), code: CodeForbidden, msg: "may not submit"},
		{name: "orderer identity registers a bundle", move: reg(newActor(t, "HospitalMSP", "orderer", "o1"), fresh), code: CodeForbidden, msg: "may not submit"},
		{name: "identity without a role registers a bundle", move: reg(newActor(t, "HospitalMSP", "", "x"), fresh), code: CodeForbidden, msg: "may not submit"},
		{name: "insurer registers records", move: reg(client(t, "InsurerMSP"), fresh), code: CodeForbidden, msg: "only provider orgs"},
		{name: "org outside the consortium registers records", move: reg(client(t, "NowhereMSP"), fresh), code: CodeForbidden, msg: "only provider orgs"},
		{name: "another custodian adds a version to a held resource", move: reg(clinic, entry(patientA, "Observation", "o1", 2, digest2)), code: CodeForbidden, msg: "held by HospitalMSP"},
		{name: "another custodian re-registers a held version with its digest", move: reg(clinic, entry(patientA, "Observation", "o1", 1, digest2)), code: CodeForbidden, msg: "held by HospitalMSP"},
		{name: "custodian moves a resource to another patient", move: reg(hospital, entry(patientB, "Observation", "o1", 2, digest2)), code: CodeInvalid, msg: "another patient"},
		{name: "the patient's certificate registers records in its org's name", move: reg(patient, fresh), code: CodeForbidden, msg: "patient's own identity"},
		{name: "peer identity records an erasure", move: erase(peerOf(t, "HospitalMSP")), code: CodeForbidden, msg: "may not submit"},
		{name: "insurer records an erasure", move: erase(client(t, "InsurerMSP")), code: CodeForbidden, msg: "only provider orgs"},
		{name: "org without the records records an erasure", move: erase(clinic), code: CodeForbidden, msg: "holds no records"},
		{name: "the patient's certificate records an erasure in its org's name", move: erase(patient), code: CodeForbidden, msg: "patient's own identity"},
	})
}
