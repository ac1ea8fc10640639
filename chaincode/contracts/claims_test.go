package contracts

import (
	"strings"
	"testing"
	"time"

	"github.com/hyperledger/fabric-contract-api-go/v2/contractapi"
)

var salt = strings.Repeat("5a", 16)

func submission(id string) ClaimSubmission {
	return ClaimSubmission{ClaimID: ref(id), Patient: patientA, Insurer: "InsurerMSP", ServiceDate: "2026-02-27",
		Currency: "USD", TotalCents: 27500, Digest: digest1}
}

func detail(id string) ClaimDetail {
	return ClaimDetail{ClaimID: ref(id), Coverage: "Coverage/cov-1", Salt: salt, Lines: []ClaimLine{
		{Sequence: 1, Code: "99213", Quantity: 1, UnitPriceCents: 12500, NetCents: 12500},
		{Sequence: 2, Code: "80053", Quantity: 2, UnitPriceCents: 7500, NetCents: 15000},
	}}
}

func submit(t *testing.T, w *world, a actor, s ClaimSubmission, d ClaimDetail) (*Claim, error) {
	t.Helper()
	c := newClaims(testConfig)
	tm := map[string][]byte{transientClaim: []byte(mustJSON(t, d))}
	return call(w, a, c, tm, func(ctx contractapi.TransactionContextInterface) (*Claim, error) {
		return c.Submit(ctx, mustJSON(t, s))
	})
}

// privateDetail is a claim's private detail as its insurer reads it.
func privateDetail(t *testing.T, w *world, id string) *ClaimDetail {
	t.Helper()
	c := newClaims(testConfig)
	got, err := call(w, client(t, "InsurerMSP"), c, nil, func(ctx contractapi.TransactionContextInterface) (*ClaimDetail, error) {
		return c.Lines(ctx, ref(id))
	})
	mustOK(t, err)
	return got
}

func adjudicate(t *testing.T, w *world, a actor, id string, in AdjudicationInput) (*Claim, error) {
	t.Helper()
	c := newClaims(testConfig)
	tm := map[string][]byte{transientAdjudge: []byte(mustJSON(t, in))}
	return call(w, a, c, tm, func(ctx contractapi.TransactionContextInterface) (*Claim, error) {
		return c.Adjudicate(ctx, ref(id))
	})
}

func claimStep(w *world, a actor, fn func(c *Claims, ctx contractapi.TransactionContextInterface) (*Claim, error)) (*Claim, error) {
	c := newClaims(testConfig)
	return call(w, a, c, nil, func(ctx contractapi.TransactionContextInterface) (*Claim, error) { return fn(c, ctx) })
}

func approveAll(retention int64) AdjudicationInput {
	return AdjudicationInput{RetentionSeconds: retention, Lines: []LineAdjudication{
		{Sequence: 1, Outcome: OutcomeApproved, ApprovedCents: 12500, Reasons: []string{}},
		{Sequence: 2, Outcome: OutcomeApproved, ApprovedCents: 15000, Reasons: []string{}},
	}}
}

