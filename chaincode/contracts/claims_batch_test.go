package contracts

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hyperledger/fabric-chaincode-go/v2/shim"
	"github.com/hyperledger/fabric-contract-api-go/v2/contractapi"
)

func submitBatch(t *testing.T, w *world, a actor, subs []ClaimSubmission, details map[string]ClaimDetail) (*SubmittedBatch, error) {
	t.Helper()
	c := newClaims(testConfig)
	tm := map[string][]byte{transientClaims: []byte(mustJSON(t, details))}
	return call(w, a, c, tm, func(ctx contractapi.TransactionContextInterface) (*SubmittedBatch, error) {
		return c.SubmitBatch(ctx, mustJSON(t, subs))
	})
}

// details gives each submission its lines.
func details(subs []ClaimSubmission) map[string]ClaimDetail {
	out := map[string]ClaimDetail{}
	for _, s := range subs {
		out[s.ClaimID] = detail(s.ClaimID)
	}
	return out
}

// wantResults checks a batch's results, in claim id order: each decided claim's status, or each refused one's
// "CODE: message" beginning with what is wanted.
func wantResults(t *testing.T, results []ClaimResult, want map[string]string) {
	t.Helper()
	if len(results) != len(want) {
		t.Fatalf("%d results", len(results))
	}
	for i, r := range results {
		if i > 0 && results[i-1].ClaimID > r.ClaimID {
			t.Fatalf("results are not in claim id order")
		}
		got := r.Status
		if r.Status == "refused" {
			got = r.Code + ": " + r.Message
		}
		if !strings.HasPrefix(got, want[r.ClaimID]) {
			t.Errorf("%s: got %q, want %q", r.ClaimID, got, want[r.ClaimID])
		}
		if (r.Status != "refused") != (r.Claim != nil) {
			t.Errorf("%s: result %+v", r.ClaimID, r)
		}
	}
}

func adjudicateBatch(t *testing.T, w *world, a actor, decisions map[string]AdjudicationInput) (*AdjudicatedBatch, error) {
	t.Helper()
	c := newClaims(testConfig)
	tm := map[string][]byte{transientDecision: []byte(mustJSON(t, decisions))}
	return call(w, a, c, tm, func(ctx contractapi.TransactionContextInterface) (*AdjudicatedBatch, error) {
		return c.AdjudicateBatch(ctx)
	})
}

func payBatch(t *testing.T, w *world, a actor, provider, paymentRef string, names ...string) (*Payment, error) {
	t.Helper()
	ids := make([]string, len(names))
	for i, n := range names {
		ids[i] = ref(n)
	}
	c := newClaims(testConfig)
	return call(w, a, c, nil, func(ctx contractapi.TransactionContextInterface) (*Payment, error) {
		return c.PayBatch(ctx, provider, paymentRef, mustJSON(t, ids))
	})
}

// linesBatch reads the lines of the named claims (names, or raw ids when they are keys already) in one call.
func linesBatch(t *testing.T, w *world, a actor, names ...string) ([]ClaimLines, error) {
	t.Helper()
	ids := make([]string, len(names))
	for i, n := range names {
		ids[i] = ref(n)
	}
	c := newClaims(testConfig)
	return call(w, a, c, nil, func(ctx contractapi.TransactionContextInterface) ([]ClaimLines, error) {
		return c.LinesBatch(ctx, mustJSON(t, ids))
	})
}

func getClaim(t *testing.T, w *world, name string) *Claim {
	t.Helper()
	c := newClaims(testConfig)
	cl, err := call(w, client(t, "InsurerMSP"), c, nil, func(ctx contractapi.TransactionContextInterface) (*Claim, error) {
		return c.Get(ctx, ref(name))
	})
	mustOK(t, err)
	return cl
}

// dated is a claim submission for another service date, so claims of one patient are not duplicates.
func dated(name string, day int) ClaimSubmission {
	s := submission(name)
	s.ServiceDate = fmt.Sprintf("2026-02-%02d", day)
	return s
}

