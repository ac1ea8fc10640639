package contracts

import (
	"encoding/json"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/hyperledger/fabric-contract-api-go/v2/contractapi"
)

// Claims is the insurance claim state machine:
//
//	submitted --Adjudicate--> adjudicated (outcome approved | partial | denied) --Pay--> paid
//	submitted --Cancel--> cancelled
//
// and, for prior authorisation requests (use "preauthorization", see preauth.go):
//
//	submitted --DecidePreauth--> pended --DecidePreauth--> decided (outcome approved | denied)
//	decided (denied) --AppealPreauth--> appealed --DecidePreauth--> [pended -->] decided
//	submitted | pended | appealed --Cancel--> cancelled
//
// The public state holds the summary (parties, status, totals, service date, digest). The claim lines live in the
// private data collection of the provider–insurer pair, arrive as transient data, and are purged once the
// decision's retention period has passed. Private values carry a client-chosen random salt, because Fabric puts
// unsalted hashes of private keys and values on chain and claim lines are otherwise easy to guess. Claims are named
// by opaque keys (claimId, 64 hex): a provider's claim number never reaches the ledger.
type Claims struct {
	contractapi.Contract
	cfg Config
}

func newClaims(cfg Config) *Claims {
	c := &Claims{cfg: cfg}
	c.Name = "Claims"
	c.BeforeTransaction = onChannel(cfg, c.Name)
	return c
}

const (
	keyClaim           = "claim"      // claimId -> Claim (public)
	keyClaimLines      = "lines"      // claimId -> ClaimDetail (private)
	keyClaimAdjudicate = "adjudicate" // claimId -> Adjudication (private)
	keyClaimIndex      = "claimIndex" // patient -> claimIndex (private): duplicate detection
	keyPayment         = "payment"    // paymentRef -> Payment (public)
	purgeIndex         = "purge/"     // plain key purge/<party>/<purgeAfter>/<claimId> -> claimId
	transientClaim     = "claim"
	transientAdjudge   = "adjudication"
	maxClaimLines      = 999
	maxAmountCents     = int64(1_000_000_000_00) // one billion in any currency's minor unit
	maxRetention       = 10 * 366 * 24 * time.Hour
)

// Claim statuses and outcomes.
const (
	StatusSubmitted   = "submitted"
	StatusAdjudicated = "adjudicated"
	StatusPaid        = "paid"
	StatusCancelled   = "cancelled"
	StatusPended      = "pended"   // prior authorisation: waiting for more information
	StatusDecided     = "decided"  // prior authorisation: approved or denied
	StatusAppealed    = "appealed" // prior authorisation: a denial appealed, waiting for the new decision
	OutcomeApproved   = "approved"
	OutcomePartial    = "partial"
	OutcomeDenied     = "denied"
)

// What a submission is (FHIR Claim.use).
const (
	UseClaim   = "claim"
	UsePreauth = "preauthorization"
)

var (
	currencyPattern = regexp.MustCompile(`^[A-Z]{3}$`)
	saltPattern     = regexp.MustCompile(`^[0-9a-f]{32,128}$`)
	remarkPattern   = regexp.MustCompile(`^[A-Z]{1,2}[0-9]{1,4}$`) // X12 remittance advice remark codes: M79, MA130, N382
	reasonPattern   = regexp.MustCompile(`^[A-Z0-9]{1,5}$`)        // X12 claim adjustment reason codes: 18, 45, 197, A1, ...
)

// LinesCollection names the private data collection a provider shares with an insurer. The network definition
// declares one for every provider–insurer pair on the claims channel, with the same names.
func LinesCollection(provider, insurer string) string { return "lines_" + provider + "_" + insurer }

// ClaimSubmission is the public part of a new claim (the function argument).
type ClaimSubmission struct {
	ClaimID     string `json:"claimId"` // opaque key
	Patient     string `json:"patient"`
	Insurer     string `json:"insurer"`
	ServiceDate string `json:"serviceDate"`
	Currency    string `json:"currency"`
	TotalCents  int64  `json:"totalCents"`
	Digest      string `json:"digest"`   // keyed digest of the FHIR Claim held by the provider
	Use         string `json:"use"`      // "claim" (or "") | "preauthorization"
	Priority    string `json:"priority"` // prior authorisation only: expedited | standard
}

// ClaimLine is one billed item: a procedure or product code, how many, at what price.
type ClaimLine struct {
	Sequence       int    `json:"sequence"`
	Code           string `json:"code"`
	Quantity       int64  `json:"quantity"`
	UnitPriceCents int64  `json:"unitPriceCents"`
	NetCents       int64  `json:"netCents"`
}

