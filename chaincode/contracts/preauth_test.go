package contracts

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hyperledger/fabric-contract-api-go/v2/contractapi"
)

func preauth(name, priority string) ClaimSubmission {
	s := submission(name)
	s.Use, s.Priority, s.ServiceDate = UsePreauth, priority, "2026-03-20" // a planned service
	return s
}

func decide(t *testing.T, w *world, a actor, name string, in PreauthDecisionInput) (*Claim, error) {
	t.Helper()
	c := newClaims(testConfig)
	return call(w, a, c, nil, func(ctx contractapi.TransactionContextInterface) (*Claim, error) {
		return c.DecidePreauth(ctx, ref(name), mustJSON(t, in))
	})
}

func appeal(w *world, a actor, name string) (*Claim, error) {
	c := newClaims(testConfig)
	return call(w, a, c, nil, func(ctx contractapi.TransactionContextInterface) (*Claim, error) {
		return c.AppealPreauth(ctx, ref(name), digest2)
	})
}

var (
	approve = PreauthDecisionInput{Decision: DecisionApproved, PreAuthRef: "PA-1"}
	deny    = PreauthDecisionInput{Decision: DecisionDenied, Reason: "N386"}
	pend    = PreauthDecisionInput{Decision: DecisionPended, Reason: "A1"}
)

func TestPreauthSubmission(t *testing.T) {
	hospital := client(t, "HospitalMSP")
	w := newWorld("claims")
	cl, err := submit(t, w, hospital, preauth("pa-x", "expedited"), detail("pa-x"))
	mustOK(t, err)
	if cl.Use != UsePreauth || cl.Status != StatusSubmitted || cl.Priority != "expedited" ||
		cl.DueAt != timeText(w.now.Add(72*time.Hour)) {
		t.Fatalf("expedited %+v", cl)
	}
	if ev := lastEvent(t, w); ev.Name != "Claims.PreauthSubmitted" || !strings.Contains(string(ev.Payload), `"dueAt"`) {
		t.Fatalf("event %s %s", ev.Name, ev.Payload)
	}
	cl, err = submit(t, w, hospital, preauth("pa-s", "standard"), detail("pa-s"))
	mustOK(t, err)
	if cl.DueAt != timeText(w.now.AddDate(0, 0, 7)) {
		t.Fatalf("standard due %s", cl.DueAt)
	}
	// The same service asked again is not a duplicate claim; a claim after it is not a duplicate of it either.
	_, err = submit(t, w, hospital, preauth("pa-s2", "standard"), detail("pa-s2"))
	mustOK(t, err)
	claim := submission("cl-after")
	_, err = submit(t, w, hospital, claim, detail("cl-after"))
	mustOK(t, err)
	if ev := lastEvent(t, w); ev.Name != "Claims.Submitted" {
		t.Fatalf("a claim's event %s", ev.Name)
	}

	cases := []struct {
		name string
		sub  ClaimSubmission
		msg  string
	}{
		{"no priority", preauth("pa-1", ""), "priority"},
		{"unknown priority", preauth("pa-1", "urgent"), "priority"},
		{"a claim with a priority", func() ClaimSubmission { s := submission("pa-1"); s.Priority = "expedited"; return s }(), "a claim has none"},
		{"unknown use", func() ClaimSubmission { s := submission("pa-1"); s.Use = "predetermination"; return s }(), "use"},
		{"a claim for a future service", func() ClaimSubmission { s := submission("pa-1"); s.ServiceDate = "2026-03-20"; return s }(), "future"},
		{"a service years ahead", func() ClaimSubmission { s := preauth("pa-1", "standard"); s.ServiceDate = "2028-04-01"; return s }(), "two years"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := submit(t, w, hospital, tc.sub, detail("pa-1"))
			refused(t, w, err, CodeInvalid, tc.msg)
		})
	}
}