func TestClaimsSubmitBatch(t *testing.T) {
	hospital := client(t, "HospitalMSP")
	toInsurer2 := dated("b-3", 3)
	toInsurer2.Insurer = "Insurer2MSP"
	ofB := dated("b-4", 1)
	ofB.Patient = patientB
	good := []ClaimSubmission{dated("b-1", 1), dated("b-2", 2), toInsurer2, ofB}
	w := newWorld("claims")
	out, err := submitBatch(t, w, hospital, good, details(good))
	mustOK(t, err)
	if len(out.Claims) != 4 || out.Provider != "HospitalMSP" || out.Claims[2].Insurer != "Insurer2MSP" {
		t.Fatalf("batch %+v", out)
	}
	last := w.calls[len(w.calls)-1]
	if len(last.events) != 1 || last.events[0].Name != "Claims.SubmittedBatch" {
		t.Fatalf("events %s", last.wrote())
	}
	var ev SubmittedBatch
	mustOK(t, json.Unmarshal(last.events[0].Payload, &ev))
	if len(ev.Claims) != 4 || ev.Claims[0].ClaimID != ref("b-1") || ev.Claims[0].Status != StatusSubmitted || ev.Claims[0].Use != UseClaim {
		t.Fatalf("event %+v", ev)
	}
	if strings.Contains(string(last.events[0].Payload), "99213") {
		t.Fatal("a line code reached the event")
	}
	for _, name := range []string{"b-1", "b-2", "b-3", "b-4"} {
		if cl := getClaim(t, w, name); cl.Status != StatusSubmitted || cl.TxID != last.txID {
			t.Fatalf("%s: %+v", name, cl)
		}
	}
	// patientA at InsurerMSP: one index holding b-1 and b-2; patientA at Insurer2MSP and patientB: one each.
	if n := len(w.private[LinesCollection("HospitalMSP", "InsurerMSP")]); n != 3+2 {
		t.Fatalf("private keys with InsurerMSP: %d", n)
	}
	// The batch's claims are in the duplicate index like any other.
	_, err = submit(t, w, hospital, submission("b-5"), detail("b-5")) // same patient, day and codes as b-1? no: b-1 is 02-01
	if err != nil {
		t.Fatalf("a claim for another day: %v", err)
	}
	_, err = submit(t, w, hospital, dated("b-6", 2), detail("b-6"))
	mustOK(t, err)
	if d := privateDetail(t, w, "b-6"); d.DuplicateOf != ref("b-2") {
		t.Fatalf("b-6 duplicates b-2: %+v", d)
	}
	// Two claims of one service in one batch (a bundle that bills a visit twice): both filed, the second as the
	// first one's exact duplicate.
	twice := []ClaimSubmission{dated("t-1", 5), dated("t-2", 5)}
	_, err = submitBatch(t, w, hospital, twice, details(twice))
	mustOK(t, err)
	if d := privateDetail(t, w, "t-2"); d.DuplicateOf != ref("t-1") || d.Edits[len(d.Edits)-1].Reason != DuplicateReason {
		t.Fatalf("t-2 duplicates t-1: %+v", d)
	}
	if d := privateDetail(t, w, "t-1"); d.DuplicateOf != "" {
		t.Fatalf("t-1 is the original: %+v", d)
	}

	cases := []struct {
		name    string
		caller  actor
		subs    []ClaimSubmission
		details func([]ClaimSubmission) map[string]ClaimDetail
		code    string
		msg     string
	}{
		{"one claim id twice", hospital, []ClaimSubmission{dated("x-1", 5), dated("x-1", 6)}, func(s []ClaimSubmission) map[string]ClaimDetail {
			return map[string]ClaimDetail{ref("x-1"): detail("x-1"), ref("x-9"): detail("x-9")}
		}, CodeInvalid, "appears twice"},
		{"an existing claim id", hospital, []ClaimSubmission{dated("b-1", 9)}, details, CodeConflict, "exists already"},
		{"no detail for a claim", hospital, []ClaimSubmission{dated("x-1", 5), dated("x-2", 6)}, func(s []ClaimSubmission) map[string]ClaimDetail {
			return map[string]ClaimDetail{ref("x-1"): detail("x-1"), ref("x-3"): detail("x-3")}
		}, CodeInvalid, "submissions[1]: transient claims has no detail"},
		{"details of claims not submitted", hospital, []ClaimSubmission{dated("x-1", 5)}, func(s []ClaimSubmission) map[string]ClaimDetail {
			return map[string]ClaimDetail{ref("x-1"): detail("x-1"), ref("x-3"): detail("x-3")}
		}, CodeInvalid, "2 details for 1 claims"},
		{"one invalid claim", hospital, []ClaimSubmission{dated("x-1", 5), func() ClaimSubmission { s := dated("x-2", 6); s.Currency = "usd"; return s }()}, details, CodeInvalid, "submissions[1]: currency"},
		{"an empty batch", hospital, []ClaimSubmission{}, details, CodeInvalid, "1 to 500 claims"},
		{"insurer submits a batch", client(t, "InsurerMSP"), []ClaimSubmission{dated("x-1", 5)}, details, CodeForbidden, "only provider orgs"},
		{"peer identity submits a batch", peerOf(t, "HospitalMSP"), []ClaimSubmission{dated("x-1", 5)}, details, CodeForbidden, "may not submit"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := submitBatch(t, w, tc.caller, tc.subs, tc.details(tc.subs))
			refused(t, w, err, tc.code, tc.msg)
		})
	}
	t.Run("more than 500 claims", func(t *testing.T) {
		subs := make([]ClaimSubmission, 501)
		for i := range subs {
			subs[i] = submission(fmt.Sprint("many-", i))
		}
		_, err := submitBatch(t, w, hospital, subs, map[string]ClaimDetail{})
		refused(t, w, err, CodeInvalid, "1 to 500 claims, not 501")
	})
	t.Run("claims need their transient details", func(t *testing.T) {
		c := newClaims(testConfig)
		_, err := call(w, hospital, c, nil, func(ctx contractapi.TransactionContextInterface) (*SubmittedBatch, error) {
			return c.SubmitBatch(ctx, mustJSON(t, []ClaimSubmission{dated("x-1", 5)}))
		})
		refused(t, w, err, CodeInvalid, `transient data "claims" is missing`)
	})
}

