package contracts

import (
	"encoding/json"
	"time"

	"github.com/hyperledger/fabric-contract-api-go/v2/contractapi"
)

// Prior authorisation (the Da Vinci PAS shape): a provider asks an insurer, before the service, whether it will be
// covered. The request is a claim with use "preauthorization", submitted through Submit like any claim (lines as
// transient "claim"), with a priority that fixes when it must be decided: expedited within 72 hours, standard within
// 7 calendar days of the transaction time. The insurer approves, denies (with a specific reason code) or pends it;
// a pended request is decided later. A denial can be appealed once by the provider, with a new due time, and is
// decided again. Every decision is kept on the request with its time and due time, so that the insurer's metrics
// (approvals, denials, approvals after appeal, decision times by priority, late decisions) can be read from the
// chain with PreauthsByPeriod.

var preauthWindows = map[string]time.Duration{
	"expedited": 72 * time.Hour,
	"standard":  7 * 24 * time.Hour,
}

const (
	preauthIndex       = "preauth/" // plain key preauth/<insurer>/<submittedAt>/<claimId> -> claimId
	maxPreauthDecision = 20
	transientPreauth   = "decisions" // DecidePreauthBatch: claimId -> PreauthDecisionInput
)

// Prior authorisation decisions.
const (
	DecisionApproved = "approved"
	DecisionDenied   = "denied"
	DecisionPended   = "pended"
)

func preauthKey(cl *Claim) string {
	return preauthIndex + cl.Insurer + "/" + cl.SubmittedAt + "/" + cl.ClaimID
}

// PreauthDecision is one decision on a prior authorisation request, as kept on the request.
type PreauthDecision struct {
	Decision   string `json:"decision"`   // approved | denied | pended
	Reason     string `json:"reason"`     // reason code; required for a denial
	PreAuthRef string `json:"preAuthRef"` // approvals: the insurer's authorisation number
	OnAppeal   bool   `json:"onAppeal"`   // a decision on the appeal
	At         string `json:"at"`
	DueAt      string `json:"dueAt"` // the due time this decision answered
	Late       bool   `json:"late"`  // made after dueAt
	TxID       string `json:"txId"`
}

// PreauthDecisionInput is the insurer's decision (DecidePreauth's argument).
type PreauthDecisionInput struct {
	Decision         string `json:"decision"`
	Reason           string `json:"reason"`
	PreAuthRef       string `json:"preAuthRef"`
	RetentionSeconds int64  `json:"retentionSeconds"` // approvals and denials: how long the lines are kept
	// The number of decisions the request had when this one was made: when given, the decision is recorded only if
	// the request still has that many (CONFLICT otherwise), so a decision task run again after the request moved
	// on (pended by its first run, decided by a person) records nothing twice.
	DecisionsSeen *int `json:"decisionsSeen,omitempty" metadata:",optional"`
}

// PreauthDecidedBatch answers DecidePreauthBatch and is the payload of Claims.PreauthDecidedBatch.
type PreauthDecidedBatch struct {
	Insurer string        `json:"insurer"`
	TxID    string        `json:"txId"`
	Results []ClaimResult `json:"results"` // one per request asked, in claim id order
	Claims  []Claim       `json:"claims"`  // the requests decided, in claim id order
}

// ClaimPage is one page of claims.
type ClaimPage struct {
	Claims   []Claim `json:"claims"`
	Bookmark string  `json:"bookmark"`
}

func (in PreauthDecisionInput) validate() error {
	if in.Reason != "" && !reasonPattern.MatchString(in.Reason) {
		return invalid("reason %q is not a reason code (1 to 5 of A-Z 0-9)", in.Reason)
	}
	switch in.Decision {
	case DecisionApproved:
		if err := matches(refPattern, "preAuthRef", in.PreAuthRef, "an authorisation number"); err != nil {
			return err
		}
	case DecisionDenied:
		if in.Reason == "" {
			return invalid("a denial carries a specific reason code")
		}
	case DecisionPended:
	default:
		return invalid("decision %q is not approved, denied or pended", in.Decision)
	}
	if in.Decision != DecisionApproved && in.PreAuthRef != "" {
		return invalid("preAuthRef comes with an approval only")
	}
	if in.RetentionSeconds < 0 || time.Duration(in.RetentionSeconds)*time.Second > maxRetention {
		return invalid("retentionSeconds %d is out of range (0 to ten years)", in.RetentionSeconds)
	}
	if in.Decision == DecisionPended && in.RetentionSeconds != 0 {
		return invalid("retentionSeconds is set by an approval or a denial, not by pending")
	}
	return nil
}