func TestClaimsSubmitValidation(t *testing.T) {
	cases := []struct {
		name   string
		caller string
		sub    func(*ClaimSubmission)
		det    func(*ClaimDetail)
		code   string
		msg    string
	}{
		{"insurer cannot submit", "InsurerMSP", nil, nil, CodeForbidden, "only provider orgs"},
		{"pharma cannot submit", "PharmaMSP", nil, nil, CodeForbidden, "only provider orgs"},
		{"client claim number instead of a key", "", func(s *ClaimSubmission) { s.ClaimID = "CLM-2026-0001" }, nil, CodeInvalid, "claimId must be an opaque key"},
		{"patient name", "", func(s *ClaimSubmission) { s.Patient = "John Smith" }, nil, CodeInvalid, "pseudonym"},
		{"insurer not an insurer", "", func(s *ClaimSubmission) { s.Insurer = "ClinicMSP" }, nil, CodeInvalid, "not an insurer"},
		{"future service date", "", func(s *ClaimSubmission) { s.ServiceDate = "2026-03-02" }, nil, CodeInvalid, "future"},
		{"bad date", "", func(s *ClaimSubmission) { s.ServiceDate = "27/02/2026" }, nil, CodeInvalid, "YYYY-MM-DD"},
		{"bad currency", "", func(s *ClaimSubmission) { s.Currency = "usd" }, nil, CodeInvalid, "ISO 4217"},
		{"zero total", "", func(s *ClaimSubmission) { s.TotalCents = 0 }, nil, CodeInvalid, "totalCents"},
		{"total differs from lines", "", func(s *ClaimSubmission) { s.TotalCents = 27501 }, nil, CodeInvalid, "sum of the lines"},
		{"no salt", "", nil, func(d *ClaimDetail) { d.Salt = "" }, CodeInvalid, "salt"},
		{"transient for another claim", "", nil, func(d *ClaimDetail) { d.ClaimID = ref("other") }, CodeInvalid, "does not match"},
		{"no lines", "", nil, func(d *ClaimDetail) { d.Lines = nil }, CodeInvalid, "1 to 999 lines"},
		{"repeated sequence", "", nil, func(d *ClaimDetail) { d.Lines[1].Sequence = 1 }, CodeInvalid, "sequence"},
		{"bad code", "", nil, func(d *ClaimDetail) { d.Lines[0].Code = "" }, CodeInvalid, "billing code"},
		{"net is not qty x price", "", nil, func(d *ClaimDetail) { d.Lines[1].NetCents = 14000 }, CodeInvalid, "quantity x unitPriceCents"},
		{"zero quantity", "", nil, func(d *ClaimDetail) { d.Lines[0].Quantity = 0 }, CodeInvalid, "quantity"},
		{"bad coverage ref", "", nil, func(d *ClaimDetail) { d.Coverage = "" }, CodeInvalid, "Coverage"},
		{"a line without charge and no edit", "", func(s *ClaimSubmission) { s.TotalCents = 15000 }, func(d *ClaimDetail) { d.Lines[0].UnitPriceCents, d.Lines[0].NetCents = 0, 0 }, CodeInvalid, "no charge"},
		{"an edit of a line the claim lacks", "", nil, func(d *ClaimDetail) { d.Edits = []ClaimEdit{{Sequence: 9, Reason: "16", Remark: "M79"}} }, CodeInvalid, "does not have"},
		{"an edit without a remark code", "", nil, func(d *ClaimDetail) { d.Edits = []ClaimEdit{{Reason: "16", Remark: "missing"}} }, CodeInvalid, "remark"},
		{"an edit without a reason code", "", nil, func(d *ClaimDetail) { d.Edits = []ClaimEdit{{Reason: "sixteen", Remark: "M54"}} }, CodeInvalid, "reason"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld("claims")
			s, d := submission("cl-1"), detail("cl-1")
			if tc.sub != nil {
				tc.sub(&s)
			}
			if tc.det != nil {
				tc.det(&d)
			}
			caller := "HospitalMSP"
			if tc.caller != "" {
				caller = tc.caller
			}
			_, err := submit(t, w, client(t, caller), s, d)
			refused(t, w, err, tc.code, tc.msg)
		})
	}
	t.Run("a claim as the EHR sent it goes on chain with its front-end edits", func(t *testing.T) {
		w := newWorld("claims")
		s, d := submission("cl-2"), detail("cl-2")
		s.TotalCents = 99999 // the lines do not add up to it ...
		d.Lines[0].UnitPriceCents, d.Lines[0].NetCents = 0, 0
		d.Lines[1].UnitPriceCents = 0 // ... one line has no charge, one a net amount only
		d.Edits = []ClaimEdit{{Sequence: 0, Reason: "16", Remark: "M54"}, {Sequence: 1, Reason: "16", Remark: "M79"}}
		claim, err := submit(t, w, client(t, "HospitalMSP"), s, d)
		if err != nil || claim.TotalCents != 99999 {
			t.Fatalf("claim with edits refused or changed: %v %+v", err, claim)
		}
	})
	t.Run("lines must come as transient data", func(t *testing.T) {
		w := newWorld("claims")
		c := newClaims(testConfig)
		_, err := call(w, client(t, "HospitalMSP"), c, nil, func(ctx contractapi.TransactionContextInterface) (*Claim, error) {
			return c.Submit(ctx, mustJSON(t, submission("cl-1")))
		})
		wantErr(t, err, CodeInvalid, "transient data \"claim\" is missing")
	})
	t.Run("only on the claims channel", func(t *testing.T) {
		_, err := submit(t, newWorld("providers"), client(t, "HospitalMSP"), submission("cl-1"), detail("cl-1"))
		wantErr(t, err, CodeForbidden, "does not serve channel")
	})
}