func TestClaimsAdjudicateBatch(t *testing.T) {
	hospital, insurer := client(t, "HospitalMSP"), client(t, "InsurerMSP")
	w := newWorld("claims")
	subs := []ClaimSubmission{dated("a-ok", 1), dated("a-ok2", 2), dated("a-done", 3), dated("a-cancelled", 4), dated("a-bad", 5), dated("a-other", 6)}
	subs[5].Insurer = "Insurer2MSP"
	d := map[string]ClaimDetail{}
	for _, s := range subs {
		d[s.ClaimID] = detail(s.ClaimID)
	}
	_, err := submitBatch(t, w, hospital, subs, d)
	mustOK(t, err)
	_, err = adjudicate(t, w, insurer, "a-done", approveAll(0))
	mustOK(t, err)
	_, err = claimStep(w, hospital, func(c *Claims, ctx contractapi.TransactionContextInterface) (*Claim, error) {
		return c.Cancel(ctx, ref("a-cancelled"), "withdrawn")
	})
	mustOK(t, err)
	pre := submission("a-preauth")
	pre.Use, pre.Priority = UsePreauth, "standard"
	_, err = submit(t, w, hospital, pre, detail("a-preauth"))
	mustOK(t, err)

	partial := AdjudicationInput{RetentionSeconds: 60, Lines: []LineAdjudication{
		{Sequence: 1, Outcome: OutcomeApproved, ApprovedCents: 12500, Reasons: []string{}},
		{Sequence: 2, Outcome: OutcomePartial, ApprovedCents: 10000, Reasons: []string{"45"}},
	}}
	decisions := map[string]AdjudicationInput{
		ref("a-ok"): approveAll(3600), ref("a-ok2"): partial, ref("a-done"): approveAll(0),
		ref("a-cancelled"): approveAll(0), ref("a-bad"): {Lines: approveAll(0).Lines[:1]}, ref("a-other"): approveAll(0),
		ref("a-missing"): approveAll(0), ref("a-preauth"): approveAll(0),
	}
	out, err := adjudicateBatch(t, w, insurer, decisions)
	mustOK(t, err)
	want := map[string]string{
		ref("a-ok"): "adjudicated", ref("a-ok2"): "adjudicated",
		ref("a-done"):      "CONFLICT: claim " + ref("a-done") + " is adjudicated",
		ref("a-cancelled"): "CONFLICT: claim " + ref("a-cancelled") + " is cancelled",
		ref("a-bad"):       "INVALID_ARGUMENT: the adjudication has 1 lines; the claim has 2",
		ref("a-other"):     "FORBIDDEN: claim " + ref("a-other") + " is addressed to Insurer2MSP",
		ref("a-missing"):   "NOT_FOUND: claim " + ref("a-missing") + " does not exist",
		ref("a-preauth"):   "CONFLICT: claim " + ref("a-preauth") + " is a prior authorisation request",
	}
	wantResults(t, out.Results, want)
	if len(out.Claims) != 2 {
		t.Fatalf("adjudicated %+v", out.Claims)
	}
	last := w.calls[len(w.calls)-1]
	if len(last.events) != 1 || last.events[0].Name != "Claims.AdjudicatedBatch" {
		t.Fatalf("wrote %s", last.wrote())
	}
	var ev AdjudicatedBatch
	mustOK(t, json.Unmarshal(last.events[0].Payload, &ev))
	if len(ev.Claims) != 2 || ev.Claims[0].TxID != last.txID || len(ev.Results) != 8 {
		t.Fatalf("event %+v", ev)
	}
	if cl := getClaim(t, w, "a-ok2"); cl.Outcome != OutcomePartial || cl.ApprovedCents != 22500 || cl.Status != StatusAdjudicated {
		t.Fatalf("a-ok2 %+v", cl)
	}
	if cl := getClaim(t, w, "a-bad"); cl.Status != StatusSubmitted {
		t.Fatalf("a refused claim changed: %+v", cl)
	}
	c := newClaims(testConfig)
	adj, err := call(w, hospital, c, nil, func(ctx contractapi.TransactionContextInterface) (*Adjudication, error) {
		return c.AdjudicationOf(ctx, ref("a-ok2"))
	})
	mustOK(t, err)
	if adj.Outcome != OutcomePartial || adj.Lines[1].Reasons[0] != "45" {
		t.Fatalf("adjudication %+v", adj)
	}

	// Nothing adjudicable: the results say why, nothing is written, nothing is emitted.
	out, err = adjudicateBatch(t, w, insurer, map[string]AdjudicationInput{ref("a-ok"): approveAll(0)})
	mustOK(t, err)
	wroteNothing(t, w)
	if len(out.Results) != 1 || out.Results[0].Code != CodeConflict || len(out.Claims) != 0 {
		t.Fatalf("%+v", out)
	}

	_, err = adjudicateBatch(t, w, hospital, map[string]AdjudicationInput{ref("a-bad"): approveAll(0)})
	refused(t, w, err, CodeForbidden, "only insurer orgs")
	_, err = adjudicateBatch(t, w, peerOf(t, "InsurerMSP"), map[string]AdjudicationInput{ref("a-bad"): approveAll(0)})
	refused(t, w, err, CodeForbidden, "may not submit")
	_, err = adjudicateBatch(t, w, insurer, map[string]AdjudicationInput{})
	refused(t, w, err, CodeInvalid, "1 to 500 decisions")
	// A client's claim number in place of a key refuses the call: no public result echoes the caller's text.
	_, err = adjudicateBatch(t, w, insurer, map[string]AdjudicationInput{ref("a-bad"): approveAll(0), "CLM-1": approveAll(0)})
	refused(t, w, err, CodeInvalid, "claimId must be an opaque key")
	_, err = call(w, insurer, c, map[string][]byte{transientDecision: []byte(`{"x": {"lines": [], "extra": 1}}`)},
		func(ctx contractapi.TransactionContextInterface) (*AdjudicatedBatch, error) {
			return c.AdjudicateBatch(ctx)
		})
	refused(t, w, err, CodeInvalid, "unknown field")
}