// ClaimDetail is the private part of a claim (transient "claim").
type ClaimDetail struct {
	ClaimID  string      `json:"claimId"`
	Lines    []ClaimLine `json:"lines"`
	Coverage string      `json:"coverage"` // reference to the insurer's Coverage, e.g. "Coverage/123"
	Salt     string      `json:"salt"`
	Edits    []ClaimEdit `json:"edits,omitempty" metadata:",optional"`
	// DuplicateOf is set by the contract, never by the provider: the claim this one exactly duplicates (same
	// patient, provider, service date and line codes). The claim is filed with a whole-claim edit, CARC 18 (exact
	// duplicate claim/service), which the insurer answers by denying it, as a payer answers a duplicate.
	DuplicateOf string `json:"duplicateOf,omitempty" metadata:",optional"`
}

// DuplicateReason is the X12 claim adjustment reason code of an exact duplicate claim.
const DuplicateReason = "18"

// ClaimEdit is a front-end edit the provider's gateway found in the claim as the EHR sent it (a line without a
// price, a total that is not the sum of its lines), as a payer's front end reports them: an X12 claim adjustment
// reason code and a remittance advice remark code. The claim goes on chain as sent, with its edits, and the
// insurer's rules answer them; an edit is what explains a claim whose lines do not add up.
type ClaimEdit struct {
	Sequence int    `json:"sequence"` // the line it is about; 0: the whole claim
	Reason   string `json:"reason"`   // CARC, e.g. 16 (claim lacks information)
	Remark   string `json:"remark"`   // RARC, e.g. M79 (missing charge), M54 (missing/invalid total charges); none on a duplicate (18)
}

// Claim is the public state of a claim or prior authorisation request.
type Claim struct {
	ClaimID       string `json:"claimId"`
	Use           string `json:"use"` // claim | preauthorization
	Provider      string `json:"provider"`
	Insurer       string `json:"insurer"`
	Patient       string `json:"patient"`
	Status        string `json:"status"`
	Outcome       string `json:"outcome"`
	ServiceDate   string `json:"serviceDate"`
	Currency      string `json:"currency"`
	TotalCents    int64  `json:"totalCents"`
	ApprovedCents int64  `json:"approvedCents"`
	Digest        string `json:"digest"`
	Collection    string `json:"collection"`
	SubmittedAt   string `json:"submittedAt"`
	AdjudicatedAt string `json:"adjudicatedAt"`
	PurgeAfter    string `json:"purgeAfter"`
	PaymentRef    string `json:"paymentRef"`
	PaidCents     int64  `json:"paidCents"`
	PaidAt        string `json:"paidAt"`
	CancelledAt   string `json:"cancelledAt"`
	CancelReason  string `json:"cancelReason"`
	LinesPurged   bool   `json:"linesPurged"`
	TxID          string `json:"txId"`

	// Prior authorisation only.
	Priority        string            `json:"priority,omitempty" metadata:",optional"`        // expedited | standard
	DueAt           string            `json:"dueAt,omitempty" metadata:",optional"`           // when the open request must be decided
	Decisions       []PreauthDecision `json:"decisions,omitempty" metadata:",optional"`       // every decision, oldest first
	DecidedAt       string            `json:"decidedAt,omitempty" metadata:",optional"`       // first approval or denial of the request
	PreAuthRef      string            `json:"preAuthRef,omitempty" metadata:",optional"`      // the insurer's authorisation number
	DenialReason    string            `json:"denialReason,omitempty" metadata:",optional"`    // reason code of the standing denial
	AppealedAt      string            `json:"appealedAt,omitempty" metadata:",optional"`      // the provider's one appeal
	AppealDigest    string            `json:"appealDigest,omitempty" metadata:",optional"`    // digest of the appeal's documentation
	AppealDecidedAt string            `json:"appealDecidedAt,omitempty" metadata:",optional"` // approval or denial of the appeal
}

func (cl *Claim) preauth() bool { return cl.Use == UsePreauth }

// decided says whether nothing more will be decided on the claim, so its lines may be purged after retention.
func (cl *Claim) decided() bool {
	switch cl.Status {
	case StatusAdjudicated, StatusPaid, StatusCancelled, StatusDecided:
		return true
	}
	return false
}

// LineAdjudication is the insurer's decision on one line.
type LineAdjudication struct {
	Sequence      int      `json:"sequence"`
	Outcome       string   `json:"outcome"`
	ApprovedCents int64    `json:"approvedCents"`
	Reasons       []string `json:"reasons"`
}

// AdjudicationInput is the insurer's decision (transient "adjudication").
type AdjudicationInput struct {
	Lines            []LineAdjudication `json:"lines"`
	RetentionSeconds int64              `json:"retentionSeconds"`
}

// Adjudication is the private record of the decision.
type Adjudication struct {
	ClaimID string             `json:"claimId"`
	Outcome string             `json:"outcome"`
	Lines   []LineAdjudication `json:"lines"`
	Salt    string             `json:"salt"`
}

type claimIndex struct {
	Entries []claimIndexEntry `json:"entries"`
}

type claimIndexEntry struct {
	ClaimID     string `json:"claimId"`
	ServiceDate string `json:"serviceDate"`
	Codes       string `json:"codes"`
	Salt        string `json:"salt"`
}