func TestPreauthDecisionsAndAppeal(t *testing.T) {
	hospital, insurer := client(t, "HospitalMSP"), client(t, "InsurerMSP")
	w := newWorld("claims")
	start := w.now
	_, err := submit(t, w, hospital, preauth("pa-1", "expedited"), detail("pa-1"))
	mustOK(t, err)

	// Claims steps do not apply to a prior authorisation, nor its steps to a claim.
	_, err = adjudicate(t, w, insurer, "pa-1", approveAll(0))
	refused(t, w, err, CodeConflict, "decide it with DecidePreauth")
	_, err = submit(t, w, hospital, submission("cl-1"), detail("cl-1"))
	mustOK(t, err)
	_, err = decide(t, w, insurer, "cl-1", approve)
	refused(t, w, err, CodeConflict, "not a prior authorisation request")
	_, err = appeal(w, hospital, "cl-1")
	refused(t, w, err, CodeConflict, "not a prior authorisation request")

	for _, tc := range []struct {
		name string
		in   PreauthDecisionInput
		msg  string
	}{
		{"a denial without a reason", PreauthDecisionInput{Decision: DecisionDenied}, "specific reason code"},
		{"a denial with prose", PreauthDecisionInput{Decision: DecisionDenied, Reason: "not medically necessary"}, "reason code"},
		{"an approval without its number", PreauthDecisionInput{Decision: DecisionApproved}, "preAuthRef"},
		{"a number on a denial", PreauthDecisionInput{Decision: DecisionDenied, Reason: "N386", PreAuthRef: "PA-1"}, "approval only"},
		{"retention on a pend", PreauthDecisionInput{Decision: DecisionPended, RetentionSeconds: 5}, "not by pending"},
		{"unknown decision", PreauthDecisionInput{Decision: "partial"}, "approved, denied or pended"},
	} {
		_, err := decide(t, w, insurer, "pa-1", tc.in)
		refused(t, w, err, CodeInvalid, tc.msg)
	}

	// Pended after 10 hours, denied after 80 (late: expedited is due in 72).
	w.now = start.Add(10 * time.Hour)
	cl, err := decide(t, w, insurer, "pa-1", pend)
	mustOK(t, err)
	if cl.Status != StatusPended || cl.DecidedAt != "" || len(cl.Decisions) != 1 || cl.Decisions[0].Late {
		t.Fatalf("pended %+v", cl)
	}
	if ev := lastEvent(t, w); ev.Name != "Claims.PreauthDecided" {
		t.Fatalf("event %s", ev.Name)
	}
	_, err = appeal(w, hospital, "pa-1")
	refused(t, w, err, CodeConflict, "only a denial is appealed")
	w.now = start.Add(80 * time.Hour)
	cl, err = decide(t, w, insurer, "pa-1", deny)
	mustOK(t, err)
	if cl.Status != StatusDecided || cl.Outcome != OutcomeDenied || cl.DenialReason != "N386" || cl.DecidedAt != timeText(w.now) ||
		!cl.Decisions[1].Late || cl.ApprovedCents != 0 {
		t.Fatalf("denied %+v", cl)
	}
	_, err = decide(t, w, insurer, "pa-1", approve)
	refused(t, w, err, CodeConflict, "nothing to decide")

	// The provider appeals once; the request is due again from the appeal.
	_, err = appeal(w, insurer, "pa-1")
	refused(t, w, err, CodeForbidden, "only provider orgs")
	_, err = appeal(w, client(t, "ClinicMSP"), "pa-1")
	refused(t, w, err, CodeForbidden, "submitted by HospitalMSP")
	w.now = start.Add(90 * time.Hour)
	cl, err = appeal(w, hospital, "pa-1")
	mustOK(t, err)
	if cl.Status != StatusAppealed || cl.AppealedAt != timeText(w.now) || cl.DueAt != timeText(w.now.Add(72*time.Hour)) ||
		cl.AppealDigest != digest2 || cl.PurgeAfter != "" {
		t.Fatalf("appealed %+v", cl)
	}
	if ev := lastEvent(t, w); ev.Name != "Claims.PreauthAppealed" {
		t.Fatalf("event %s", ev.Name)
	}
	_, err = claimStep(w, insurer, func(c *Claims, ctx contractapi.TransactionContextInterface) (*Claim, error) {
		return c.PurgeLines(ctx, ref("pa-1"))
	})
	refused(t, w, err, CodeConflict, "not decided yet")
	w.now = start.Add(100 * time.Hour)
	cl, err = decide(t, w, insurer, "pa-1", PreauthDecisionInput{Decision: DecisionApproved, PreAuthRef: "PA-77", RetentionSeconds: 60})
	mustOK(t, err)
	last := cl.Decisions[len(cl.Decisions)-1]
	if cl.Outcome != OutcomeApproved || cl.PreAuthRef != "PA-77" || cl.DenialReason != "" || cl.ApprovedCents != cl.TotalCents ||
		cl.AppealDecidedAt != timeText(w.now) || cl.DecidedAt != timeText(start.Add(80*time.Hour)) || !last.OnAppeal || last.Late {
		t.Fatalf("approved on appeal %+v", cl)
	}
	_, err = appeal(w, hospital, "pa-1")
	refused(t, w, err, CodeConflict, "appealed once already")
	_, err = claimStep(w, insurer, func(c *Claims, ctx contractapi.TransactionContextInterface) (*Claim, error) {
		return c.Pay(ctx, ref("pa-1"), "EFT-1")
	})
	refused(t, w, err, CodeConflict, "nothing to pay")
	w.now = w.now.Add(time.Minute)
	_, err = claimStep(w, insurer, func(c *Claims, ctx contractapi.TransactionContextInterface) (*Claim, error) {
		return c.PurgeLines(ctx, ref("pa-1"))
	})
	mustOK(t, err)
}