func TestClaimsLinesBatch(t *testing.T) {
	hospital, clinic, insurer := client(t, "HospitalMSP"), client(t, "ClinicMSP"), client(t, "InsurerMSP")
	patient := patientCert(t, "HospitalMSP", "patient-app")
	w := newWorld("claims")
	subs := []ClaimSubmission{dated("l-1", 1), dated("l-2", 2), dated("l-purged", 3), dated("l-gone", 4), dated("l-ins2", 5)}
	subs[4].Insurer = "Insurer2MSP"
	d := map[string]ClaimDetail{}
	for _, s := range subs {
		d[s.ClaimID] = detail(s.ClaimID)
	}
	d[ref("l-2")] = func() ClaimDetail { x := detail("l-2"); x.Coverage = "Coverage/cov-2"; return x }()
	_, err := submitBatch(t, w, hospital, subs, d)
	mustOK(t, err)
	_, err = submit(t, w, clinic, dated("l-clinic", 1), detail("l-clinic"))
	mustOK(t, err)
	_, err = adjudicate(t, w, insurer, "l-purged", approveAll(0))
	mustOK(t, err)
	_, err = claimStep(w, insurer, func(c *Claims, ctx contractapi.TransactionContextInterface) (*Claim, error) {
		return c.PurgeLines(ctx, ref("l-purged"))
	})
	mustOK(t, err)
	// l-gone's lines are not on this peer (not disseminated to it yet): the claim is there, its lines are not.
	linesKey, err := shim.CreateCompositeKey(keyClaimLines, []string{ref("l-gone")})
	mustOK(t, err)
	delete(w.private[LinesCollection("HospitalMSP", "InsurerMSP")], linesKey)

	found := "found"
	cases := []struct {
		name   string
		caller actor
		asked  []string
		want   []string // per claim, in the order asked: found, or the start of "CODE: message"
	}{
		{"the insurer's batch: each claim as Lines reads it, in the order asked", insurer,
			[]string{"l-2", "l-missing", "l-1", "l-purged", "l-ins2", "l-clinic", "l-gone"}, []string{
				found,
				"NOT_FOUND: claim " + ref("l-missing") + " does not exist",
				found,
				"NOT_FOUND: the private part of claim " + ref("l-purged") + " was purged after retention",
				"FORBIDDEN: the private part of claim " + ref("l-ins2") + " is shared by HospitalMSP and Insurer2MSP only",
				found,
				"NOT_FOUND: claim " + ref("l-gone") + " has no lines on this peer",
			}},
		{"the provider reads its own claims, not another provider's", hospital, []string{"l-clinic", "l-ins2", "l-1"}, []string{
			"FORBIDDEN: the private part of claim " + ref("l-clinic") + " is shared by ClinicMSP and InsurerMSP only",
			found,
			found,
		}},
		{"one claim", clinic, []string{"l-clinic"}, []string{found}},
		{"an org party to none", client(t, "Insurer2MSP"), []string{"l-1", "l-missing"}, []string{
			"FORBIDDEN: the private part of claim " + ref("l-1") + " is shared by HospitalMSP and InsurerMSP only",
			"NOT_FOUND: claim " + ref("l-missing") + " does not exist",
		}},
		{"a patient's certificate of the provider", patient, []string{"l-1", "l-missing"}, []string{
			"FORBIDDEN: reading the private part of claim " + ref("l-1") + ": this certificate is a patient's own identity",
			"NOT_FOUND: claim " + ref("l-missing") + " does not exist",
		}},
		{"the peer's own identity reads as Lines does", peerOf(t, "InsurerMSP"), []string{"l-1"}, []string{found}},
	}
	c := newClaims(testConfig)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := linesBatch(t, w, tc.caller, tc.asked...)
			mustOK(t, err)
			wroteNothing(t, w)
			if len(out) != len(tc.asked) {
				t.Fatalf("%d results for %d claims", len(out), len(tc.asked))
			}
			for i, r := range out {
				if r.ClaimID != ref(tc.asked[i]) {
					t.Fatalf("result %d is claim %s, asked %s", i, r.ClaimID, tc.asked[i])
				}
				got := found
				if r.Detail == nil {
					got = r.Code + ": " + r.Message
				} else if r.Code != "" || r.Message != "" {
					t.Errorf("%s: a detail with a refusal: %+v", tc.asked[i], r)
				}
				if !strings.HasPrefix(got, tc.want[i]) {
					t.Errorf("%s: got %q, want %q", tc.asked[i], got, tc.want[i])
				}
				// The same answer as Lines, claim by claim: the same detail, or the same code and message.
				one, err := call(w, tc.caller, c, nil, func(ctx contractapi.TransactionContextInterface) (*ClaimDetail, error) {
					return c.Lines(ctx, ref(tc.asked[i]))
				})
				var ce *ContractError
				switch {
				case r.Detail != nil && (err != nil || mustJSON(t, one) != mustJSON(t, r.Detail)):
					t.Errorf("%s: batch %+v, Lines %+v %v", tc.asked[i], r.Detail, one, err)
				case r.Detail == nil && (!asContractError(err, &ce) || ce.Code != r.Code || ce.Message != r.Message):
					t.Errorf("%s: batch %s: %s, Lines %v", tc.asked[i], r.Code, r.Message, err)
				}
			}
		})
	}
	out, err := linesBatch(t, w, insurer, "l-1", "l-2")
	mustOK(t, err)
	if out[0].Detail.Coverage != "Coverage/cov-1" || out[1].Detail.Coverage != "Coverage/cov-2" || len(out[1].Detail.Lines) != 2 {
		t.Fatalf("details %+v %+v", out[0].Detail, out[1].Detail)
	}

	many := make([]string, maxBatchClaims+1)
	for i := range many {
		many[i] = ref(fmt.Sprint("many-", i))
	}
	limits := []struct {
		name string
		ids  string
		msg  string
	}{
		{"no claims", `[]`, "1 to 500 claims, not 0"},
		{"null", `null`, "1 to 500 claims, not 0"},
		{"more than 500 claims", mustJSON(t, many), "1 to 500 claims, not 501"},
		{"a claim twice", mustJSON(t, []string{ref("l-1"), ref("l-2"), ref("l-1")}), "claimIds[2]: claim " + ref("l-1") + " appears twice"},
		{"a client claim number", mustJSON(t, []string{ref("l-1"), "CLM-1"}), "claimIds[1] must be an opaque key"},
		{"an upper-case key", mustJSON(t, []string{strings.ToUpper(ref("l-1"))}), "claimIds[0] must be an opaque key"},
		{"not JSON", `[` + ref("l-1"), "claimIds is not valid JSON"},
		{"an object", `{"claimIds": []}`, "claimIds is not valid JSON"},
		{"numbers", `[1, 2]`, "claimIds is not valid JSON"},
		{"trailing data", mustJSON(t, []string{ref("l-1")}) + `[]`, "trailing data"},
	}
	for _, tc := range limits {
		t.Run(tc.name, func(t *testing.T) {
			_, err := call(w, insurer, c, nil, func(ctx contractapi.TransactionContextInterface) ([]ClaimLines, error) {
				return c.LinesBatch(ctx, tc.ids)
			})
			refused(t, w, err, CodeInvalid, tc.msg)
		})
	}
	t.Run("exactly 500 claims", func(t *testing.T) {
		out, err := call(w, insurer, c, nil, func(ctx contractapi.TransactionContextInterface) ([]ClaimLines, error) {
			return c.LinesBatch(ctx, mustJSON(t, many[:maxBatchClaims]))
		})
		mustOK(t, err)
		if len(out) != maxBatchClaims || out[maxBatchClaims-1].ClaimID != many[maxBatchClaims-1] || out[0].Code != CodeNotFound {
			t.Fatalf("%d results, last %+v", len(out), out[len(out)-1])
		}
	})
}