func TestClaimsSubmitKeepsLinesPrivate(t *testing.T) {
	w := newWorld("claims")
	cl, err := submit(t, w, client(t, "HospitalMSP"), submission("cl-1"), detail("cl-1"))
	mustOK(t, err)
	if cl.Status != StatusSubmitted || cl.Collection != "lines_HospitalMSP_InsurerMSP" || cl.Provider != "HospitalMSP" {
		t.Fatalf("claim %+v", cl)
	}
	for k, v := range w.state {
		if strings.Contains(string(v), "99213") || strings.Contains(k, "99213") {
			t.Fatalf("a line code reached public state: %q", k)
		}
	}
	if ev := lastEvent(t, w); ev.Name != "Claims.Submitted" || strings.Contains(string(ev.Payload), "99213") {
		t.Fatalf("event %s %s", ev.Name, ev.Payload)
	}
	if len(w.private[cl.Collection]) != 2 {
		t.Fatalf("private writes: %d keys", len(w.private[cl.Collection]))
	}
	c := newClaims(testConfig)
	for _, who := range []string{"HospitalMSP", "InsurerMSP"} {
		d, err := call(w, client(t, who), c, nil, func(ctx contractapi.TransactionContextInterface) (*ClaimDetail, error) {
			return c.Lines(ctx, ref("cl-1"))
		})
		mustOK(t, err)
		if len(d.Lines) != 2 || d.Lines[0].Code != "99213" {
			t.Fatalf("%s reads %+v", who, d)
		}
	}
	_, err = call(w, client(t, "ClinicMSP"), c, nil, func(ctx contractapi.TransactionContextInterface) (*ClaimDetail, error) {
		return c.Lines(ctx, ref("cl-1"))
	})
	wantErr(t, err, CodeForbidden, "shared by HospitalMSP and InsurerMSP only")
}

func TestClaimsDuplicates(t *testing.T) {
	w := newWorld("claims")
	hospital := client(t, "HospitalMSP")
	_, err := submit(t, w, hospital, submission("cl-1"), detail("cl-1"))
	mustOK(t, err)
	_, err = submit(t, w, hospital, submission("cl-1"), detail("cl-1"))
	wantErr(t, err, CodeConflict, "exists already")

	// Same patient, provider, date and codes (in another order) under a new id: an exact duplicate, filed with the
	// whole-claim edit CARC 18 and the claim it duplicates, so the insurer answers it as a payer does (denied).
	d := detail("cl-2")
	d.Lines[0], d.Lines[1] = d.Lines[1], d.Lines[0]
	cl, err := submit(t, w, hospital, submission("cl-2"), d)
	mustOK(t, err)
	if cl.Status != StatusSubmitted {
		t.Fatalf("duplicate not filed: %+v", cl)
	}
	if got := privateDetail(t, w, "cl-2"); got.DuplicateOf != ref("cl-1") || len(got.Edits) != 1 || got.Edits[0] != (ClaimEdit{Sequence: 0, Reason: "18"}) {
		t.Fatalf("duplicate's detail: %+v", got)
	}
	if got := privateDetail(t, w, "cl-1"); got.DuplicateOf != "" || len(got.Edits) != 0 {
		t.Fatalf("the original is no duplicate: %+v", got)
	}
	// A third copy duplicates the original too; the provider cannot name a duplicate itself.
	_, err = submit(t, w, hospital, submission("cl-2b"), detail("cl-2b"))
	mustOK(t, err)
	if got := privateDetail(t, w, "cl-2b"); got.DuplicateOf != ref("cl-1") {
		t.Fatalf("third copy: %+v", got)
	}
	claimed := detail("cl-2c")
	claimed.DuplicateOf = ref("cl-1")
	_, err = submit(t, w, hospital, submission("cl-2c"), claimed)
	wantErr(t, err, CodeInvalid, "duplicateOf")

	// Another day, or another provider, is not a duplicate.
	s := submission("cl-3")
	s.ServiceDate = "2026-02-28"
	_, err = submit(t, w, hospital, s, detail("cl-3"))
	mustOK(t, err)
	_, err = submit(t, w, client(t, "ClinicMSP"), submission("cl-4"), detail("cl-4"))
	mustOK(t, err)

	// A cancelled claim may be filed again.
	_, err = claimStep(w, hospital, func(c *Claims, ctx contractapi.TransactionContextInterface) (*Claim, error) {
		return c.Cancel(ctx, ref("cl-1"), "wrong-payer")
	})
	mustOK(t, err)
	_, err = submit(t, w, hospital, submission("cl-5"), detail("cl-5"))
	mustOK(t, err)
}