func TestPreauthCancel(t *testing.T) {
	hospital, insurer := client(t, "HospitalMSP"), client(t, "InsurerMSP")
	w := newWorld("claims")
	_, err := submit(t, w, hospital, preauth("pa-1", "standard"), detail("pa-1"))
	mustOK(t, err)
	_, err = decide(t, w, insurer, "pa-1", pend)
	mustOK(t, err)
	cl, err := claimStep(w, hospital, func(c *Claims, ctx contractapi.TransactionContextInterface) (*Claim, error) {
		return c.Cancel(ctx, ref("pa-1"), "not-needed")
	})
	mustOK(t, err)
	if cl.Status != StatusCancelled || cl.DueAt == "" {
		t.Fatalf("cancelled %+v", cl)
	}
	_, err = decide(t, w, insurer, "pa-1", approve)
	refused(t, w, err, CodeConflict, "nothing to decide")
}

// TestPreauthMetricsFromTheChain computes an insurer's prior authorisation metrics the way a report would: by
// reading PreauthsByPeriod page by page.
func TestPreauthMetricsFromTheChain(t *testing.T) {
	hospital, insurer, insurer2 := client(t, "HospitalMSP"), client(t, "InsurerMSP"), client(t, "Insurer2MSP")
	w := newWorld("claims")
	start := w.now
	type step struct {
		after time.Duration
		do    func(name string) error
	}
	plan := []struct {
		name, priority string
		steps          []step
	}{
		{"m-1", "expedited", []step{{24 * time.Hour, func(n string) error { _, err := decide(t, w, insurer, n, approve); return err }}}},
		{"m-2", "expedited", []step{{48 * time.Hour, func(n string) error { _, err := decide(t, w, insurer, n, deny); return err }}}},
		{"m-3", "standard", []step{
			{24 * time.Hour, func(n string) error { _, err := decide(t, w, insurer, n, pend); return err }},
			{96 * time.Hour, func(n string) error { _, err := decide(t, w, insurer, n, deny); return err }},
			{100 * time.Hour, func(n string) error { _, err := appeal(w, hospital, n); return err }},
			{120 * time.Hour, func(n string) error { _, err := decide(t, w, insurer, n, approve); return err }},
		}},
		{"m-4", "standard", []step{{192 * time.Hour, func(n string) error { _, err := decide(t, w, insurer, n, approve); return err }}}},
		{"m-5", "standard", nil}, // still open
	}
	for i, p := range plan {
		w.now = start.Add(time.Duration(i) * time.Minute)
		_, err := submit(t, w, hospital, preauth(p.name, p.priority), detail(p.name))
		mustOK(t, err)
	}
	_, err := func() (*Claim, error) {
		s := preauth("m-other", "standard")
		s.Insurer = "Insurer2MSP"
		return submit(t, w, hospital, s, detail("m-other"))
	}()
	mustOK(t, err)
	var steps []struct {
		at   time.Time
		name string
		do   func(string) error
	}
	for i, p := range plan {
		for _, s := range p.steps {
			steps = append(steps, struct {
				at   time.Time
				name string
				do   func(string) error
			}{start.Add(time.Duration(i)*time.Minute + s.after), p.name, s.do})
		}
	}
	sort.Slice(steps, func(i, j int) bool { return steps[i].at.Before(steps[j].at) })
	for _, s := range steps {
		w.now = s.at
		mustOK(t, s.do(s.name))
	}
	_, err = decide(t, w, insurer2, "m-other", approve)
	mustOK(t, err)

	c := newClaims(testConfig)
	var all []Claim
	bookmark := ""
	for pages := 0; pages < 10; pages++ {
		p, err := call(w, insurer, c, nil, func(ctx contractapi.TransactionContextInterface) (*ClaimPage, error) {
			return c.PreauthsByPeriod(ctx, "InsurerMSP", "2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z", 2, bookmark)
		})
		mustOK(t, err)
		all = append(all, p.Claims...)
		if bookmark = p.Bookmark; bookmark == "" {
			break
		}
	}
	if len(all) != 5 {
		t.Fatalf("%d requests read for InsurerMSP", len(all))
	}
	approved, denied, approvedOnAppeal, open, late := 0, 0, 0, 0, 0
	hours := map[string][]float64{}
	for _, cl := range all {
		switch {
		case cl.Status != StatusDecided:
			open++
			continue
		case cl.Outcome == OutcomeApproved && cl.AppealedAt != "":
			approvedOnAppeal++
		case cl.Outcome == OutcomeApproved:
			approved++
		default:
			denied++
		}
		submitted, _ := time.Parse(time.RFC3339Nano, cl.SubmittedAt)
		decided, _ := time.Parse(time.RFC3339Nano, cl.DecidedAt)
		hours[cl.Priority] = append(hours[cl.Priority], decided.Sub(submitted).Hours())
		for _, d := range cl.Decisions {
			if d.Late {
				late++
			}
		}
	}
	if approved != 2 || denied != 1 || approvedOnAppeal != 1 || open != 1 || late != 1 {
		t.Fatalf("approved %d denied %d on appeal %d open %d late %d", approved, denied, approvedOnAppeal, open, late)
	}
	mean := func(xs []float64) float64 {
		s := 0.0
		for _, x := range xs {
			s += x
		}
		return s / float64(len(xs))
	}
	if got := mean(hours["expedited"]); got != 36 {
		t.Errorf("expedited mean decision time %v h", got)
	}
	if got := mean(hours["standard"]); got != 144 { // 96 h (m-3's first denial) and 192 h (m-4, late)
		t.Errorf("standard mean decision time %v h", got)
	}

	_, err = call(w, insurer, c, nil, func(ctx contractapi.TransactionContextInterface) (*ClaimPage, error) {
		return c.PreauthsByPeriod(ctx, "HospitalMSP", "2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z", 2, "")
	})
	refused(t, w, err, CodeInvalid, "not an insurer")
	_, err = call(w, insurer, c, nil, func(ctx contractapi.TransactionContextInterface) (*ClaimPage, error) {
		return c.PreauthsByPeriod(ctx, "InsurerMSP", "2026-04-01T00:00:00Z", "2026-03-01T00:00:00Z", 2, "")
	})
	refused(t, w, err, CodeInvalid, "after from")
	raw, _ := json.Marshal(all[0])
	if !strings.Contains(string(raw), `"decisions":[`) {
		t.Fatalf("a decided request's JSON %s", raw)
	}
}