func (s ClaimSubmission) validate(cfg Config, now time.Time) error {
	if err := opaqueKey("claimId", s.ClaimID); err != nil {
		return err
	}
	if err := pseudonym("patient", s.Patient); err != nil {
		return err
	}
	if cfg.kindOf(s.Insurer) != KindInsurer {
		return invalid("insurer %q is not an insurer of the consortium", s.Insurer)
	}
	d, err := date("serviceDate", s.ServiceDate)
	if err != nil {
		return err
	}
	switch s.Use {
	case "", UseClaim:
		if d.After(now) {
			return invalid("serviceDate %s is in the future", s.ServiceDate)
		}
		if s.Priority != "" {
			return invalid("priority is for prior authorisation requests; a claim has none")
		}
	case UsePreauth:
		if d.After(now.AddDate(2, 0, 0)) {
			return invalid("serviceDate %s is more than two years ahead", s.ServiceDate)
		}
		if _, ok := preauthWindows[s.Priority]; !ok {
			return invalid("priority %q is not expedited or standard", s.Priority)
		}
	default:
		return invalid("use %q is not claim or preauthorization", s.Use)
	}
	if err := matches(currencyPattern, "currency", s.Currency, "an ISO 4217 code"); err != nil {
		return err
	}
	if s.TotalCents <= 0 || s.TotalCents > maxAmountCents {
		return invalid("totalCents %d is out of range", s.TotalCents)
	}
	return digestField("digest", s.Digest)
}

func (d ClaimDetail) validate(claimID string, totalCents int64) error {
	if d.ClaimID != claimID {
		return invalid("transient claim.claimId %q does not match %q", d.ClaimID, claimID)
	}
	if d.DuplicateOf != "" {
		return invalid("claim.duplicateOf is the contract's finding, not the provider's")
	}
	if err := matches(saltPattern, "claim.salt", d.Salt, "32 to 128 hex characters of randomness"); err != nil {
		return err
	}
	if err := matches(refPattern, "claim.coverage", d.Coverage, "a Coverage reference"); err != nil {
		return err
	}
	if len(d.Lines) == 0 || len(d.Lines) > maxClaimLines {
		return invalid("a claim has 1 to %d lines", maxClaimLines)
	}
	edited, err := d.validateEdits()
	if err != nil {
		return err
	}
	seen := map[int]bool{}
	var sum int64
	for i, l := range d.Lines {
		switch {
		case l.Sequence < 1 || seen[l.Sequence]:
			return invalid("claim.lines[%d].sequence %d is not a new positive number", i, l.Sequence)
		case !codePattern.MatchString(l.Code):
			return invalid("claim.lines[%d].code %q is not a billing code", i, l.Code)
		case l.Quantity < 1 || l.Quantity > 100_000:
			return invalid("claim.lines[%d].quantity %d is out of range", i, l.Quantity)
		case l.UnitPriceCents < 0 || l.UnitPriceCents > maxAmountCents:
			return invalid("claim.lines[%d].unitPriceCents is out of range", i)
		case l.NetCents < 0 || l.NetCents > maxAmountCents:
			return invalid("claim.lines[%d].netCents is out of range", i)
		case l.UnitPriceCents > 0 && l.NetCents != l.Quantity*l.UnitPriceCents:
			return invalid("claim.lines[%d].netCents %d is not quantity x unitPriceCents", i, l.NetCents)
		case l.NetCents == 0 && !edited[l.Sequence]:
			return invalid("claim.lines[%d] has no charge and no edit that says so", i)
		}
		seen[l.Sequence] = true
		sum += l.NetCents
	}
	for seq := range edited {
		if seq != 0 && !seen[seq] {
			return invalid("claim.edits name line %d, which the claim does not have", seq)
		}
	}
	if sum != totalCents && !edited[0] {
		return invalid("totalCents %d is not the sum of the lines (%d)", totalCents, sum)
	}
	return nil
}

// validateEdits checks each edit and returns the lines (0: the whole claim) that carry one.
func (d ClaimDetail) validateEdits() (map[int]bool, error) {
	if len(d.Edits) > maxClaimLines+1 {
		return nil, invalid("a claim has at most %d edits", maxClaimLines+1)
	}
	edited := map[int]bool{}
	for i, e := range d.Edits {
		switch {
		case e.Sequence < 0:
			return nil, invalid("claim.edits[%d].sequence %d is negative", i, e.Sequence)
		case !reasonPattern.MatchString(e.Reason):
			return nil, invalid("claim.edits[%d].reason %q is not a claim adjustment reason code", i, e.Reason)
		case !remarkPattern.MatchString(e.Remark):
			return nil, invalid("claim.edits[%d].remark %q is not a remittance advice remark code", i, e.Remark)
		}
		edited[e.Sequence] = true
	}
	return edited, nil
}

// duplicateOf is the detail of a claim that exactly duplicates `original`: filed, not refused, with a whole-claim
// edit CARC 18, so the insurer answers it with a denial as a payer answers a duplicate claim.
func (d ClaimDetail) duplicateOf(original string) ClaimDetail {
	d.Edits = append(append([]ClaimEdit{}, d.Edits...), ClaimEdit{Sequence: 0, Reason: DuplicateReason})
	d.DuplicateOf = original
	return d
}