func TestClaimsPayBatch(t *testing.T) {
	hospital, clinic, insurer, insurer2 := client(t, "HospitalMSP"), client(t, "ClinicMSP"), client(t, "InsurerMSP"), client(t, "Insurer2MSP")
	w := newWorld("claims")
	mine := []ClaimSubmission{dated("p-approved", 1), dated("p-partial", 2), dated("p-denied", 3), dated("p-open", 4),
		dated("p-paid", 5), dated("p-euro", 6), dated("p-ins2", 7)}
	mine[5].Currency = "EUR"
	mine[6].Insurer = "Insurer2MSP"
	d := map[string]ClaimDetail{}
	for _, s := range mine {
		d[s.ClaimID] = detail(s.ClaimID)
	}
	_, err := submitBatch(t, w, hospital, mine, d)
	mustOK(t, err)
	_, err = submit(t, w, clinic, dated("p-clinic", 1), detail("p-clinic"))
	mustOK(t, err)
	denied := AdjudicationInput{Lines: []LineAdjudication{
		{Sequence: 1, Outcome: OutcomeDenied, Reasons: []string{"27"}}, {Sequence: 2, Outcome: OutcomeDenied, Reasons: []string{"27"}},
	}}
	partial := AdjudicationInput{Lines: []LineAdjudication{
		{Sequence: 1, Outcome: OutcomeApproved, ApprovedCents: 12500, Reasons: []string{}},
		{Sequence: 2, Outcome: OutcomePartial, ApprovedCents: 10000, Reasons: []string{"45"}},
	}}
	_, err = adjudicateBatch(t, w, insurer, map[string]AdjudicationInput{
		ref("p-approved"): approveAll(0), ref("p-partial"): partial, ref("p-denied"): denied, ref("p-paid"): approveAll(0),
		ref("p-euro"): approveAll(0), ref("p-clinic"): approveAll(0),
	})
	mustOK(t, err)
	_, err = adjudicate(t, w, insurer2, "p-ins2", approveAll(0))
	mustOK(t, err)
	_, err = claimStep(w, insurer, func(c *Claims, ctx contractapi.TransactionContextInterface) (*Claim, error) {
		return c.Pay(ctx, ref("p-paid"), "EFT-1")
	})
	mustOK(t, err)

	asked := []string{"p-approved", "p-partial", "p-denied", "p-open", "p-paid", "p-euro", "p-ins2", "p-clinic", "p-missing"}
	pay, err := payBatch(t, w, insurer, "HospitalMSP", "EFT-2026-03-01", asked...)
	mustOK(t, err)
	if pay.TotalCents != 27500+22500 || pay.Currency != "USD" || len(pay.Lines) != 2 ||
		pay.Lines[0] != (PaymentLine{ref("p-approved"), 27500}) || pay.Lines[1] != (PaymentLine{ref("p-partial"), 22500}) {
		t.Fatalf("payment %+v", pay)
	}
	var sum int64
	for _, l := range pay.Lines {
		sum += l.AmountCents
	}
	if sum != pay.TotalCents {
		t.Fatal("the total does not reconcile with the lines")
	}
	wantRefused := []string{
		"CONFLICT was denied", "CONFLICT only an adjudicated claim", "CONFLICT only an adjudicated claim",
		"CONFLICT this payment is in USD", "FORBIDDEN addressed to Insurer2MSP", "CONFLICT is ClinicMSP's, not HospitalMSP's",
		"NOT_FOUND does not exist",
	}
	if len(pay.Refused) != len(wantRefused) {
		t.Fatalf("refused %+v", pay.Refused)
	}
	for i, r := range pay.Refused {
		code, msg, _ := strings.Cut(wantRefused[i], " ")
		if r.ClaimID != ref(asked[i+2]) || r.Code != code || !strings.Contains(r.Message, msg) {
			t.Errorf("refused[%d] = %+v, want %s %s", i, r, asked[i+2], wantRefused[i])
		}
	}
	last := w.calls[len(w.calls)-1]
	if len(last.events) != 1 || last.events[0].Name != "Claims.PaidBatch" {
		t.Fatalf("wrote %s", last.wrote())
	}
	for _, name := range []string{"p-approved", "p-partial"} {
		if cl := getClaim(t, w, name); cl.Status != StatusPaid || cl.PaymentRef != "EFT-2026-03-01" || cl.PaidCents != cl.ApprovedCents {
			t.Fatalf("%s: %+v", name, cl)
		}
	}
	if cl := getClaim(t, w, "p-euro"); cl.Status != StatusAdjudicated {
		t.Fatalf("a refused claim changed: %+v", cl)
	}
	c := newClaims(testConfig)
	stored, err := call(w, hospital, c, nil, func(ctx contractapi.TransactionContextInterface) (*Payment, error) {
		return c.Payment(ctx, "EFT-2026-03-01")
	})
	mustOK(t, err)
	if mustJSON(t, stored) != mustJSON(t, pay) {
		t.Fatalf("stored %+v", stored)
	}

	// The reference is the payment's: a retry returns it; anything else with it is refused.
	again, err := payBatch(t, w, insurer, "HospitalMSP", "EFT-2026-03-01", asked...)
	mustOK(t, err)
	wroteNothing(t, w)
	if mustJSON(t, again) != mustJSON(t, pay) {
		t.Fatalf("retry %+v", again)
	}
	_, err = payBatch(t, w, insurer, "HospitalMSP", "EFT-2026-03-01", "p-euro")
	refused(t, w, err, CodeConflict, "recorded for another payment")
	_, err = payBatch(t, w, insurer, "ClinicMSP", "EFT-2026-03-01", asked...)
	refused(t, w, err, CodeConflict, "recorded for another payment")
	_, err = claimStep(w, insurer, func(c *Claims, ctx contractapi.TransactionContextInterface) (*Claim, error) {
		return c.Pay(ctx, ref("p-euro"), "EFT-2026-03-01")
	})
	refused(t, w, err, CodeConflict, "batch payment")
	_, err = call(w, hospital, c, nil, func(ctx contractapi.TransactionContextInterface) (*Payment, error) {
		return c.Payment(ctx, "EFT-none")
	})
	refused(t, w, err, CodeNotFound, "no batch payment")

	cases := []struct {
		name     string
		caller   actor
		provider string
		ref      string
		claims   []string
		code     string
		msg      string
	}{
		{"nothing payable", insurer, "HospitalMSP", "EFT-3", []string{"p-denied", "p-open"}, CodeConflict, "no claim of payment EFT-3 can be paid"},
		{"another insurer's claims", insurer2, "HospitalMSP", "EFT-3", []string{"p-euro"}, CodeConflict, "addressed to InsurerMSP"},
		{"provider pays itself", hospital, "HospitalMSP", "EFT-3", []string{"p-euro"}, CodeForbidden, "only insurer orgs"},
		{"peer identity pays", peerOf(t, "InsurerMSP"), "HospitalMSP", "EFT-3", []string{"p-euro"}, CodeForbidden, "may not submit"},
		{"payee is not a provider", insurer, "InsurerMSP", "EFT-3", []string{"p-euro"}, CodeInvalid, "not a provider"},
		{"bad reference", insurer, "HospitalMSP", "EFT 3", []string{"p-euro"}, CodeInvalid, "paymentRef"},
		{"a claim twice", insurer, "HospitalMSP", "EFT-3", []string{"p-euro", "p-euro"}, CodeInvalid, "appears twice"},
		{"no claims", insurer, "HospitalMSP", "EFT-3", []string{}, CodeInvalid, "1 to 1000 claims"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := payBatch(t, w, tc.caller, tc.provider, tc.ref, tc.claims...)
			refused(t, w, err, tc.code, tc.msg)
		})
	}
	t.Run("client claim numbers", func(t *testing.T) {
		_, err := call(w, insurer, c, nil, func(ctx contractapi.TransactionContextInterface) (*Payment, error) {
			return c.PayBatch(ctx, "HospitalMSP", "EFT-3", `["CLM-1"]`)
		})
		refused(t, w, err, CodeInvalid, "claimIds[0] must be an opaque key")
	})
}

