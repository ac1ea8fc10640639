package contracts

import (
	"fmt"
	"strings"
	"testing"

	"github.com/hyperledger/fabric-contract-api-go/v2/contractapi"
)

func TestConsentScopeCategories(t *testing.T) {
	w, hospital, patient := consentWorld(t)
	give := func(id string, scope, categories []string) {
		t.Helper()
		g := grant(id, "ClinicMSP", scope, "TREAT", "2026-03-01T00:00:00Z", "")
		g.DocumentDigest, g.Categories = "", categories
		_, err := doGrant(t, w, patient, g)
		mustOK(t, err)
	}
	give("g-lab", []string{"Observation"}, []string{"laboratory"})
	give("g-vitals", []string{"DiagnosticReport", "Observation"}, []string{"vital-signs"})
	give("g-cond", []string{"Condition"}, nil)
	ask := func(resource string, categories ...string) *AuditEntry {
		t.Helper()
		req := accessReq(patientA, "ClinicMSP", resource, "TREAT")
		req.Categories = categories
		e, err := access(t, w, hospital, req)
		mustOK(t, err)
		return e
	}
	covered := func(e *AuditEntry) string {
		var out []string
		for _, c := range e.Coverage {
			for _, n := range []string{"g-lab", "g-vitals", "g-cond", "g-all"} {
				if ref(n) == c.ConsentID {
					out = append(out, fmt.Sprintf("%s%v%v", n, c.Scope, c.Categories))
				}
			}
		}
		return strings.Join(out, " ")
	}
	cases := []struct {
		name       string
		resource   string
		categories []string
		decision   string
		consent    string
		coverage   string
		reason     string
	}{
		{"a laboratory result", obsO1, []string{"laboratory"}, Permit, "g-lab", "g-lab[Observation][laboratory]", "permits"},
		{"a result that is both", obsO1, []string{"laboratory", "vital-signs"}, Permit, "any",
			"g-lab[Observation][laboratory] g-vitals[DiagnosticReport Observation][vital-signs]", "permits"},
		{"a social history observation", obsO1, []string{"social-history"}, Deny, "", "", "covers only categories laboratory of Observation"},
		{"an observation of unknown category", obsO1, nil, Deny, "", "", "covers only categories vital-signs of Observation"},
		{"a condition (no category limit)", condC1, nil, Permit, "g-cond", "g-cond[Condition][]", "permits"},
		{"every observation", "Observation", nil, Partial, "", "g-lab[Observation][laboratory] g-vitals[DiagnosticReport Observation][vital-signs]", "cover part of it"},
		{"every condition", "Condition", nil, Permit, "g-cond", "g-cond[Condition][]", "permits"},
		{"every procedure", "Procedure", nil, Deny, "", "", "does not cover Procedure"},
		{"the whole record", Everything, nil, Partial, "", "g-lab[Observation][laboratory] g-vitals[DiagnosticReport Observation][vital-signs] g-cond[Condition][]", "release only what the coverage lists"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := ask(tc.resource, tc.categories...)
			wantID := ""
			switch tc.consent {
			case "":
			case "any": // either grant covers it wholly; the first read is named
				wantID = e.ConsentID
			default:
				wantID = ref(tc.consent)
			}
			got := covered(e)
			// Coverage is in the order grants are read (by key); compare as sets.
			if e.Decision != tc.decision || e.ConsentID != wantID || !sameWords(got, tc.coverage) || !strings.Contains(e.Reason, tc.reason) {
				t.Fatalf("got %s %q coverage %q (%s)", e.Decision, e.ConsentID, got, e.Reason)
			}
			if e.Coverage == nil || e.Categories == nil {
				t.Fatal("coverage and categories are lists, never null")
			}
		})
	}
	d := check(t, w, "ClinicMSP", "Observation", "TREAT")
	if d.Decision != Partial || len(d.Coverage) != 2 {
		t.Fatalf("Check for every observation: %+v", d)
	}
	give("g-all", []string{"*"}, nil)
	if e := ask(Everything); e.Decision != Permit || e.ConsentID != ref("g-all") || len(e.Coverage) != 4 {
		t.Fatalf("the whole record after a * grant: %+v", e)
	}

	req := accessReq(patientA, "ClinicMSP", "Observation", "TREAT")
	req.Categories = []string{"laboratory"}
	_, err := access(t, w, hospital, req)
	refused(t, w, err, CodeInvalid, "categories describe one requested resource")
	req = accessReq(patientA, "ClinicMSP", obsO1, "TREAT")
	req.Categories = []string{"Laboratory"}
	_, err = access(t, w, hospital, req)
	refused(t, w, err, CodeInvalid, "category code")
}