func decideBatch(t *testing.T, w *world, a actor, decisions map[string]PreauthDecisionInput) (*PreauthDecidedBatch, error) {
	t.Helper()
	c := newClaims(testConfig)
	tm := map[string][]byte{transientPreauth: []byte(mustJSON(t, decisions))}
	return call(w, a, c, tm, func(ctx contractapi.TransactionContextInterface) (*PreauthDecidedBatch, error) {
		return c.DecidePreauthBatch(ctx)
	})
}

func seen(n int, in PreauthDecisionInput) PreauthDecisionInput {
	in.DecisionsSeen = &n
	return in
}

func TestPreauthRequestsInABatch(t *testing.T) {
	hospital := client(t, "HospitalMSP")
	w := newWorld("claims")
	// A claim and requests filed together: each request gets its due time and its index entry; the same service
	// asked twice is not a duplicate, whereas a claim billed twice is.
	subs := []ClaimSubmission{preauth("pb-1", "expedited"), preauth("pb-2", "standard"), preauth("pb-3", "standard"),
		submission("cb-1"), submission("cb-2")}
	_, err := submitBatch(t, w, hospital, subs, details(subs))
	mustOK(t, err)
	ev := lastEvent(t, w)
	var batch SubmittedBatch
	mustOK(t, json.Unmarshal(ev.Payload, &batch))
	if ev.Name != "Claims.SubmittedBatch" || len(batch.Claims) != 5 {
		t.Fatalf("event %s %s", ev.Name, ev.Payload)
	}
	for i, tc := range []struct {
		name     string
		priority string
		due      time.Duration
	}{{"pb-1", "expedited", 72 * time.Hour}, {"pb-2", "standard", 7 * 24 * time.Hour}, {"pb-3", "standard", 7 * 24 * time.Hour}} {
		dueAt := timeText(w.now.Add(tc.due))
		// The event lists the request as filed (in submission order), so a listener sees its use and due time.
		if e := batch.Claims[i]; e.ClaimID != ref(tc.name) || e.Use != UsePreauth || e.Priority != tc.priority || e.DueAt != dueAt {
			t.Errorf("%s in the event: %+v", tc.name, e)
		}
		cl := getClaim(t, w, tc.name)
		if cl.Use != UsePreauth || cl.Priority != tc.priority || cl.DueAt != dueAt {
			t.Errorf("%s: %+v", tc.name, cl)
		}
		if got := string(w.state[preauthKey(cl)]); got != cl.ClaimID {
			t.Errorf("%s: index entry %q holds %q", tc.name, preauthKey(cl), got)
		}
		if d := privateDetail(t, w, tc.name); d.DuplicateOf != "" || len(d.Edits) != 0 {
			t.Errorf("%s is not a duplicate: %+v", tc.name, d)
		}
	}
	for _, name := range []string{"cb-1", "cb-2"} {
		if cl := getClaim(t, w, name); cl.Use != UseClaim || cl.Priority != "" || cl.DueAt != "" {
			t.Errorf("%s: %+v", name, cl)
		}
		if _, indexed := w.state[preauthKey(getClaim(t, w, name))]; indexed {
			t.Errorf("claim %s is in the prior authorisation index", name)
		}
	}
	if d := privateDetail(t, w, "cb-2"); d.DuplicateOf != ref("cb-1") {
		t.Fatalf("cb-2 duplicates cb-1: %+v", d)
	}
	c := newClaims(testConfig)
	page, err := call(w, hospital, c, nil, func(ctx contractapi.TransactionContextInterface) (*ClaimPage, error) {
		return c.PreauthsByPeriod(ctx, "InsurerMSP", timeText(w.now.Add(-time.Hour)), timeText(w.now.Add(time.Hour)), 10, "")
	})
	mustOK(t, err)
	if len(page.Claims) != 3 {
		t.Fatalf("indexed %d requests", len(page.Claims))
	}
}