// codesKey is the sorted list of line codes: what makes two claims of a patient on one day the same claim.
func (d ClaimDetail) codesKey() string {
	codes := make([]string, len(d.Lines))
	for i, l := range d.Lines {
		codes[i] = l.Code
	}
	sort.Strings(codes)
	return strings.Join(codes, ",")
}

func transient(ctx contractapi.TransactionContextInterface, name string, v any) error {
	tm, err := ctx.GetStub().GetTransient()
	if err != nil {
		return err
	}
	raw, ok := tm[name]
	if !ok {
		return invalid("transient data %q is missing; private parts travel as transient data", name)
	}
	return decode("transient "+name, string(raw), v)
}

func (c *Claims) load(ctx contractapi.TransactionContextInterface, claimID string) (*Claim, string, error) {
	if err := opaqueKey("claimId", claimID); err != nil {
		return nil, "", err
	}
	k, err := key(ctx, keyClaim, claimID)
	if err != nil {
		return nil, "", err
	}
	var cl Claim
	if found, err := getJSON(ctx, k, &cl); err != nil {
		return nil, "", err
	} else if !found {
		return nil, "", notFound("claim %s does not exist", claimID)
	}
	return &cl, k, nil
}

func getPrivate(ctx contractapi.TransactionContextInterface, collection, k string, v any) (bool, error) {
	raw, err := ctx.GetStub().GetPrivateData(collection, k)
	if err != nil {
		return false, err
	}
	if raw == nil {
		return false, nil
	}
	return true, json.Unmarshal(raw, v)
}

func putPrivate(ctx contractapi.TransactionContextInterface, collection, k string, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return ctx.GetStub().PutPrivateData(collection, k, raw)
}

// Submit files a claim (or, with use "preauthorization", a prior authorisation request) from the caller's (provider)
// org to an insurer. The lines come as transient "claim". A claim for the same patient, provider, service date and
// line codes as an open or decided one is refused. Event: Claims.Submitted, or Claims.PreauthSubmitted.
func (c *Claims) Submit(ctx contractapi.TransactionContextInterface, submissionJSON string) (*Claim, error) {
	caller, err := writerOfKind(ctx, c.cfg, KindProvider, "Claims.Submit")
	if err != nil {
		return nil, err
	}
	var s ClaimSubmission
	if err := decode("submission", submissionJSON, &s); err != nil {
		return nil, err
	}
	var detail ClaimDetail
	if err := transient(ctx, transientClaim, &detail); err != nil {
		return nil, err
	}
	b, err := c.newBatch(ctx, caller)
	if err != nil {
		return nil, err
	}
	if err := b.add(ctx, s, detail); err != nil {
		return nil, err
	}
	if err := b.write(ctx); err != nil {
		return nil, err
	}
	cl := b.claims[0]
	event := "Claims.Submitted"
	if cl.preauth() {
		event = "Claims.PreauthSubmitted"
	}
	return cl, emit(ctx, event, cl)
}

// claimBatch collects new claims of one provider, checked against the ledger and each other, and writes them.
type claimBatch struct {
	c        *Claims
	provider string
	now      time.Time
	claims   []*Claim
	details  []ClaimDetail
	seen     map[string]bool        // claim ids in this submission
	indexes  map[string]*claimIndex // collection|patient -> index as it will be written
	idxKeys  []string               // collection|patient, in first-use order
}

func (c *Claims) newBatch(ctx contractapi.TransactionContextInterface, caller Caller) (*claimBatch, error) {
	now, err := txTime(ctx)
	if err != nil {
		return nil, err
	}
	return &claimBatch{c: c, provider: caller.MSP, now: now, seen: map[string]bool{}, indexes: map[string]*claimIndex{}}, nil
}

