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
	before := len(w.state)
	_, err = register(t, w, hospital, entry(patientA, "Observation", "o2", 1, digest1), entry(patientA, "Observation", "o3", 1, "nothex"))
	wantErr(t, err, CodeInvalid, "entries[1].digest")
	if len(w.state) != before {
		t.Fatal("a rejected bundle changed state")
	}
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
			wantErr(t, err, tc.code, tc.msg)
			if len(w.state) != 0 || len(w.events) != 0 {
				t.Fatal("a rejected registration changed state")
			}
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