// DecidePreauth records the insurer's decision on a prior authorisation request addressed to it: approved (with its
// authorisation number), denied (with a reason code) or pended (decided later). A submitted, pended or appealed
// request can be decided; a decided one cannot (CONFLICT), so a retried decision task treats CONFLICT as done.
func (c *Claims) DecidePreauth(ctx contractapi.TransactionContextInterface, claimID, decisionJSON string) (*Claim, error) {
	caller, err := writerOfKind(ctx, c.cfg, KindInsurer, "Claims.DecidePreauth")
	if err != nil {
		return nil, err
	}
	var in PreauthDecisionInput
	if err := decode("decision", decisionJSON, &in); err != nil {
		return nil, err
	}
	now, err := txTime(ctx)
	if err != nil {
		return nil, err
	}
	d, err := c.preparePreauthDecision(ctx, caller, claimID, in, now)
	if err != nil {
		return nil, err
	}
	if err := c.applyPreauthDecision(ctx, d); err != nil {
		return nil, err
	}
	return d.claim, emit(ctx, "Claims.PreauthDecided", d.claim)
}

// DecidePreauthBatch records the caller's (insurer) decisions on many prior authorisation requests in one
// transaction, from the transient map "decisions" (claimId -> the decision DecidePreauth takes as decisionJSON).
// Each request is decided on its own, with exactly DecidePreauth's checks: one that cannot be decided (unknown, not
// addressed to the caller, not a request, decided already, decided since the decision was made) is reported in its
// result and skipped, and the others are recorded. The call itself is refused for the caller, a malformed map, more
// than 500 decisions, a claim id that is not an opaque key, or an invalid decision (the caller's own input: nothing
// of it reaches the chain as a public result). Claims.PreauthDecidedBatch lists the requests decided; when none was,
// nothing is written and no event is emitted.
func (c *Claims) DecidePreauthBatch(ctx contractapi.TransactionContextInterface) (*PreauthDecidedBatch, error) {
	b, err := newInsurerBatch[PreauthDecisionInput](ctx, c.cfg, "Claims.DecidePreauthBatch", transientPreauth)
	if err != nil {
		return nil, err
	}
	for _, id := range b.ids { // the caller's own input: an invalid decision refuses the call, never a public result
		if err := b.byID[id].validate(); err != nil {
			return nil, prefixed(err, "decisions[%s]: ", id)
		}
	}
	results, claims, err := decideEach(ctx, b,
		func(id string, in PreauthDecisionInput) (*preauthDecision, error) {
			return c.preparePreauthDecision(ctx, b.caller, id, in, b.now)
		},
		func(d *preauthDecision) error { return c.applyPreauthDecision(ctx, d) },
		func(d *preauthDecision) *Claim { return d.claim })
	if err != nil {
		return nil, err
	}
	out := &PreauthDecidedBatch{Insurer: b.caller.MSP, TxID: ctx.GetStub().GetTxID(), Results: results, Claims: claims}
	if len(claims) == 0 {
		return out, nil
	}
	return out, emit(ctx, "Claims.PreauthDecidedBatch", out)
}

// preauthDecision is one decision checked against its request, ready to apply.
type preauthDecision struct {
	claim *Claim
	key   string
	in    PreauthDecisionInput
	now   time.Time
}

// preparePreauthDecision checks a decision and its request; it writes nothing.
func (c *Claims) preparePreauthDecision(ctx contractapi.TransactionContextInterface, caller Caller, claimID string, in PreauthDecisionInput, now time.Time) (*preauthDecision, error) {
	if err := in.validate(); err != nil {
		return nil, err
	}
	cl, k, err := c.load(ctx, claimID)
	if err != nil {
		return nil, err
	}
	if cl.Insurer != caller.MSP {
		return nil, forbidden("claim %s is addressed to %s", claimID, cl.Insurer)
	}
	if !cl.preauth() {
		return nil, conflict("claim %s is not a prior authorisation request; adjudicate it", claimID)
	}
	if cl.Status != StatusSubmitted && cl.Status != StatusPended && cl.Status != StatusAppealed {
		return nil, conflict("prior authorisation %s is %s; there is nothing to decide", claimID, cl.Status)
	}
	if in.DecisionsSeen != nil && *in.DecisionsSeen != len(cl.Decisions) {
		return nil, conflict("prior authorisation %s has had %d decisions, not the %d this decision was made on", claimID, len(cl.Decisions), *in.DecisionsSeen)
	}
	if len(cl.Decisions) >= maxPreauthDecision {
		return nil, conflict("prior authorisation %s has had %d decisions; decide it finally", claimID, len(cl.Decisions))
	}
	return &preauthDecision{claim: cl, key: k, in: in, now: now}, nil
}

