package contracts

import (
	"sort"
	"strings"
	"time"

	"github.com/hyperledger/fabric-contract-api-go/v2/contractapi"
)

// Claims at payer scale: many claims in one transaction. Fabric keeps one event per transaction, so each batch
// emits one batch event listing every claim it changed; listeners handle both the per-claim events
// (Claims.Submitted, Claims.PreauthSubmitted, Claims.Adjudicated, Claims.PreauthDecided, Claims.Paid) and the batch
// ones (Claims.SubmittedBatch, Claims.AdjudicatedBatch, Claims.PreauthDecidedBatch, Claims.PaidBatch).

const (
	maxBatchClaims    = 500
	maxPaymentClaims  = 1000
	transientClaims   = "claims"        // SubmitBatch: claimId -> ClaimDetail
	transientDecision = "adjudications" // AdjudicateBatch: claimId -> AdjudicationInput
)

// SubmittedBatch answers SubmitBatch and is the payload of Claims.SubmittedBatch.
type SubmittedBatch struct {
	Provider string  `json:"provider"`
	TxID     string  `json:"txId"`
	Claims   []Claim `json:"claims"`
}

// ClaimResult is what a batch did with one claim: its new state, or why it was refused (code and message, as a
// refusal of a single call would say).
type ClaimResult struct {
	ClaimID string `json:"claimId"`
	Status  string `json:"status"` // adjudicated (AdjudicateBatch) | decided or pended (DecidePreauthBatch) | refused
	Code    string `json:"code"`
	Message string `json:"message"`
	Claim   *Claim `json:"claim,omitempty" metadata:",optional"` // absent when refused
}

// AdjudicatedBatch answers AdjudicateBatch and is the payload of Claims.AdjudicatedBatch.
type AdjudicatedBatch struct {
	Insurer string        `json:"insurer"`
	TxID    string        `json:"txId"`
	Results []ClaimResult `json:"results"` // one per claim asked, in claim id order
	Claims  []Claim       `json:"claims"`  // the claims adjudicated, in claim id order
}

// ClaimLines is what LinesBatch found for one claim: its private detail, or why the caller does not get it (the
// code and message Lines would refuse it with).
type ClaimLines struct {
	ClaimID string       `json:"claimId"`
	Detail  *ClaimDetail `json:"detail,omitempty" metadata:",optional"` // absent when refused
	Code    string       `json:"code"`
	Message string       `json:"message"`
}

// PaymentLine is one claim paid by a payment.
type PaymentLine struct {
	ClaimID     string `json:"claimId"`
	AmountCents int64  `json:"amountCents"`
}