func TestClaimsDueForPurge(t *testing.T) {
	hospital, clinic, insurer := client(t, "HospitalMSP"), client(t, "ClinicMSP"), client(t, "InsurerMSP")
	w := newWorld("claims")
	subs := []ClaimSubmission{dated("d-hour", 1), dated("d-day", 2), dated("d-now", 3), dated("d-open", 4), dated("d-cancel", 5)}
	d := map[string]ClaimDetail{}
	for _, s := range subs {
		d[s.ClaimID] = detail(s.ClaimID)
	}
	_, err := submitBatch(t, w, hospital, subs, d)
	mustOK(t, err)
	_, err = adjudicateBatch(t, w, insurer, map[string]AdjudicationInput{
		ref("d-hour"): approveAll(3600), ref("d-day"): approveAll(86400), ref("d-now"): approveAll(0),
	})
	mustOK(t, err)
	_, err = claimStep(w, hospital, func(c *Claims, ctx contractapi.TransactionContextInterface) (*Claim, error) {
		return c.Cancel(ctx, ref("d-cancel"), "withdrawn")
	})
	mustOK(t, err)
	c := newClaims(testConfig)
	due := func(a actor, before time.Time, pageSize int, bookmark string) *ClaimPage {
		t.Helper()
		p, err := call(w, a, c, nil, func(ctx contractapi.TransactionContextInterface) (*ClaimPage, error) {
			return c.DueForPurge(ctx, before.Format(time.RFC3339Nano), pageSize, bookmark)
		})
		mustOK(t, err)
		wroteNothing(t, w)
		return p
	}
	names := func(p *ClaimPage) string {
		var out []string
		for _, cl := range p.Claims {
			for _, n := range []string{"d-hour", "d-day", "d-now", "d-open", "d-cancel"} {
				if ref(n) == cl.ClaimID {
					out = append(out, n)
				}
			}
		}
		return strings.Join(out, ",")
	}
	now := w.now
	if got := names(due(insurer, now, 10, "")); got != "d-now,d-cancel" && got != "d-cancel,d-now" {
		t.Fatalf("due now: %s", got)
	}
	if got := names(due(hospital, now.Add(time.Hour), 10, "")); !strings.HasSuffix(got, ",d-hour") || strings.Count(got, ",") != 2 {
		t.Fatalf("due in an hour (the provider's view): %s", got)
	}
	if got := names(due(clinic, now.Add(48*time.Hour), 10, "")); got != "" {
		t.Fatalf("the clinic is party to none: %s", got)
	}
	first := due(insurer, now.Add(48*time.Hour), 2, "")
	second := due(insurer, now.Add(48*time.Hour), 2, first.Bookmark)
	if len(first.Claims) != 2 || first.Bookmark == "" || names(second) != "d-hour,d-day" {
		t.Fatalf("pages %s | %s", names(first), names(second))
	}
	// A purged claim is no longer due; nothing purgeable yet is not listed.
	_, err = claimStep(w, insurer, func(c *Claims, ctx contractapi.TransactionContextInterface) (*Claim, error) {
		return c.PurgeLines(ctx, ref("d-now"))
	})
	mustOK(t, err)
	if got := names(due(insurer, now, 10, "")); got != "d-cancel" {
		t.Fatalf("after purging d-now: %s", got)
	}
	_, err = call(w, insurer, c, nil, func(ctx contractapi.TransactionContextInterface) (*ClaimPage, error) {
		return c.DueForPurge(ctx, "tomorrow", 10, "")
	})
	refused(t, w, err, CodeInvalid, "beforeTime")
	_, err = call(w, insurer, c, nil, func(ctx contractapi.TransactionContextInterface) (*ClaimPage, error) {
		return c.DueForPurge(ctx, now.Format(time.RFC3339), 0, "")
	})
	refused(t, w, err, CodeInvalid, "pageSize")
}