// applyPreauthDecision records a checked decision on its request: the decision appended, the status and outcome
// set, the lines' retention for a final decision; it emits nothing (the caller's transaction does, once).
func (c *Claims) applyPreauthDecision(ctx contractapi.TransactionContextInterface, d *preauthDecision) error {
	cl, in, now := d.claim, d.in, d.now
	due, _ := time.Parse(time.RFC3339Nano, cl.DueAt)
	onAppeal := cl.AppealedAt != ""
	cl.Decisions = append(cl.Decisions, PreauthDecision{
		Decision: in.Decision, Reason: in.Reason, PreAuthRef: in.PreAuthRef, OnAppeal: onAppeal, At: timeText(now),
		DueAt: cl.DueAt, Late: now.After(due), TxID: ctx.GetStub().GetTxID(),
	})
	if in.Decision == DecisionPended {
		cl.Status = StatusPended
		return c.store(ctx, d.key, cl)
	}
	cl.Status, cl.Outcome, cl.PreAuthRef, cl.DenialReason, cl.ApprovedCents = StatusDecided, in.Decision, in.PreAuthRef, "", cl.TotalCents
	if in.Decision == DecisionDenied {
		cl.DenialReason, cl.ApprovedCents = in.Reason, 0
	}
	if onAppeal {
		cl.AppealDecidedAt = timeText(now)
	} else {
		cl.DecidedAt = timeText(now)
	}
	if err := c.setPurgeAfter(ctx, cl, now.Add(time.Duration(in.RetentionSeconds)*time.Second)); err != nil {
		return err
	}
	return c.store(ctx, d.key, cl)
}

// AppealPreauth is the provider's one appeal of a denied prior authorisation request, with the digest of the
// documentation it adds. The request is open again, due within its priority's window from now, and its lines are
// kept until the appeal is decided.
func (c *Claims) AppealPreauth(ctx contractapi.TransactionContextInterface, claimID, documentDigest string) (*Claim, error) {
	cl, k, err := c.partyClaim(ctx, claimID, KindProvider, "Claims.AppealPreauth")
	if err != nil {
		return nil, err
	}
	if err := digestField("documentDigest", documentDigest); err != nil {
		return nil, err
	}
	if !cl.preauth() {
		return nil, conflict("claim %s is not a prior authorisation request", claimID)
	}
	if cl.AppealedAt != "" {
		return nil, conflict("prior authorisation %s was appealed once already", claimID)
	}
	if cl.Status != StatusDecided || cl.Outcome != OutcomeDenied {
		return nil, conflict("prior authorisation %s is %s %s; only a denial is appealed", claimID, cl.Status, cl.Outcome)
	}
	now, err := txTime(ctx)
	if err != nil {
		return nil, err
	}
	if err := c.dropPurgeIndex(ctx, cl); err != nil {
		return nil, err
	}
	cl.Status, cl.AppealedAt, cl.AppealDigest, cl.PurgeAfter = StatusAppealed, timeText(now), documentDigest, ""
	cl.DueAt = timeText(now.Add(preauthWindows[cl.Priority]))
	return cl, c.save(ctx, k, cl, "Claims.PreauthAppealed")
}

// PreauthsByPeriod lists the prior authorisation requests addressed to an insurer that were submitted between two
// instants (from inclusive, to exclusive), oldest first, a page (1 to 200) at a time.
func (c *Claims) PreauthsByPeriod(ctx contractapi.TransactionContextInterface, insurer, from, to string, pageSize int, bookmark string) (*ClaimPage, error) {
	if c.cfg.kindOf(insurer) != KindInsurer {
		return nil, invalid("insurer %q is not an insurer of the consortium", insurer)
	}
	start, err := instant("from", from)
	if err != nil {
		return nil, err
	}
	end, err := instant("to", to)
	if err != nil {
		return nil, err
	}
	if !end.After(start) {
		return nil, invalid("to must be after from")
	}
	prefix := preauthIndex + insurer + "/"
	return c.claimsInRange(ctx, prefix+timeText(start), prefix+timeText(end), pageSize, bookmark)
}

// claimsInRange reads a page of an index of plain keys whose values are claim ids, and loads those claims.
func (c *Claims) claimsInRange(ctx contractapi.TransactionContextInterface, start, end string, pageSize int, bookmark string) (*ClaimPage, error) {
	if pageSize < 1 || pageSize > 200 {
		return nil, invalid("pageSize must be 1 to 200")
	}
	it, meta, err := ctx.GetStub().GetStateByRangeWithPagination(start, end, int32(pageSize), bookmark)
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var keys []string
	for it.HasNext() {
		kv, err := it.Next()
		if err != nil {
			return nil, err
		}
		k, err := key(ctx, keyClaim, string(kv.Value))
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	page := &ClaimPage{Claims: []Claim{}}
	if len(keys) > 0 {
		raws, err := ctx.GetStub().GetMultipleStates(keys...)
		if err != nil {
			return nil, err
		}
		for _, raw := range raws {
			var cl Claim
			if raw == nil {
				continue
			}
			if err := json.Unmarshal(raw, &cl); err != nil {
				return nil, err
			}
			page.Claims = append(page.Claims, cl)
		}
	}
	if meta != nil && len(keys) == pageSize {
		page.Bookmark = meta.Bookmark
	}
	return page, nil
}