func TestPreauthDecidedInABatch(t *testing.T) {
	hospital, insurer := client(t, "HospitalMSP"), client(t, "InsurerMSP")
	w := newWorld("claims")
	start := w.now
	subs := []ClaimSubmission{preauth("d-approve", "standard"), preauth("d-deny", "standard"),
		preauth("d-pend", "standard"), preauth("d-done", "standard"), preauth("d-invalid", "standard"),
		preauth("d-moved", "standard"), preauth("d-late", "expedited"), preauth("d-appealed", "standard"),
		submission("d-claim")}
	other := preauth("d-other", "standard")
	other.Insurer = "Insurer2MSP"
	subs = append(subs, other)
	_, err := submitBatch(t, w, hospital, subs[:len(subs)-1], details(subs[:len(subs)-1]))
	mustOK(t, err)
	_, err = submit(t, w, hospital, other, detail("d-other"))
	mustOK(t, err)
	for _, name := range []string{"d-done", "d-appealed"} {
		_, err = decide(t, w, insurer, name, deny)
		mustOK(t, err)
	}
	_, err = appeal(w, hospital, "d-appealed")
	mustOK(t, err)
	_, err = decide(t, w, insurer, "d-moved", pend) // pended by a first run; a rerun's decision saw none
	mustOK(t, err)

	w.now = start.Add(80 * time.Hour) // the expedited request is decided late
	decisions := map[string]PreauthDecisionInput{
		ref("d-approve"): seen(0, approve), ref("d-deny"): deny, ref("d-pend"): seen(0, pend),
		ref("d-done"): approve, ref("d-moved"): seen(0, pend),
		ref("d-late"): approve, ref("d-appealed"): seen(1, approve), ref("d-claim"): approve,
		ref("d-other"): approve, ref("d-missing"): approve,
	}
	out, err := decideBatch(t, w, insurer, decisions)
	mustOK(t, err)
	want := map[string]string{
		ref("d-approve"):  StatusDecided,
		ref("d-deny"):     StatusDecided,
		ref("d-pend"):     StatusPended,
		ref("d-late"):     StatusDecided,
		ref("d-appealed"): StatusDecided,
		ref("d-done"):     "CONFLICT: prior authorisation " + ref("d-done") + " is decided",
		ref("d-moved"):    "CONFLICT: prior authorisation " + ref("d-moved") + " has had 1 decisions, not the 0",
		ref("d-claim"):    "CONFLICT: claim " + ref("d-claim") + " is not a prior authorisation request",
		ref("d-other"):    "FORBIDDEN: claim " + ref("d-other") + " is addressed to Insurer2MSP",
		ref("d-missing"):  "NOT_FOUND: claim " + ref("d-missing") + " does not exist",
	}
	wantResults(t, out.Results, want)
	last := w.calls[len(w.calls)-1]
	if len(last.events) != 1 || last.events[0].Name != "Claims.PreauthDecidedBatch" {
		t.Fatalf("wrote %s", last.wrote())
	}
	var ev PreauthDecidedBatch
	mustOK(t, json.Unmarshal(last.events[0].Payload, &ev))
	if len(ev.Results) != 10 || ev.TxID != last.txID || ev.Insurer != "InsurerMSP" {
		t.Fatalf("event %+v", ev)
	}
	// The event and the answer list the recorded requests only, in claim id order, as the results call them.
	recorded := []string{ref("d-approve"), ref("d-deny"), ref("d-pend"), ref("d-late"), ref("d-appealed")}
	sort.Strings(recorded)
	if len(ev.Claims) != len(recorded) || len(out.Claims) != len(recorded) {
		t.Fatalf("event lists %d claims, answer %d; want %d", len(ev.Claims), len(out.Claims), len(recorded))
	}
	for i, id := range recorded {
		if ev.Claims[i].ClaimID != id || out.Claims[i].ClaimID != id || ev.Claims[i].TxID != last.txID {
			t.Errorf("claims[%d]: event %s answer %s, want %s", i, ev.Claims[i].ClaimID, out.Claims[i].ClaimID, id)
		}
	}
	// Only the recorded requests were written (the claim, their purge index entries): a refused one is untouched.
	for k := range last.writes {
		ofRecorded := false
		for _, id := range recorded {
			ofRecorded = ofRecorded || strings.Contains(k, id)
		}
		if !ofRecorded {
			t.Errorf("the batch wrote %q, which is no recorded request's", k)
		}
	}
	get := newClaims(testConfig)
	_, err = call(w, insurer, get, nil, func(ctx contractapi.TransactionContextInterface) (*Claim, error) {
		return get.Get(ctx, ref("d-missing"))
	})
	wantErr(t, err, CodeNotFound, "does not exist") // a decision on an unknown id creates nothing
	if len(last.pwrites) != 0 {
		t.Errorf("the batch wrote private data: %s", last.wrote())
	}
	checks := []struct {
		name string
		ok   func(*Claim) bool
	}{
		{"d-approve", func(cl *Claim) bool {
			return cl.Outcome == DecisionApproved && cl.PreAuthRef == "PA-1" && cl.ApprovedCents == cl.TotalCents && cl.DecidedAt != ""
		}},
		{"d-deny", func(cl *Claim) bool {
			return cl.Outcome == DecisionDenied && cl.DenialReason == "N386" && cl.ApprovedCents == 0
		}},
		{"d-pend", func(cl *Claim) bool { return cl.Status == StatusPended && cl.DecidedAt == "" && len(cl.Decisions) == 1 }},
		{"d-late", func(cl *Claim) bool { return cl.Decisions[0].Late }},
		{"d-approve", func(cl *Claim) bool { return !cl.Decisions[0].Late }},
		{"d-appealed", func(cl *Claim) bool {
			return cl.Outcome == DecisionApproved && cl.AppealDecidedAt == timeText(w.now) && cl.Decisions[1].OnAppeal
		}},
		{"d-moved", func(cl *Claim) bool { return cl.Status == StatusPended && len(cl.Decisions) == 1 }}, // unchanged
		{"d-invalid", func(cl *Claim) bool { return cl.Status == StatusSubmitted && len(cl.Decisions) == 0 }},
		{"d-done", func(cl *Claim) bool { return cl.Outcome == DecisionDenied && len(cl.Decisions) == 1 }},
		{"d-claim", func(cl *Claim) bool {
			return cl.Status == StatusSubmitted && cl.Outcome == "" && len(cl.Decisions) == 0
		}},
		{"d-other", func(cl *Claim) bool { return cl.Status == StatusSubmitted && len(cl.Decisions) == 0 }},
	}
	for _, tc := range checks {
		if cl := getClaim(t, w, tc.name); !tc.ok(cl) {
			t.Errorf("%s: %+v", tc.name, cl)
		}
	}

	// Nothing decidable: the results say why, nothing is written, nothing is emitted.
	out, err = decideBatch(t, w, insurer, map[string]PreauthDecisionInput{ref("d-approve"): approve})
	mustOK(t, err)
	wroteNothing(t, w)
	if len(out.Results) != 1 || out.Results[0].Code != CodeConflict || len(out.Claims) != 0 {
		t.Fatalf("%+v", out)
	}
	many := map[string]PreauthDecisionInput{}
	for i := 0; i < 501; i++ {
		many[ref(fmt.Sprint("m-", i))] = approve
	}
	c := newClaims(testConfig)
	for _, tc := range []struct {
		name   string
		caller actor
		tm     map[string][]byte
		code   string
		msg    string
	}{
		{"a provider", hospital, map[string][]byte{transientPreauth: []byte(mustJSON(t, decisions))}, CodeForbidden, "only insurer orgs"},
		{"a peer", peerOf(t, "InsurerMSP"), map[string][]byte{transientPreauth: []byte(mustJSON(t, decisions))}, CodeForbidden, "may not submit"},
		{"no decisions", insurer, map[string][]byte{transientPreauth: []byte(`{}`)}, CodeInvalid, "1 to 500 decisions, not 0"},
		{"too many", insurer, map[string][]byte{transientPreauth: []byte(mustJSON(t, many))}, CodeInvalid, "1 to 500 decisions, not 501"},
		{"unknown field", insurer, map[string][]byte{transientPreauth: []byte(`{"x": {"decision": "approved", "extra": 1}}`)}, CodeInvalid, "unknown field"},
		{"missing", insurer, nil, CodeInvalid, `transient data "decisions" is missing`},
		// The caller's own text is refused with the call, never echoed in a public result.
		{"a client's claim number", insurer, map[string][]byte{transientPreauth: []byte(mustJSON(t, map[string]PreauthDecisionInput{
			ref("d-invalid"): approve, "MRN-12345": approve,
		}))}, CodeInvalid, "claimId must be an opaque key"},
		{"an invalid decision", insurer, map[string][]byte{transientPreauth: []byte(mustJSON(t, map[string]PreauthDecisionInput{
			ref("d-invalid"): {Decision: DecisionDenied, Reason: "patient Jane Doe"}, ref("d-late"): approve,
		}))}, CodeInvalid, "decisions[" + ref("d-invalid") + "]: reason"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := call(w, tc.caller, c, tc.tm, func(ctx contractapi.TransactionContextInterface) (*PreauthDecidedBatch, error) {
				return c.DecidePreauthBatch(ctx)
			})
			refused(t, w, err, tc.code, tc.msg)
		})
	}
}