// add checks one claim and its lines and keeps it for write; it writes nothing.
func (b *claimBatch) add(ctx contractapi.TransactionContextInterface, s ClaimSubmission, detail ClaimDetail) error {
	if err := s.validate(b.c.cfg, b.now); err != nil {
		return err
	}
	if err := b.c.onChannel(ctx, s.Insurer); err != nil {
		return err
	}
	if err := detail.validate(s.ClaimID, s.TotalCents); err != nil {
		return err
	}
	if b.seen[s.ClaimID] {
		return invalid("claim %s appears twice", s.ClaimID)
	}
	b.seen[s.ClaimID] = true
	k, err := key(ctx, keyClaim, s.ClaimID)
	if err != nil {
		return err
	}
	if err := mustBeNew(ctx, k, "claim %s exists already", s.ClaimID); err != nil {
		return err
	}
	collection := LinesCollection(b.provider, s.Insurer)
	use := UseClaim
	if s.Use == UsePreauth {
		use = UsePreauth
	} else {
		// Prior authorisations are asked again and again for the same service: only claims are deduplicated.
		ik := collection + "|" + s.Patient
		index, ok := b.indexes[ik]
		if !ok {
			if index, _, err = b.c.index(ctx, collection, s.Patient); err != nil {
				return err
			}
			b.indexes[ik] = index
			b.idxKeys = append(b.idxKeys, ik)
		}
		codes := detail.codesKey()
		for _, e := range index.Entries {
			if e.ServiceDate == s.ServiceDate && e.Codes == codes {
				detail = detail.duplicateOf(e.ClaimID)
				break
			}
		}
		if detail.DuplicateOf == "" { // the original stays the one a later copy duplicates
			index.Entries = append(index.Entries, claimIndexEntry{ClaimID: s.ClaimID, ServiceDate: s.ServiceDate, Codes: codes, Salt: detail.Salt})
		}
	}
	cl := &Claim{
		ClaimID: s.ClaimID, Use: use, Provider: b.provider, Insurer: s.Insurer, Patient: s.Patient, Status: StatusSubmitted,
		ServiceDate: s.ServiceDate, Currency: s.Currency, TotalCents: s.TotalCents, Digest: s.Digest,
		Collection: collection, SubmittedAt: timeText(b.now), TxID: ctx.GetStub().GetTxID(),
	}
	if cl.preauth() {
		cl.Priority, cl.DueAt = s.Priority, timeText(b.now.Add(preauthWindows[s.Priority]))
	}
	b.claims = append(b.claims, cl)
	b.details = append(b.details, detail)
	return nil
}