func sameWords(a, b string) bool {
	x, y := strings.Fields(a), strings.Fields(b)
	if len(x) != len(y) {
		return false
	}
	seen := map[string]int{}
	for _, s := range x {
		seen[s]++
	}
	for _, s := range y {
		if seen[s] == 0 {
			return false
		}
		seen[s]--
	}
	return true
}

func TestConsentCategoriesValidation(t *testing.T) {
	many := make([]string, 33)
	for i := range many {
		many[i] = fmt.Sprint("c", i)
	}
	for _, tc := range []struct {
		name       string
		categories []string
		msg        string
	}{
		{"upper case", []string{"Laboratory"}, "category code"},
		{"a display text", []string{"vital signs"}, "category code"},
		{"twice", []string{"laboratory", "laboratory"}, "twice"},
		{"too many", many, "at most 32"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, hospital, _ := consentWorld(t)
			g := grant("c1", "ClinicMSP", []string{"Observation"}, "TREAT", "2026-03-01T00:00:00Z", "")
			g.Categories = tc.categories
			_, err := doGrant(t, w, hospital, g)
			refused(t, w, err, CodeInvalid, tc.msg)
		})
	}
	w, hospital, _ := consentWorld(t)
	g := grant("c1", "ClinicMSP", []string{"Observation"}, "TREAT", "2026-03-01T00:00:00Z", "")
	g.Categories = []string{"vital-signs", "laboratory"}
	rec, err := doGrant(t, w, hospital, g)
	mustOK(t, err)
	if strings.Join(rec.Categories, ",") != "laboratory,vital-signs" {
		t.Fatalf("categories %v", rec.Categories)
	}
	rec, err = doGrant(t, w, hospital, grant("c2", "ClinicMSP", []string{"Observation"}, "TREAT", "2026-03-01T00:00:00Z", ""))
	mustOK(t, err)
	if rec.Categories == nil {
		t.Fatal("a grant without categories stores an empty list")
	}
}

func TestRecordsDigestScheme(t *testing.T) {
	w := newWorld("providers")
	hospital := client(t, "HospitalMSP")
	r := newRecords(testConfig)
	get := func(name string) *Record {
		t.Helper()
		rec, err := call(w, hospital, r, nil, func(ctx contractapi.TransactionContextInterface) (*Record, error) {
			return r.Get(ctx, ref(name), 0)
		})
		mustOK(t, err)
		return rec
	}
	v2 := entry(patientA, "Observation", "o2", 1, digest2)
	v2.DigestScheme = SchemeMerkle
	_, err := register(t, w, hospital, entry(patientA, "Observation", "o1", 1, digest1), v2)
	mustOK(t, err)
	if get("Observation/o1").DigestScheme != "v1" || get("Observation/o2").DigestScheme != "v2" {
		t.Fatal("schemes not stored")
	}
	if ev := lastEvent(t, w); !strings.Contains(string(ev.Payload), `"digestScheme":"v1"`) {
		t.Fatalf("event %s", ev.Payload)
	}
	bad := entry(patientA, "Observation", "o3", 1, digest1)
	bad.DigestScheme = "v3"
	_, err = register(t, w, hospital, bad)
	refused(t, w, err, CodeInvalid, "digestScheme")
	// A retry is the same digest under the same scheme; the same digest under another scheme is another version.
	_, err = register(t, w, hospital, v2)
	mustOK(t, err)
	wroteNothing(t, w)
	same := v2
	same.DigestScheme = SchemeWholeResource
	_, err = register(t, w, hospital, same)
	refused(t, w, err, CodeConflict, "version 1 is taken")

	// A record registered before digest schemes existed reads as v1.
	old := Record{RecordEntry: entry(patientA, "Observation", "o1", 1, digest1), Custodian: "HospitalMSP", TxID: "tx0"}
	old.DigestScheme = ""
	k, _ := (&fakeStub{}).CreateCompositeKey(keyRecord, []string{patientA, "Observation", ref("Observation/o1"), versionText(1)})
	w.state[k] = []byte(strings.Replace(mustJSON(t, old), `"digestScheme":"",`, "", 1))
	if got := get("Observation/o1"); got.DigestScheme != "v1" || got.Digest != digest1 {
		t.Fatalf("old record %+v", got)
	}
}