func TestClaimsStateMachine(t *testing.T) {
	hospital, insurer, clinic := client(t, "HospitalMSP"), client(t, "InsurerMSP"), client(t, "ClinicMSP")
	pay := func(w *world, a actor, id string) (*Claim, error) {
		return claimStep(w, a, func(c *Claims, ctx contractapi.TransactionContextInterface) (*Claim, error) {
			return c.Pay(ctx, ref(id), "EFT-0001")
		})
	}
	cancel := func(w *world, a actor, id string) (*Claim, error) {
		return claimStep(w, a, func(c *Claims, ctx contractapi.TransactionContextInterface) (*Claim, error) {
			return c.Cancel(ctx, ref(id), "duplicate-entry")
		})
	}
	purge := func(w *world, a actor, id string) (*Claim, error) {
		return claimStep(w, a, func(c *Claims, ctx contractapi.TransactionContextInterface) (*Claim, error) {
			return c.PurgeLines(ctx, ref(id))
		})
	}

	t.Run("approve, pay, purge after retention", func(t *testing.T) {
		w := newWorld("claims")
		_, err := submit(t, w, hospital, submission("cl-1"), detail("cl-1"))
		mustOK(t, err)
		_, err = pay(w, insurer, "cl-1")
		wantErr(t, err, CodeConflict, "only an adjudicated claim is paid")
		_, err = adjudicate(t, w, hospital, "cl-1", approveAll(3600))
		wantErr(t, err, CodeForbidden, "only insurer orgs")
		cl, err := adjudicate(t, w, insurer, "cl-1", approveAll(3600))
		mustOK(t, err)
		if cl.Status != StatusAdjudicated || cl.Outcome != OutcomeApproved || cl.ApprovedCents != 27500 {
			t.Fatalf("adjudicated %+v", cl)
		}
		if ev := lastEvent(t, w); ev.Name != "Claims.Adjudicated" {
			t.Fatalf("event %s", ev.Name)
		}
		_, err = adjudicate(t, w, insurer, "cl-1", approveAll(3600))
		wantErr(t, err, CodeConflict, "only a submitted claim is adjudicated")
		_, err = cancel(w, hospital, "cl-1")
		wantErr(t, err, CodeConflict, "only a submitted claim can be cancelled")
		_, err = pay(w, hospital, "cl-1")
		wantErr(t, err, CodeForbidden, "only insurer orgs")
		cl, err = pay(w, insurer, "cl-1")
		mustOK(t, err)
		if cl.Status != StatusPaid || cl.PaidCents != 27500 || cl.PaymentRef != "EFT-0001" {
			t.Fatalf("paid %+v", cl)
		}
		_, err = pay(w, insurer, "cl-1")
		wantErr(t, err, CodeConflict, "is paid")

		_, err = purge(w, hospital, "cl-1")
		wantErr(t, err, CodeConflict, "retained until")
		_, err = purge(w, clinic, "cl-1")
		wantErr(t, err, CodeForbidden, "only HospitalMSP or InsurerMSP")
		w.now = w.now.Add(2 * time.Hour)
		cl, err = purge(w, insurer, "cl-1")
		mustOK(t, err)
		if !cl.LinesPurged || len(w.purged) != 2 || len(w.private[cl.Collection]) != 1 {
			t.Fatalf("purge: %+v, purged %v, left %d", cl, w.purged, len(w.private[cl.Collection]))
		}
		_, err = purge(w, insurer, "cl-1")
		wantErr(t, err, CodeConflict, "purged already")
		c := newClaims(testConfig)
		_, err = call(w, hospital, c, nil, func(ctx contractapi.TransactionContextInterface) (*ClaimDetail, error) {
			return c.Lines(ctx, ref("cl-1"))
		})
		wantErr(t, err, CodeNotFound, "purged")
	})

	t.Run("partial and denied", func(t *testing.T) {
		w := newWorld("claims")
		_, err := submit(t, w, hospital, submission("cl-1"), detail("cl-1"))
		mustOK(t, err)
		partial := AdjudicationInput{Lines: []LineAdjudication{
			{Sequence: 1, Outcome: OutcomeApproved, ApprovedCents: 12500, Reasons: []string{}},
			{Sequence: 2, Outcome: OutcomePartial, ApprovedCents: 10000, Reasons: []string{"45"}},
		}}
		cl, err := adjudicate(t, w, insurer, "cl-1", partial)
		mustOK(t, err)
		if cl.Outcome != OutcomePartial || cl.ApprovedCents != 22500 {
			t.Fatalf("partial %+v", cl)
		}
		c := newClaims(testConfig)
		adj, err := call(w, hospital, c, nil, func(ctx contractapi.TransactionContextInterface) (*Adjudication, error) {
			return c.AdjudicationOf(ctx, ref("cl-1"))
		})
		mustOK(t, err)
		if adj.Lines[1].Reasons[0] != "45" {
			t.Fatalf("adjudication %+v", adj)
		}

		s := submission("cl-2")
		s.ServiceDate = "2026-02-20"
		_, err = submit(t, w, hospital, s, detail("cl-2"))
		mustOK(t, err)
		denied := AdjudicationInput{Lines: []LineAdjudication{
			{Sequence: 1, Outcome: OutcomeDenied, Reasons: []string{"27"}},
			{Sequence: 2, Outcome: OutcomeDenied, Reasons: []string{"27"}},
		}}
		cl, err = adjudicate(t, w, insurer, "cl-2", denied)
		mustOK(t, err)
		if cl.Outcome != OutcomeDenied || cl.ApprovedCents != 0 {
			t.Fatalf("denied %+v", cl)
		}
		_, err = pay(w, insurer, "cl-2")
		wantErr(t, err, CodeConflict, "denied")
	})

	t.Run("adjudication must match the lines", func(t *testing.T) {
		cases := []struct {
			name string
			in   AdjudicationInput
			msg  string
		}{
			{"too few lines", AdjudicationInput{Lines: approveAll(0).Lines[:1]}, "has 1 lines; the claim has 2"},
			{"unknown sequence", AdjudicationInput{Lines: []LineAdjudication{approveAll(0).Lines[0], {Sequence: 9, Outcome: OutcomeApproved}}}, "not a line"},
			{"approved pays less", AdjudicationInput{Lines: []LineAdjudication{approveAll(0).Lines[0], {Sequence: 2, Outcome: OutcomeApproved, ApprovedCents: 1}}}, "pays what was billed"},
			{"partial without reason", AdjudicationInput{Lines: []LineAdjudication{approveAll(0).Lines[0], {Sequence: 2, Outcome: OutcomePartial, ApprovedCents: 100}}}, "with a reason"},
			{"partial pays all", AdjudicationInput{Lines: []LineAdjudication{approveAll(0).Lines[0], {Sequence: 2, Outcome: OutcomePartial, ApprovedCents: 15000, Reasons: []string{"45"}}}}, "pays less than billed"},
			{"denied pays", AdjudicationInput{Lines: []LineAdjudication{approveAll(0).Lines[0], {Sequence: 2, Outcome: OutcomeDenied, ApprovedCents: 5, Reasons: []string{"27"}}}}, "pays 0"},
			{"bad reason", AdjudicationInput{Lines: []LineAdjudication{approveAll(0).Lines[0], {Sequence: 2, Outcome: OutcomeDenied, Reasons: []string{"too expensive"}}}}, "reason"},
			{"bad outcome", AdjudicationInput{Lines: []LineAdjudication{approveAll(0).Lines[0], {Sequence: 2, Outcome: "maybe"}}}, "outcome"},
			{"negative retention", AdjudicationInput{RetentionSeconds: -1, Lines: approveAll(0).Lines}, "retentionSeconds"},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				w := newWorld("claims")
				_, err := submit(t, w, hospital, submission("cl-1"), detail("cl-1"))
				mustOK(t, err)
				_, err = adjudicate(t, w, insurer, "cl-1", tc.in)
				wantErr(t, err, CodeInvalid, tc.msg)
			})
		}
	})

	t.Run("cancel", func(t *testing.T) {
		w := newWorld("claims")
		_, err := submit(t, w, hospital, submission("cl-1"), detail("cl-1"))
		mustOK(t, err)
		_, err = cancel(w, clinic, "cl-1")
		wantErr(t, err, CodeForbidden, "submitted by HospitalMSP")
		_, err = cancel(w, insurer, "cl-1")
		wantErr(t, err, CodeForbidden, "only provider orgs")
		cl, err := cancel(w, hospital, "cl-1")
		mustOK(t, err)
		if cl.Status != StatusCancelled {
			t.Fatalf("cancelled %+v", cl)
		}
		if ev := lastEvent(t, w); ev.Name != "Claims.Cancelled" {
			t.Fatalf("event %s", ev.Name)
		}
		_, err = adjudicate(t, w, insurer, "cl-1", approveAll(0))
		wantErr(t, err, CodeConflict, "is cancelled")
		_, err = cancel(w, hospital, "missing")
		wantErr(t, err, CodeNotFound, "does not exist")
		_, err = purge(w, hospital, "cl-1")
		mustOK(t, err)
	})
}