// write stores every claim added: lines and duplicate indexes in the pairs' collections, summaries in public state.
func (b *claimBatch) write(ctx contractapi.TransactionContextInterface) error {
	return batched(ctx, func() error {
		for _, ik := range b.idxKeys {
			collection, patient, _ := strings.Cut(ik, "|")
			k, err := key(ctx, keyClaimIndex, patient)
			if err != nil {
				return err
			}
			if err := putPrivate(ctx, collection, k, b.indexes[ik]); err != nil {
				return err
			}
		}
		for i, cl := range b.claims {
			linesKey, err := key(ctx, keyClaimLines, cl.ClaimID)
			if err != nil {
				return err
			}
			if err := putPrivate(ctx, cl.Collection, linesKey, b.details[i]); err != nil {
				return err
			}
			k, err := key(ctx, keyClaim, cl.ClaimID)
			if err != nil {
				return err
			}
			if err := putJSON(ctx, k, cl); err != nil {
				return err
			}
			if cl.preauth() {
				if err := ctx.GetStub().PutState(preauthKey(cl), []byte(cl.ClaimID)); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// onChannel refuses an insurer that is not a member of this channel: it has no collection with the provider here.
func (c *Claims) onChannel(ctx contractapi.TransactionContextInterface, insurer string) error {
	channel := ctx.GetStub().GetChannelID()
	if member, known := c.cfg.isMember(channel, insurer); !known {
		return forbidden("the chaincode config lists no members of channel %q; the insurer cannot be checked", channel)
	} else if !member {
		return invalid("insurer %s is not a member of channel %q", insurer, channel)
	}
	return nil
}

func (c *Claims) index(ctx contractapi.TransactionContextInterface, collection, patient string) (*claimIndex, string, error) {
	k, err := key(ctx, keyClaimIndex, patient)
	if err != nil {
		return nil, "", err
	}
	idx := &claimIndex{}
	if _, err := getPrivate(ctx, collection, k, idx); err != nil {
		return nil, "", err
	}
	return idx, k, nil
}

func (c *Claims) dropFromIndex(ctx contractapi.TransactionContextInterface, cl *Claim) error {
	idx, k, err := c.index(ctx, cl.Collection, cl.Patient)
	if err != nil {
		return err
	}
	kept := idx.Entries[:0]
	for _, e := range idx.Entries {
		if e.ClaimID != cl.ClaimID {
			kept = append(kept, e)
		}
	}
	idx.Entries = kept
	return putPrivate(ctx, cl.Collection, k, idx)
}

// Adjudicate records the insurer's per-line decision (transient "adjudication"). A claim is adjudicated once: a
// second call is refused, which lets a retried adjudication task treat CONFLICT as done.
func (c *Claims) Adjudicate(ctx contractapi.TransactionContextInterface, claimID string) (*Claim, error) {
	caller, err := writerOfKind(ctx, c.cfg, KindInsurer, "Claims.Adjudicate")
	if err != nil {
		return nil, err
	}
	var in AdjudicationInput
	if err := transient(ctx, transientAdjudge, &in); err != nil {
		return nil, err
	}
	now, err := txTime(ctx)
	if err != nil {
		return nil, err
	}
	d, err := c.prepareAdjudication(ctx, caller, claimID, in, now)
	if err != nil {
		return nil, err
	}
	if err := c.applyAdjudication(ctx, d); err != nil {
		return nil, err
	}
	return d.claim, emit(ctx, "Claims.Adjudicated", d.claim)
}

// adjudication is a decision checked against the claim and ready to write.
type adjudication struct {
	claim  *Claim
	key    string
	record Adjudication
	purge  time.Time
}

// prepareAdjudication reads and checks everything about adjudicating one claim; it writes nothing.
func (c *Claims) prepareAdjudication(ctx contractapi.TransactionContextInterface, caller Caller, claimID string, in AdjudicationInput, now time.Time) (*adjudication, error) {
	cl, k, err := c.load(ctx, claimID)
	if err != nil {
		return nil, err
	}
	if cl.Insurer != caller.MSP {
		return nil, forbidden("claim %s is addressed to %s", claimID, cl.Insurer)
	}
	if cl.preauth() {
		return nil, conflict("claim %s is a prior authorisation request; decide it with DecidePreauth", claimID)
	}
	if cl.Status != StatusSubmitted {
		return nil, conflict("claim %s is %s; only a submitted claim is adjudicated", claimID, cl.Status)
	}
	linesKey, err := key(ctx, keyClaimLines, claimID)
	if err != nil {
		return nil, err
	}
	var detail ClaimDetail
	if found, err := getPrivate(ctx, cl.Collection, linesKey, &detail); err != nil {
		return nil, err
	} else if !found {
		return nil, notFound("the lines of claim %s are not readable here", claimID)
	}
	outcome, approved, err := judge(detail, in)
	if err != nil {
		return nil, err
	}
	for i := range in.Lines {
		in.Lines[i].Reasons = nonNil(in.Lines[i].Reasons)
	}
	cl.Status, cl.Outcome, cl.ApprovedCents = StatusAdjudicated, outcome, approved
	cl.AdjudicatedAt = timeText(now)
	return &adjudication{
		claim: cl, key: k, record: Adjudication{ClaimID: claimID, Outcome: outcome, Lines: in.Lines, Salt: detail.Salt},
		purge: now.Add(time.Duration(in.RetentionSeconds) * time.Second),
	}, nil
}

func (c *Claims) applyAdjudication(ctx contractapi.TransactionContextInterface, d *adjudication) error {
	adjKey, err := key(ctx, keyClaimAdjudicate, d.claim.ClaimID)
	if err != nil {
		return err
	}
	if err := putPrivate(ctx, d.claim.Collection, adjKey, d.record); err != nil {
		return err
	}
	if err := c.setPurgeAfter(ctx, d.claim, d.purge); err != nil {
		return err
	}
	return c.store(ctx, d.key, d.claim)
}

// judge checks the decision against the claim's lines and derives the claim outcome and approved total.
func judge(detail ClaimDetail, in AdjudicationInput) (string, int64, error) {
	if in.RetentionSeconds < 0 || time.Duration(in.RetentionSeconds)*time.Second > maxRetention {
		return "", 0, invalid("retentionSeconds %d is out of range (0 to ten years)", in.RetentionSeconds)
	}
	if len(in.Lines) != len(detail.Lines) {
		return "", 0, invalid("the adjudication has %d lines; the claim has %d", len(in.Lines), len(detail.Lines))
	}
	net := map[int]int64{}
	for _, l := range detail.Lines {
		net[l.Sequence] = l.NetCents
	}
	var approved int64
	counts := map[string]int{}
	for i, l := range in.Lines {
		billed, ok := net[l.Sequence]
		if !ok {
			return "", 0, invalid("adjudication.lines[%d].sequence %d is not a line of the claim", i, l.Sequence)
		}
		delete(net, l.Sequence)
		if err := l.check(i, billed); err != nil {
			return "", 0, err
		}
		counts[l.Outcome]++
		approved += l.ApprovedCents
	}
	switch {
	case counts[OutcomeApproved] == len(in.Lines):
		return OutcomeApproved, approved, nil
	case counts[OutcomeDenied] == len(in.Lines):
		return OutcomeDenied, 0, nil
	default:
		return OutcomePartial, approved, nil
	}
}

func (l LineAdjudication) check(i int, billed int64) error {
	for j, r := range l.Reasons {
		if !reasonPattern.MatchString(r) { // named by position: a batch's result is public, and the text is the caller's
			return invalid("adjudication.lines[%d].reasons[%d] is not a claim adjustment reason code (1 to 5 of A-Z 0-9)", i, j)
		}
	}
	switch l.Outcome {
	case OutcomeApproved:
		if l.ApprovedCents != billed {
			return invalid("adjudication.lines[%d]: an approved line pays what was billed (%d)", i, billed)
		}
	case OutcomePartial:
		if l.ApprovedCents <= 0 || l.ApprovedCents >= billed || len(l.Reasons) == 0 {
			return invalid("adjudication.lines[%d]: a partial line pays less than billed, more than 0, with a reason", i)
		}
	case OutcomeDenied:
		if l.ApprovedCents != 0 || len(l.Reasons) == 0 {
			return invalid("adjudication.lines[%d]: a denied line pays 0 and gives a reason", i)
		}
	default:
		return invalid("adjudication.lines[%d].outcome %q is not approved, partial or denied", i, l.Outcome)
	}
	return nil
}

// Pay records the insurer's payment of an approved or partially approved claim.
func (c *Claims) Pay(ctx contractapi.TransactionContextInterface, claimID, paymentRef string) (*Claim, error) {
	cl, k, err := c.partyClaim(ctx, claimID, KindInsurer, "Claims.Pay")
	if err != nil {
		return nil, err
	}
	if err := matches(refPattern, "paymentRef", paymentRef, "a payment reference"); err != nil {
		return nil, err
	}
	if err := payable(cl); err != nil {
		return nil, err
	}
	pk, err := key(ctx, keyPayment, paymentRef)
	if err != nil {
		return nil, err
	}
	if err := mustBeNew(ctx, pk, "paymentRef %s is the reference of a batch payment (Claims:Payment)", paymentRef); err != nil {
		return nil, err
	}
	now, err := txTime(ctx)
	if err != nil {
		return nil, err
	}
	cl.Status, cl.PaymentRef, cl.PaidCents, cl.PaidAt = StatusPaid, paymentRef, cl.ApprovedCents, timeText(now)
	return cl, c.save(ctx, k, cl, "Claims.Paid")
}

// payable refuses a claim that is not adjudicated with something to pay.
func payable(cl *Claim) error {
	if cl.preauth() {
		return conflict("claim %s is a prior authorisation request; there is nothing to pay", cl.ClaimID)
	}
	if cl.Status != StatusAdjudicated {
		return conflict("claim %s is %s; only an adjudicated claim is paid", cl.ClaimID, cl.Status)
	}
	if cl.Outcome == OutcomeDenied {
		return conflict("claim %s was denied; there is nothing to pay", cl.ClaimID)
	}
	return nil
}

// Cancel withdraws a claim its provider submitted, before adjudication (a prior authorisation request: before its
// final decision). The same claim may then be filed again.
func (c *Claims) Cancel(ctx contractapi.TransactionContextInterface, claimID, reason string) (*Claim, error) {
	cl, k, err := c.partyClaim(ctx, claimID, KindProvider, "Claims.Cancel")
	if err != nil {
		return nil, err
	}
	if err := matches(codePattern, "reason", reason, "a short reason code"); err != nil {
		return nil, err
	}
	open := cl.Status == StatusSubmitted || (cl.preauth() && (cl.Status == StatusPended || cl.Status == StatusAppealed))
	if !open {
		return nil, conflict("claim %s is %s; only a submitted claim can be cancelled", claimID, cl.Status)
	}
	now, err := txTime(ctx)
	if err != nil {
		return nil, err
	}
	if !cl.preauth() {
		if err := c.dropFromIndex(ctx, cl); err != nil {
			return nil, err
		}
	}
	cl.Status, cl.CancelledAt, cl.CancelReason = StatusCancelled, timeText(now), reason
	if err := c.setPurgeAfter(ctx, cl, now); err != nil {
		return nil, err
	}
	return cl, c.save(ctx, k, cl, "Claims.Cancelled")
}

// PurgeLines removes a decided claim's private lines and adjudication from every peer and from their history
// (Fabric's purge), once the retention period has passed. Either party may run it; the hashes stay on chain.
func (c *Claims) PurgeLines(ctx contractapi.TransactionContextInterface, claimID string) (*Claim, error) {
	caller, err := orgCaller(ctx, "Claims.PurgeLines")
	if err != nil {
		return nil, err
	}
	cl, k, err := c.load(ctx, claimID)
	if err != nil {
		return nil, err
	}
	if caller.MSP != cl.Provider && caller.MSP != cl.Insurer {
		return nil, forbidden("only %s or %s may purge the lines of claim %s", cl.Provider, cl.Insurer, claimID)
	}
	if !cl.decided() {
		return nil, conflict("claim %s is not decided yet", claimID)
	}
	if cl.LinesPurged {
		return nil, conflict("the lines of claim %s are purged already", claimID)
	}
	now, err := txTime(ctx)
	if err != nil {
		return nil, err
	}
	if after, _ := time.Parse(time.RFC3339Nano, cl.PurgeAfter); now.Before(after) {
		return nil, conflict("the lines of claim %s are retained until %s", claimID, cl.PurgeAfter)
	}
	if cl.Status != StatusCancelled && !cl.preauth() {
		if err := c.dropFromIndex(ctx, cl); err != nil {
			return nil, err
		}
	}
	if err := c.dropPurgeIndex(ctx, cl); err != nil {
		return nil, err
	}
	for _, kind := range []string{keyClaimLines, keyClaimAdjudicate} {
		pk, err := key(ctx, kind, claimID)
		if err != nil {
			return nil, err
		}
		if err := ctx.GetStub().PurgePrivateData(cl.Collection, pk); err != nil {
			return nil, err
		}
	}
	cl.LinesPurged = true
	return cl, c.save(ctx, k, cl, "Claims.LinesPurged")
}

// partyClaim loads a claim for a step only one party may take: its insurer (kind insurer) or its provider.
func (c *Claims) partyClaim(ctx contractapi.TransactionContextInterface, claimID, kind, action string) (*Claim, string, error) {
	caller, err := writerOfKind(ctx, c.cfg, kind, action)
	if err != nil {
		return nil, "", err
	}
	cl, k, err := c.load(ctx, claimID)
	if err != nil {
		return nil, "", err
	}
	if kind == KindInsurer && cl.Insurer != caller.MSP {
		return nil, "", forbidden("claim %s is addressed to %s", claimID, cl.Insurer)
	}
	if kind == KindProvider && cl.Provider != caller.MSP {
		return nil, "", forbidden("claim %s was submitted by %s", claimID, cl.Provider)
	}
	return cl, k, nil
}

// store saves a changed claim under its key, stamped with this transaction.
func (c *Claims) store(ctx contractapi.TransactionContextInterface, k string, cl *Claim) error {
	cl.TxID = ctx.GetStub().GetTxID()
	return putJSON(ctx, k, cl)
}

// save stores a changed claim and announces the change.
func (c *Claims) save(ctx contractapi.TransactionContextInterface, k string, cl *Claim, event string) error {
	if err := c.store(ctx, k, cl); err != nil {
		return err
	}
	return emit(ctx, event, cl)
}

// purgeKeys are the claim's entries in the index DueForPurge reads: one for each party, so each lists its own.
func purgeKeys(cl *Claim) []string {
	return []string{
		purgeIndex + cl.Provider + "/" + cl.PurgeAfter + "/" + cl.ClaimID,
		purgeIndex + cl.Insurer + "/" + cl.PurgeAfter + "/" + cl.ClaimID,
	}
}

// setPurgeAfter sets when the claim's lines may be purged, and moves its entries in the purge index.
func (c *Claims) setPurgeAfter(ctx contractapi.TransactionContextInterface, cl *Claim, t time.Time) error {
	if err := c.dropPurgeIndex(ctx, cl); err != nil {
		return err
	}
	cl.PurgeAfter = timeText(t)
	for _, k := range purgeKeys(cl) {
		if err := ctx.GetStub().PutState(k, []byte(cl.ClaimID)); err != nil {
			return err
		}
	}
	return nil
}

func (c *Claims) dropPurgeIndex(ctx contractapi.TransactionContextInterface, cl *Claim) error {
	if cl.PurgeAfter == "" {
		return nil
	}
	for _, k := range purgeKeys(cl) {
		if err := ctx.GetStub().DelState(k); err != nil {
			return err
		}
	}
	return nil
}

// Get returns a claim's public state.
func (c *Claims) Get(ctx contractapi.TransactionContextInterface, claimID string) (*Claim, error) {
	cl, _, err := c.load(ctx, claimID)
	return cl, err
}

// Lines returns a claim's private lines; only the provider's and the insurer's peers hold them.
func (c *Claims) Lines(ctx contractapi.TransactionContextInterface, claimID string) (*ClaimDetail, error) {
	return c.lines(ctx, claimID)
}

// lines is Lines for one claim, also for each claim LinesBatch is asked.
func (c *Claims) lines(ctx contractapi.TransactionContextInterface, claimID string) (*ClaimDetail, error) {
	cl, _, err := c.load(ctx, claimID)
	if err != nil {
		return nil, err
	}
	var d ClaimDetail
	if err := c.private(ctx, cl, keyClaimLines, &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// AdjudicationOf returns the insurer's per-line decision; only the provider's and the insurer's peers hold it.
func (c *Claims) AdjudicationOf(ctx contractapi.TransactionContextInterface, claimID string) (*Adjudication, error) {
	cl, _, err := c.load(ctx, claimID)
	if err != nil {
		return nil, err
	}
	var a Adjudication
	if err := c.private(ctx, cl, keyClaimAdjudicate, &a); err != nil {
		return nil, err
	}
	return &a, nil
}

func (c *Claims) private(ctx contractapi.TransactionContextInterface, cl *Claim, kind string, v any) error {
	caller, err := callerOf(ctx)
	if err != nil {
		return err
	}
	if err := notAPatient(caller, "reading the private part of claim "+cl.ClaimID); err != nil {
		return err
	}
	if caller.MSP != cl.Provider && caller.MSP != cl.Insurer {
		return forbidden("the private part of claim %s is shared by %s and %s only", cl.ClaimID, cl.Provider, cl.Insurer)
	}
	pk, err := key(ctx, kind, cl.ClaimID)
	if err != nil {
		return err
	}
	// Read even after a purge: what the peer returns, not a flag, shows that the purge really happened.
	found, err := getPrivate(ctx, cl.Collection, pk, v)
	switch {
	case err != nil:
		return err
	case !found && cl.LinesPurged:
		return notFound("the private part of claim %s was purged after retention", cl.ClaimID)
	case !found:
		return notFound("claim %s has no %s on this peer", cl.ClaimID, kind)
	}
	return nil
}