// PaymentRefusal is a claim a batch payment was asked to pay and did not.
type PaymentRefusal struct {
	ClaimID string `json:"claimId"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Payment is one insurer payment to one provider covering many claims: what PayBatch stores under its payment
// reference, returns, and emits as Claims.PaidBatch.
type Payment struct {
	PaymentRef string           `json:"paymentRef"`
	Provider   string           `json:"provider"`
	Insurer    string           `json:"insurer"`
	Currency   string           `json:"currency"`
	Lines      []PaymentLine    `json:"lines"` // claims paid, in the order asked
	TotalCents int64            `json:"totalCents"`
	Refused    []PaymentRefusal `json:"refused"` // claims asked but not paid, in the order asked
	PaidAt     string           `json:"paidAt"`
	TxID       string           `json:"txId"`
}

// SubmitBatch files many claims of the caller's (provider) org in one transaction: the public summaries as a JSON
// array, each claim's lines in the transient map "claims" (claimId -> the detail Submit takes as "claim"). All or
// nothing: one invalid or duplicate claim refuses the whole batch (the gateway validates before it submits), and the
// refusal names the claim. Prior authorisation requests go in a batch like claims (with their priority and due time;
// never deduplicated); the batch event lists them with their use, and the insurer decides them (DecidePreauth,
// DecidePreauthBatch) instead of adjudicating them.
func (c *Claims) SubmitBatch(ctx contractapi.TransactionContextInterface, submissionsJSON string) (*SubmittedBatch, error) {
	caller, err := writerOfKind(ctx, c.cfg, KindProvider, "Claims.SubmitBatch")
	if err != nil {
		return nil, err
	}
	var subs []ClaimSubmission
	if err := decode("submissions", submissionsJSON, &subs); err != nil {
		return nil, err
	}
	if len(subs) == 0 || len(subs) > maxBatchClaims {
		return nil, invalid("a batch holds 1 to %d claims, not %d", maxBatchClaims, len(subs))
	}
	var details map[string]ClaimDetail
	if err := transient(ctx, transientClaims, &details); err != nil {
		return nil, err
	}
	if len(details) != len(subs) {
		return nil, invalid("transient claims holds %d details for %d claims", len(details), len(subs))
	}
	b, err := c.newBatch(ctx, caller)
	if err != nil {
		return nil, err
	}
	for i, s := range subs {
		d, ok := details[s.ClaimID]
		if !ok {
			return nil, invalid("submissions[%d]: transient claims has no detail for claim %s", i, s.ClaimID)
		}
		if err := b.add(ctx, s, d); err != nil {
			return nil, prefixed(err, "submissions[%d]: ", i)
		}
	}
	if err := b.write(ctx); err != nil {
		return nil, err
	}
	out := &SubmittedBatch{Provider: caller.MSP, TxID: ctx.GetStub().GetTxID(), Claims: make([]Claim, len(b.claims))}
	for i, cl := range b.claims {
		out.Claims[i] = *cl
	}
	return out, emit(ctx, "Claims.SubmittedBatch", out)
}

// prefixed puts a prefix before a contract error's message, keeping its code.
func prefixed(err error, format string, a ...any) error {
	var ce *ContractError
	if !asContractError(err, &ce) {
		return err
	}
	return &ContractError{Code: ce.Code, Message: sprintf(format, a...) + ce.Message}
}

// AdjudicateBatch records the caller's (insurer) decisions on many claims in one transaction, from the transient
// map "adjudications" (claimId -> the decision Adjudicate takes as "adjudication"). Each claim is decided on its own:
// one that cannot be adjudicated (not addressed to the caller, not submitted, a decision that does not fit its
// lines) is reported in its result and skipped, and the others are adjudicated. The call itself is refused only for
// the caller, a malformed map, or more than 500 claims. Claims.AdjudicatedBatch lists the claims adjudicated; when
// none was, nothing is written and no event is emitted.
func (c *Claims) AdjudicateBatch(ctx contractapi.TransactionContextInterface) (*AdjudicatedBatch, error) {
	b, err := newInsurerBatch[AdjudicationInput](ctx, c.cfg, "Claims.AdjudicateBatch", transientDecision)
	if err != nil {
		return nil, err
	}
	results, claims, err := decideEach(ctx, b,
		func(id string, in AdjudicationInput) (*adjudication, error) {
			return c.prepareAdjudication(ctx, b.caller, id, in, b.now)
		},
		func(d *adjudication) error { return c.applyAdjudication(ctx, d) },
		func(d *adjudication) *Claim { return d.claim })
	if err != nil {
		return nil, err
	}
	out := &AdjudicatedBatch{Insurer: b.caller.MSP, TxID: ctx.GetStub().GetTxID(), Results: results, Claims: claims}
	if len(claims) == 0 {
		return out, nil
	}
	return out, emit(ctx, "Claims.AdjudicatedBatch", out)
}

// insurerBatch is what a batch of an insurer's decisions starts from: the caller, its decisions by claim id (from a
// transient map of 1 to maxBatchClaims), their ids in order, and the transaction's time.
type insurerBatch[T any] struct {
	caller Caller
	byID   map[string]T
	ids    []string
	now    time.Time
}

func newInsurerBatch[T any](ctx contractapi.TransactionContextInterface, cfg Config, action, transientName string) (*insurerBatch[T], error) {
	caller, err := writerOfKind(ctx, cfg, KindInsurer, action)
	if err != nil {
		return nil, err
	}
	b := &insurerBatch[T]{caller: caller}
	if err := transient(ctx, transientName, &b.byID); err != nil {
		return nil, err
	}
	if len(b.byID) == 0 || len(b.byID) > maxBatchClaims {
		return nil, invalid("a batch holds 1 to %d decisions, not %d", maxBatchClaims, len(b.byID))
	}
	if b.now, err = txTime(ctx); err != nil {
		return nil, err
	}
	if b.ids, err = batchIDs(b.byID); err != nil {
		return nil, err
	}
	return b, nil
}

// decideEach decides each claim of a batch on its own: prepare checks one decision against its claim (a contract
// refusal becomes the claim's result, and the claim is skipped), and the prepared ones are applied in one write
// batch. It returns a result per claim, in id order (a decided one with the claim's new status), and the claims
// changed, in id order.
func decideEach[T, D any](ctx contractapi.TransactionContextInterface, b *insurerBatch[T],
	prepare func(string, T) (D, error), apply func(D) error, claimOf func(D) *Claim) ([]ClaimResult, []Claim, error) {
	results, claims := []ClaimResult{}, []Claim{}
	var ready []D
	for _, id := range b.ids {
		d, err := prepare(id, b.byID[id])
		if r, refusedHere := refusal(id, err); refusedHere {
			results = append(results, r)
			continue
		} else if err != nil {
			return nil, nil, err
		}
		ready = append(ready, d)
		results = append(results, ClaimResult{ClaimID: id, Claim: claimOf(d)})
	}
	if len(ready) == 0 {
		return results, claims, nil
	}
	err := batched(ctx, func() error {
		for _, d := range ready {
			if err := apply(d); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	for i := range results {
		if r := &results[i]; r.Claim != nil {
			r.Status = r.Claim.Status
		}
	}
	for _, d := range ready {
		claims = append(claims, *claimOf(d))
	}
	return results, claims, nil
}

// batchIDs are a batch's claim ids in order (map order is random; endorsers must agree), each an opaque key: a
// malformed one refuses the whole call, so that no result (public, in the transaction and its event) ever echoes a
// caller's text in place of a claim id.
func batchIDs[T any](byID map[string]T) ([]string, error) {
	ids := make([]string, 0, len(byID))
	for id := range byID {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		if err := opaqueKey("claimId", id); err != nil {
			return nil, err
		}
	}
	return ids, nil
}

// refusal turns a contract error about one claim into its result; other errors (the peer failing) fail the call.
func refusal(claimID string, err error) (ClaimResult, bool) {
	var ce *ContractError
	if err == nil || !asContractError(err, &ce) {
		return ClaimResult{}, false
	}
	return ClaimResult{ClaimID: claimID, Status: "refused", Code: ce.Code, Message: ce.Message}, true
}

// LinesBatch returns the private lines of many claims in one read (an insurer deciding a batch of claims asks once,
// not once per claim): one result per claim id asked (claimIdsJSON: a JSON array of 1 to 500 distinct claim ids),
// in the order asked. Each claim is read as Lines reads it, with exactly its checks: a claim that is unknown, whose
// lines were purged or are not on this peer, that the caller's org is not a party to, or asked with a patient's
// certificate is reported in its result with the code and message Lines would refuse it with, and the others are
// returned. The call itself is refused only for a malformed list (not JSON, empty, more than 500, an id twice, an id
// that is not an opaque key).
func (c *Claims) LinesBatch(ctx contractapi.TransactionContextInterface, claimIDsJSON string) ([]ClaimLines, error) {
	var ids []string
	if err := decode("claimIds", claimIDsJSON, &ids); err != nil {
		return nil, err
	}
	if len(ids) == 0 || len(ids) > maxBatchClaims {
		return nil, invalid("a batch reads 1 to %d claims, not %d", maxBatchClaims, len(ids))
	}
	if err := distinctClaimIDs(ids); err != nil {
		return nil, err
	}
	out := make([]ClaimLines, 0, len(ids))
	for _, id := range ids {
		d, err := c.lines(ctx, id)
		if r, refusedHere := refusal(id, err); refusedHere {
			out = append(out, ClaimLines{ClaimID: id, Code: r.Code, Message: r.Message})
			continue
		} else if err != nil {
			return nil, err
		}
		out = append(out, ClaimLines{ClaimID: id, Detail: d})
	}
	return out, nil
}

// PayBatch records one payment (paymentRef) from the caller (insurer) to one provider covering many adjudicated
// claims: each is paid its approved amount and the payment's total is their sum. A claim that cannot be paid
// (another insurer's or another provider's, not adjudicated, denied, paid already, another currency than the
// payment's first payable claim) is listed in the payment's refused claims and left as it is; if none can be paid
// the call is refused (CONFLICT). The payment is stored under its reference, once: paying again with the same
// reference, the same provider and the same claims returns the stored payment and changes nothing; anything else
// with that reference is refused (CONFLICT; read it with Payment).
func (c *Claims) PayBatch(ctx contractapi.TransactionContextInterface, provider, paymentRef, claimIDsJSON string) (*Payment, error) {
	caller, err := writerOfKind(ctx, c.cfg, KindInsurer, "Claims.PayBatch")
	if err != nil {
		return nil, err
	}
	if c.cfg.kindOf(provider) != KindProvider {
		return nil, invalid("provider %q is not a provider of the consortium", provider)
	}
	if err := matches(refPattern, "paymentRef", paymentRef, "a payment reference"); err != nil {
		return nil, err
	}
	var ids []string
	if err := decode("claimIds", claimIDsJSON, &ids); err != nil {
		return nil, err
	}
	if len(ids) == 0 || len(ids) > maxPaymentClaims {
		return nil, invalid("a payment covers 1 to %d claims, not %d", maxPaymentClaims, len(ids))
	}
	if err := distinctClaimIDs(ids); err != nil {
		return nil, err
	}
	pk, err := key(ctx, keyPayment, paymentRef)
	if err != nil {
		return nil, err
	}
	var prior Payment
	if found, err := getJSON(ctx, pk, &prior); err != nil {
		return nil, err
	} else if found {
		if prior.Insurer == caller.MSP && prior.Provider == provider && sameClaims(&prior, ids) {
			return &prior, nil // a retry of the payment recorded
		}
		return nil, conflict("paymentRef %s is recorded for another payment; read it with Claims:Payment", paymentRef)
	}
	now, err := txTime(ctx)
	if err != nil {
		return nil, err
	}
	pay := &Payment{PaymentRef: paymentRef, Provider: provider, Insurer: caller.MSP, Lines: []PaymentLine{},
		Refused: []PaymentRefusal{}, PaidAt: timeText(now), TxID: ctx.GetStub().GetTxID()}
	type paid struct {
		claim *Claim
		key   string
	}
	var payable []paid
	for _, id := range ids {
		cl, k, err := c.payableIn(ctx, caller, provider, pay, id)
		if r, refusedHere := refusal(id, err); refusedHere {
			pay.Refused = append(pay.Refused, PaymentRefusal{ClaimID: id, Code: r.Code, Message: r.Message})
			continue
		} else if err != nil {
			return nil, err
		}
		if pay.Currency == "" {
			pay.Currency = cl.Currency
		}
		pay.Lines = append(pay.Lines, PaymentLine{ClaimID: id, AmountCents: cl.ApprovedCents})
		pay.TotalCents += cl.ApprovedCents
		payable = append(payable, paid{cl, k})
	}
	if len(payable) == 0 {
		why := make([]string, 0, len(pay.Refused))
		for _, r := range pay.Refused {
			why = append(why, r.Message)
		}
		if len(why) > 5 {
			why = append(why[:5], sprintf("and %d more", len(why)-5))
		}
		return nil, conflict("no claim of payment %s can be paid: %s", paymentRef, strings.Join(why, "; "))
	}
	err = batched(ctx, func() error {
		for _, p := range payable {
			p.claim.Status, p.claim.PaymentRef, p.claim.PaidCents, p.claim.PaidAt = StatusPaid, paymentRef, p.claim.ApprovedCents, pay.PaidAt
			if err := c.store(ctx, p.key, p.claim); err != nil {
				return err
			}
		}
		return putJSON(ctx, pk, pay)
	})
	if err != nil {
		return nil, err
	}
	return pay, emit(ctx, "Claims.PaidBatch", pay)
}

// payableIn loads a claim a batch payment may pay, or says why it may not.
func (c *Claims) payableIn(ctx contractapi.TransactionContextInterface, caller Caller, provider string, pay *Payment, id string) (*Claim, string, error) {
	cl, k, err := c.load(ctx, id)
	if err != nil {
		return nil, "", err
	}
	if cl.Insurer != caller.MSP {
		return nil, "", forbidden("claim %s is addressed to %s", id, cl.Insurer)
	}
	if cl.Provider != provider {
		return nil, "", conflict("claim %s is %s's, not %s's", id, cl.Provider, provider)
	}
	if err := payable(cl); err != nil {
		return nil, "", err
	}
	if pay.Currency != "" && cl.Currency != pay.Currency {
		return nil, "", conflict("claim %s is in %s; this payment is in %s", id, cl.Currency, pay.Currency)
	}
	return cl, k, nil
}

// sameClaims says whether a payment was asked to pay exactly these claims.
func sameClaims(p *Payment, ids []string) bool {
	asked := map[string]bool{}
	for _, l := range p.Lines {
		asked[l.ClaimID] = true
	}
	for _, r := range p.Refused {
		asked[r.ClaimID] = true
	}
	if len(asked) != len(ids) {
		return false
	}
	for _, id := range ids {
		if !asked[id] {
			return false
		}
	}
	return true
}

// Payment returns a batch payment by its reference.
func (c *Claims) Payment(ctx contractapi.TransactionContextInterface, paymentRef string) (*Payment, error) {
	if err := matches(refPattern, "paymentRef", paymentRef, "a payment reference"); err != nil {
		return nil, err
	}
	k, err := key(ctx, keyPayment, paymentRef)
	if err != nil {
		return nil, err
	}
	var p Payment
	if found, err := getJSON(ctx, k, &p); err != nil {
		return nil, err
	} else if !found {
		return nil, notFound("no batch payment has reference %s", paymentRef)
	}
	return &p, nil
}

// DueForPurge lists the caller's org's claims (as provider or insurer) whose lines are still held and whose
// retention ended at or before beforeTime, soonest first, a page (1 to 200) at a time: what a scheduled purge task
// runs PurgeLines on.
func (c *Claims) DueForPurge(ctx contractapi.TransactionContextInterface, beforeTime string, pageSize int, bookmark string) (*ClaimPage, error) {
	caller, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	if err := notAPatient(caller, "Claims.DueForPurge"); err != nil {
		return nil, err
	}
	before, err := instant("beforeTime", beforeTime)
	if err != nil {
		return nil, err
	}
	prefix := purgeIndex + caller.MSP + "/"
	return c.claimsInRange(ctx, prefix, prefix+timeText(before.Add(time.Nanosecond)), pageSize, bookmark)
}

// distinctClaimIDs refuses a list of claim ids with a malformed id or an id twice, naming the first at fault.
func distinctClaimIDs(ids []string) error {
	seen := make(map[string]bool, len(ids))
	for i, id := range ids {
		if err := opaqueKey(sprintf("claimIds[%d]", i), id); err != nil {
			return err
		}
		if seen[id] {
			return invalid("claimIds[%d]: claim %s appears twice", i, id)
		}
		seen[id] = true
	}
	return nil
}