// TestClaimsAttacks: HospitalMSP submitted cl-sub (still submitted) and cl-adj (approved by InsurerMSP, lines retained
// for an hour) to InsurerMSP.
func TestClaimsAttacks(t *testing.T) {
	hospital, insurer := client(t, "HospitalMSP"), client(t, "InsurerMSP")
	fixture := func(t *testing.T) *world {
		w := newWorld("claims")
		_, err := submit(t, w, hospital, submission("cl-sub"), detail("cl-sub"))
		mustOK(t, err)
		s := submission("cl-adj")
		s.ServiceDate = "2026-02-20"
		_, err = submit(t, w, hospital, s, detail("cl-adj"))
		mustOK(t, err)
		_, err = adjudicate(t, w, insurer, "cl-adj", approveAll(3600))
		mustOK(t, err)
		return w
	}
	as := func(msp, role string) actor { return newActor(t, msp, role, "someone") }
	step := func(a actor, fn func(c *Claims, ctx contractapi.TransactionContextInterface) (*Claim, error)) func(t *testing.T, w *world) error {
		return func(t *testing.T, w *world) error { _, err := claimStep(w, a, fn); return err }
	}
	sub := func(a actor, s ClaimSubmission) func(t *testing.T, w *world) error {
		return func(t *testing.T, w *world) error { _, err := submit(t, w, a, s, detail(s.ClaimID)); return err }
	}
	adj := func(a actor, id string) func(t *testing.T, w *world) error {
		return func(t *testing.T, w *world) error { _, err := adjudicate(t, w, a, id, approveAll(0)); return err }
	}
	pay := func(a actor, id string) func(t *testing.T, w *world) error {
		return step(a, func(c *Claims, ctx contractapi.TransactionContextInterface) (*Claim, error) {
			return c.Pay(ctx, ref(id), "EFT-1")
		})
	}
	cancel := func(a actor, id string) func(t *testing.T, w *world) error {
		return step(a, func(c *Claims, ctx contractapi.TransactionContextInterface) (*Claim, error) {
			return c.Cancel(ctx, ref(id), "dup")
		})
	}
	purge := func(a actor, id string) func(t *testing.T, w *world) error {
		return step(a, func(c *Claims, ctx contractapi.TransactionContextInterface) (*Claim, error) {
			return c.PurgeLines(ctx, ref(id))
		})
	}
	later := func(t *testing.T, w *world) { w.now = w.now.Add(2 * time.Hour) }
	newClaim := submission("cl-new")
	newClaim.ServiceDate = "2026-02-10"
	offChannel := newClaim
	offChannel.Insurer = "Insurer3MSP"
	offChannelConfig := Config{OrgKinds: map[string]string{"Insurer3MSP": KindInsurer}, Channels: testConfig.Channels, Members: testConfig.Members}
	for msp, kind := range testConfig.OrgKinds {
		offChannelConfig.OrgKinds[msp] = kind
	}
	preauthFixture := func(t *testing.T, w *world) {
		_, err := submit(t, w, hospital, preauth("pa-1", "expedited"), detail("pa-1"))
		mustOK(t, err)
	}
	decideAs := func(a actor) func(t *testing.T, w *world) error {
		return func(t *testing.T, w *world) error { _, err := decide(t, w, a, "pa-1", approve); return err }
	}
	denied := func(t *testing.T, w *world) {
		preauthFixture(t, w)
		_, err := decide(t, w, insurer, "pa-1", deny)
		mustOK(t, err)
	}
	appealAs := func(a actor) func(t *testing.T, w *world) error {
		return func(t *testing.T, w *world) error { _, err := appeal(w, a, "pa-1"); return err }
	}
	runAttacks(t, fixture, []attack{
		{name: "peer identity submits a batch", move: func(t *testing.T, w *world) error {
			_, err := submitBatch(t, w, as("HospitalMSP", "peer"), []ClaimSubmission{newClaim}, map[string]ClaimDetail{ref("cl-new"): detail("cl-new")})
			return err
		}, code: CodeForbidden, msg: "may not submit"},
		{name: "insurer submits a batch in a provider's name", move: func(t *testing.T, w *world) error {
			_, err := submitBatch(t, w, insurer, []ClaimSubmission{newClaim}, map[string]ClaimDetail{ref("cl-new"): detail("cl-new")})
			return err
		}, code: CodeForbidden, msg: "only provider orgs"},
		{name: "peer identity adjudicates a batch", move: func(t *testing.T, w *world) error {
			_, err := adjudicateBatch(t, w, as("InsurerMSP", "peer"), map[string]AdjudicationInput{ref("cl-sub"): approveAll(0)})
			return err
		}, code: CodeForbidden, msg: "may not submit"},
		{name: "another insurer adjudicates a batch of the claim", move: func(t *testing.T, w *world) error {
			out, err := adjudicateBatch(t, w, client(t, "Insurer2MSP"), map[string]AdjudicationInput{ref("cl-sub"): approveAll(0)})
			if err == nil && (out.Results[0].Code != CodeForbidden || len(out.Claims) != 0) {
				t.Fatalf("results %+v", out.Results)
			}
			return err
		}, then: func(t *testing.T, w *world) { wroteNothing(t, w) }},
		{name: "provider pays itself in a batch", move: func(t *testing.T, w *world) error {
			_, err := payBatch(t, w, hospital, "HospitalMSP", "EFT-9", "cl-adj")
			return err
		}, code: CodeForbidden, msg: "only insurer orgs"},
		{name: "another insurer pays the claim in a batch", move: func(t *testing.T, w *world) error {
			_, err := payBatch(t, w, client(t, "Insurer2MSP"), "HospitalMSP", "EFT-9", "cl-adj")
			return err
		}, code: CodeConflict, msg: "addressed to InsurerMSP"},
		{name: "the insurer pays the claim to another provider", move: func(t *testing.T, w *world) error {
			_, err := payBatch(t, w, insurer, "ClinicMSP", "EFT-9", "cl-adj")
			return err
		}, code: CodeConflict, msg: "is HospitalMSP's, not ClinicMSP's"},
		{name: "another insurer reuses a payment reference", prep: func(t *testing.T, w *world) {
			_, err := payBatch(t, w, insurer, "HospitalMSP", "EFT-9", "cl-adj")
			mustOK(t, err)
		}, move: func(t *testing.T, w *world) error {
			_, err := payBatch(t, w, client(t, "Insurer2MSP"), "HospitalMSP", "EFT-9", "cl-adj")
			return err
		}, code: CodeConflict, msg: "recorded for another payment"},
		{name: "peer identity decides a prior authorisation", prep: preauthFixture, move: decideAs(as("InsurerMSP", "peer")), code: CodeForbidden, msg: "may not submit"},
		{name: "provider approves its own prior authorisation", prep: preauthFixture, move: decideAs(hospital), code: CodeForbidden, msg: "only insurer orgs"},
		{name: "another insurer decides the prior authorisation", prep: preauthFixture, move: decideAs(client(t, "Insurer2MSP")), code: CodeForbidden, msg: "addressed to InsurerMSP"},
		{name: "peer identity appeals", prep: denied, move: appealAs(as("HospitalMSP", "peer")), code: CodeForbidden, msg: "may not submit"},
		{name: "insurer appeals its own denial", prep: denied, move: appealAs(insurer), code: CodeForbidden, msg: "only provider orgs"},
		{name: "another provider appeals the denial", prep: denied, move: appealAs(client(t, "ClinicMSP")), code: CodeForbidden, msg: "submitted by HospitalMSP"},
		{name: "provider appeals twice", prep: func(t *testing.T, w *world) {
			denied(t, w)
			mustOK(t, appealAs(hospital)(t, w))
			_, err := decide(t, w, insurer, "pa-1", deny)
			mustOK(t, err)
		}, move: appealAs(hospital), code: CodeConflict, msg: "appealed once already"},
		{name: "peer identity submits a claim", move: sub(as("HospitalMSP", "peer"), newClaim), code: CodeForbidden, msg: "may not submit"},
		{name: "insurer submits a claim", move: sub(insurer, newClaim), code: CodeForbidden, msg: "only provider orgs"},
		{name: "manufacturer submits a claim", move: sub(client(t, "PharmaMSP"), newClaim), code: CodeForbidden, msg: "only provider orgs"},
		{name: "provider files a claim to an insurer outside the claims channel", move: func(t *testing.T, w *world) error {
			c := newClaims(offChannelConfig)
			tm := map[string][]byte{transientClaim: []byte(mustJSON(t, detail("cl-new")))}
			_, err := call(w, hospital, c, tm, func(ctx contractapi.TransactionContextInterface) (*Claim, error) {
				return c.Submit(ctx, mustJSON(t, offChannel))
			})
			return err
		}, code: CodeInvalid, msg: "not a member of channel \"claims\""},
		{name: "peer identity adjudicates", move: adj(as("InsurerMSP", "peer"), "cl-sub"), code: CodeForbidden, msg: "may not submit"},
		{name: "provider adjudicates its own claim", move: adj(hospital, "cl-sub"), code: CodeForbidden, msg: "only insurer orgs"},
		{name: "another insurer adjudicates the claim", move: adj(client(t, "Insurer2MSP"), "cl-sub"), code: CodeForbidden, msg: "addressed to InsurerMSP"},
		{name: "insurer adjudicates a decided claim again", move: adj(insurer, "cl-adj"), code: CodeConflict, msg: "only a submitted claim"},
		{name: "peer identity pays", move: pay(as("InsurerMSP", "peer"), "cl-adj"), code: CodeForbidden, msg: "may not submit"},
		{name: "provider pays itself", move: pay(hospital, "cl-adj"), code: CodeForbidden, msg: "only insurer orgs"},
		{name: "another insurer pays the claim", move: pay(client(t, "Insurer2MSP"), "cl-adj"), code: CodeForbidden, msg: "addressed to InsurerMSP"},
		{name: "insurer pays a claim before adjudication", move: pay(insurer, "cl-sub"), code: CodeConflict, msg: "only an adjudicated claim"},
		{name: "peer identity cancels", move: cancel(as("HospitalMSP", "peer"), "cl-sub"), code: CodeForbidden, msg: "may not submit"},
		{name: "another provider cancels the claim", move: cancel(client(t, "ClinicMSP"), "cl-sub"), code: CodeForbidden, msg: "submitted by HospitalMSP"},
		{name: "insurer cancels the claim", move: cancel(insurer, "cl-sub"), code: CodeForbidden, msg: "only provider orgs"},
		{name: "provider cancels a decided claim", move: cancel(hospital, "cl-adj"), code: CodeConflict, msg: "only a submitted claim"},
		{name: "peer identity purges lines", prep: later, move: purge(as("InsurerMSP", "peer"), "cl-adj"), code: CodeForbidden, msg: "may not submit"},
		{name: "an org outside the claim purges its lines", prep: later, move: purge(client(t, "ClinicMSP"), "cl-adj"), code: CodeForbidden, msg: "only HospitalMSP or InsurerMSP"},
		{name: "another insurer purges the lines", prep: later, move: purge(client(t, "Insurer2MSP"), "cl-adj"), code: CodeForbidden, msg: "only HospitalMSP or InsurerMSP"},
		{name: "provider purges the lines of a submitted claim", prep: later, move: purge(hospital, "cl-sub"), code: CodeConflict, msg: "not decided yet"},
		{name: "insurer purges lines before retention ends", move: purge(insurer, "cl-adj"), code: CodeConflict, msg: "retained until"},
		{name: "an org outside the claim reads its lines", move: func(t *testing.T, w *world) error {
			c := newClaims(testConfig)
			return do(w, client(t, "ClinicMSP"), c, func(ctx contractapi.TransactionContextInterface) (*ClaimDetail, error) {
				return c.Lines(ctx, ref("cl-sub"))
			})
		}, code: CodeForbidden, msg: "shared by HospitalMSP and InsurerMSP only"},
	})
}
