package contracts

import (
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/hyperledger/fabric-contract-api-go/v2/contractapi"
)

// Consent keeps patients' access grants: who (an org or a practitioner) may do what (read), to which resource types,
// for which purpose, during which period. A grant is recorded either by the patient's own identity (see identity.go),
// or by a custodian org acting on the patient's behalf with the digest of the consent document the patient signed.
//
// Whose data a grant opens: a custodian releases its records only on a grant signed by the patient's identity as
// that custodian knows it (its own confirmed binding), or on a grant it recorded itself. A grant recorded by any
// other org never opens another custodian's records, so an org that makes itself a custodian of a patient with a
// dummy record and grants itself access has opened nothing but its own dummy record.
type Consent struct {
	contractapi.Contract
	cfg Config
}

func newConsent(cfg Config) *Consent {
	c := &Consent{cfg: cfg}
	c.Name = "Consent"
	c.BeforeTransaction = onChannel(cfg, c.Name)
	return c
}

const (
	keyConsent         = "consent"    // consentId -> ConsentRecord
	keyConsentIndex    = "consentIdx" // patient, grantee, "c", custodian | "p", signer fingerprint, consentId -> consentId
	maxScopeEntries    = 64
	maxCategories      = 32
	maxConsentsChecked = 256
)

// Decisions.
const (
	Permit  = "permit"  // the whole request is covered
	Partial = "partial" // part of it is: release exactly what the coverage lists
	Deny    = "deny"
)

// How a grant was recorded.
const (
	ViaPatient   = "patient"
	ViaCustodian = "custodian"
)

// Purposes of use (HL7 v3 PurposeOfUse) a grant may name.
var purposes = map[string]bool{
	"TREAT": true, "ETREAT": true, "HPAYMT": true, "HRESCH": true, "HOPERAT": true, "PATRQT": true, "PUBHLTH": true,
}

var (
	practitionerPattern = regexp.MustCompile(`^practitioner:[A-Za-z0-9._:|/\-]{1,128}$`)
	categoryPattern     = regexp.MustCompile(`^[a-z][a-z0-9-]{0,63}$`) // FHIR category codes: laboratory, vital-signs, ...
)

// Grant is what a grant says; ConsentRecord is what the ledger keeps of it.
type Grant struct {
	ConsentID      string   `json:"consentId"`
	Patient        string   `json:"patient"`
	Grantee        string   `json:"grantee"`    // an MSP id ("ClinicMSP") or "practitioner:<system>|<value>"
	Action         string   `json:"action"`     // read
	Scope          []string `json:"scope"`      // resource types, or ["*"]
	Categories     []string `json:"categories"` // optional: only resources of these categories (FHIR codes)
	Purpose        string   `json:"purpose"`
	Start          string   `json:"start"`
	End            string   `json:"end"`
	DocumentDigest string   `json:"documentDigest"` // required when a custodian acts for the patient
}

type ConsentRecord struct {
	ConsentID      string   `json:"consentId"`
	Patient        string   `json:"patient"`
	Grantee        string   `json:"grantee"`
	Action         string   `json:"action"`
	Scope          []string `json:"scope"`
	Categories     []string `json:"categories"` // [] = every category
	Purpose        string   `json:"purpose"`
	Start          string   `json:"start"`
	End            string   `json:"end"`
	Status         string   `json:"status"` // active | revoked
	GrantedBy      string   `json:"grantedBy"`
	GrantedVia     string   `json:"grantedVia"` // patient | custodian
	Signer         string   `json:"signer"`     // patient grants: fingerprint of the patient certificate that signed
	DocumentDigest string   `json:"documentDigest"`
	GrantedAt      string   `json:"grantedAt"`
	RevokedAt      string   `json:"revokedAt"`
	RevokedBy      string   `json:"revokedBy"`  // MSP of the revoking identity
	RevokedVia     string   `json:"revokedVia"` // patient | custodian
	TxID           string   `json:"txId"`
}

// Decision answers a consent check or an access request. Coverage lists every grant that covers the request or
// part of it, with what it covers: on a partial decision the custodian releases exactly the resources some
// coverage entry covers (of a listed type, or any type for "*"; and of a listed category when categories are given).
type Decision struct {
	Decision  string     `json:"decision"` // permit | partial | deny
	Reason    string     `json:"reason"`
	ConsentID string     `json:"consentId"` // a grant that covers the whole request ("" unless permit)
	Coverage  []Coverage `json:"coverage"`
}

// Coverage is what one grant covers of a request.
type Coverage struct {
	ConsentID  string   `json:"consentId"`
	Scope      []string `json:"scope"`      // resource types, or ["*"]
	Categories []string `json:"categories"` // [] = every category
}

func (g Grant) validate() error {
	if err := opaqueKey("consentId", g.ConsentID); err != nil {
		return err
	}
	if err := pseudonym("patient", g.Patient); err != nil {
		return err
	}
	if err := grantee(g.Grantee); err != nil {
		return err
	}
	if g.Action != "read" {
		return invalid("action %q is not supported; grants give read access", g.Action)
	}
	if len(g.Scope) == 0 || len(g.Scope) > maxScopeEntries {
		return invalid("scope lists 1 to %d resource types (or \"*\")", maxScopeEntries)
	}
	for _, s := range g.Scope {
		if s != "*" {
			if err := matches(resourcePattern, "scope", s, "a FHIR resource type"); err != nil {
				return err
			}
		}
	}
	if err := validCategories("categories", g.Categories); err != nil {
		return err
	}
	if !purposes[g.Purpose] {
		return invalid("purpose %q is not a supported PurposeOfUse code (TREAT, ETREAT, HPAYMT, HRESCH, ...)", g.Purpose)
	}
	start, err := instant("start", g.Start)
	if err != nil {
		return err
	}
	if g.End != "" {
		end, err := instant("end", g.End)
		if err != nil {
			return err
		}
		if !end.After(start) {
			return invalid("end must be after start")
		}
	}
	if g.DocumentDigest != "" {
		return digestField("documentDigest", g.DocumentDigest)
	}
	return nil
}

// validCategories checks a list of category codes: at most 32, each a lower-case code, none twice.
func validCategories(field string, cats []string) error {
	if len(cats) > maxCategories {
		return invalid("%s lists at most %d categories", field, maxCategories)
	}
	seen := map[string]bool{}
	for _, c := range cats {
		if err := matches(categoryPattern, field, c, "a category code (lower-case letters, digits and -)"); err != nil {
			return err
		}
		if seen[c] {
			return invalid("%s lists %s twice", field, c)
		}
		seen[c] = true
	}
	return nil
}

func grantee(v string) error {
	if mspPattern.MatchString(v) || practitionerPattern.MatchString(v) {
		return nil
	}
	return invalid("grantee %q is neither an MSP id nor practitioner:<system>|<value>", v)
}

// grantor decides in whose name the caller records a grant of the patient: as the patient, when its certificate is
// the patient's confirmed identity at some custodian; or as a custodian org holding the patient's records, with the
// digest of the consent document the patient signed (never with a patient certificate). It returns how
// (ViaPatient | ViaCustodian) and, for the patient, the signing certificate's fingerprint.
func grantor(ctx contractapi.TransactionContextInterface, cfg Config, caller Caller, patient, documentDigest string) (string, string, error) {
	bound, err := ctx.GetStub().GetStateByPartialCompositeKey(keyBoundIdentity, []string{caller.IDHash, patient})
	if err != nil {
		return "", "", err
	}
	isPatient := bound.HasNext()
	bound.Close()
	if isPatient {
		return ViaPatient, caller.IDHash, nil
	}
	if other, err := isPatientIdentity(ctx, caller.IDHash); err != nil {
		return "", "", err
	} else if other {
		return "", "", forbidden("this certificate is another patient's own identity; it acts for that patient only")
	}
	if caller.Patient {
		return "", "", forbidden("this certificate is a patient's own identity (OU %s) that no custodian has confirmed for "+
			"this patient; it does not act for %s", PatientOU, caller.MSP)
	}
	custodian := false
	if cfg.kindOf(caller.MSP) == KindProvider {
		if custodian, err = isCustodian(ctx, patient, caller.MSP); err != nil {
			return "", "", err
		}
	}
	if !custodian {
		return "", "", forbidden("%s is neither the patient nor a custodian of the patient's records", caller.MSP)
	}
	if documentDigest == "" {
		return "", "", forbidden("a custodian acting for the patient must give the digest of the signed consent document")
	}
	if err := digestField("documentDigest", documentDigest); err != nil {
		return "", "", err
	}
	return ViaCustodian, "", nil
}

func indexKey(ctx contractapi.TransactionContextInterface, rec *ConsentRecord) (string, error) {
	if rec.GrantedVia == ViaPatient {
		return key(ctx, keyConsentIndex, rec.Patient, rec.Grantee, "p", rec.Signer, rec.ConsentID)
	}
	return key(ctx, keyConsentIndex, rec.Patient, rec.Grantee, "c", rec.GrantedBy, rec.ConsentID)
}

// Grant records a consent grant. A consent id is used once: a changed grant is a revoke plus a new grant.
func (c *Consent) Grant(ctx contractapi.TransactionContextInterface, grantJSON string) (*ConsentRecord, error) {
	caller, err := writer(ctx)
	if err != nil {
		return nil, err
	}
	var g Grant
	if err := decode("grant", grantJSON, &g); err != nil {
		return nil, err
	}
	if err := g.validate(); err != nil {
		return nil, err
	}
	via, signer, err := grantor(ctx, c.cfg, caller, g.Patient, g.DocumentDigest)
	if err != nil {
		return nil, err
	}
	k, err := key(ctx, keyConsent, g.ConsentID)
	if err != nil {
		return nil, err
	}
	if err := mustBeNew(ctx, k, "consent %s exists already; revoke it and grant under a new id", g.ConsentID); err != nil {
		return nil, err
	}
	now, err := txTime(ctx)
	if err != nil {
		return nil, err
	}
	scope := append([]string(nil), g.Scope...)
	sort.Strings(scope)
	categories := append([]string{}, g.Categories...)
	sort.Strings(categories)
	rec := ConsentRecord{
		ConsentID: g.ConsentID, Patient: g.Patient, Grantee: g.Grantee, Action: g.Action, Scope: scope, Categories: categories,
		Purpose: g.Purpose, Start: g.Start, End: g.End, Status: "active", GrantedBy: caller.MSP, GrantedVia: via,
		Signer: signer, DocumentDigest: g.DocumentDigest, GrantedAt: timeText(now), TxID: ctx.GetStub().GetTxID(),
	}
	idx, err := indexKey(ctx, &rec)
	if err != nil {
		return nil, err
	}
	if err := putJSON(ctx, k, rec); err != nil {
		return nil, err
	}
	if err := putJSON(ctx, idx, g.ConsentID); err != nil {
		return nil, err
	}
	return &rec, emit(ctx, "Consent.Granted", rec)
}

// Revoke ends a grant now. A grant the patient signed is revoked by that same certificate. A grant a custodian
// recorded is revoked by that custodian (with the digest of the patient's signed revocation) or by the patient's
// identity as that custodian knows it. No other org can revoke it. Revoking twice is refused.
func (c *Consent) Revoke(ctx contractapi.TransactionContextInterface, consentID, documentDigest string) (*ConsentRecord, error) {
	caller, err := writer(ctx)
	if err != nil {
		return nil, err
	}
	rec, k, err := c.load(ctx, consentID)
	if err != nil {
		return nil, err
	}
	via, err := c.revoker(ctx, caller, rec, documentDigest)
	if err != nil {
		return nil, err
	}
	if rec.Status != "active" {
		return nil, conflict("consent %s is %s already", consentID, rec.Status)
	}
	now, err := txTime(ctx)
	if err != nil {
		return nil, err
	}
	rec.Status = "revoked"
	rec.RevokedAt, rec.RevokedBy, rec.RevokedVia = timeText(now), caller.MSP, via
	rec.TxID = ctx.GetStub().GetTxID()
	if err := putJSON(ctx, k, rec); err != nil {
		return nil, err
	}
	return rec, emit(ctx, "Consent.Revoked", rec)
}

// revoker decides whether the caller may revoke the grant, and in whose name.
func (c *Consent) revoker(ctx contractapi.TransactionContextInterface, caller Caller, rec *ConsentRecord, documentDigest string) (string, error) {
	if rec.GrantedVia == ViaPatient {
		if caller.IDHash != rec.Signer {
			return "", forbidden("consent %s was signed by the patient; only the certificate that signed it revokes it", rec.ConsentID)
		}
		return ViaPatient, nil
	}
	known, err := confirmedAt(ctx, rec.Patient, rec.GrantedBy)
	if err != nil {
		return "", err
	}
	if known != "" && known == caller.IDHash {
		return ViaPatient, nil
	}
	if caller.MSP != rec.GrantedBy {
		return "", forbidden("consent %s was recorded by %s; only %s (with the signed document) or the patient's identity it knows may revoke it",
			rec.ConsentID, rec.GrantedBy, rec.GrantedBy)
	}
	if err := notAPatient(caller, "Consent.Revoke"); err != nil {
		return "", err
	}
	if patient, err := isPatientIdentity(ctx, caller.IDHash); err != nil {
		return "", err
	} else if patient {
		return "", forbidden("this certificate is a patient's own identity; it does not act for %s", caller.MSP)
	}
	if documentDigest == "" {
		return "", forbidden("a custodian revoking for the patient must give the digest of the signed revocation document")
	}
	if err := digestField("documentDigest", documentDigest); err != nil {
		return "", err
	}
	return ViaCustodian, nil
}

func (c *Consent) load(ctx contractapi.TransactionContextInterface, consentID string) (*ConsentRecord, string, error) {
	return loadConsent(ctx, consentID)
}

func loadConsent(ctx contractapi.TransactionContextInterface, consentID string) (*ConsentRecord, string, error) {
	if err := opaqueKey("consentId", consentID); err != nil {
		return nil, "", err
	}
	k, err := key(ctx, keyConsent, consentID)
	if err != nil {
		return nil, "", err
	}
	var rec ConsentRecord
	found, err := getJSON(ctx, k, &rec)
	if err != nil {
		return nil, "", err
	}
	if !found {
		return nil, "", notFound("consent %s does not exist", consentID)
	}
	rec.Categories = nonNil(rec.Categories)
	return &rec, k, nil
}

// Get returns a consent as recorded.
func (c *Consent) Get(ctx contractapi.TransactionContextInterface, consentID string) (*ConsentRecord, error) {
	rec, _, err := c.load(ctx, consentID)
	return rec, err
}

// Check decides, at the transaction's time, whether the custodian may release the patient's resources of one type
// ("*": the whole record) to the grantee for a purpose: permit, partial (only what the coverage lists, e.g. some
// categories) or deny. Only grants that open that custodian's records count (see Consent). Evaluate it to ask;
// Audit.RecordAccess decides the same way, also for one resource of known categories, and logs the decision.
func (c *Consent) Check(ctx contractapi.TransactionContextInterface, patient, custodian, granteeID, resourceType, purpose string) (*Decision, error) {
	if err := matches(mspPattern, "custodian", custodian, "an MSP id"); err != nil {
		return nil, err
	}
	if c.cfg.kindOf(custodian) != KindProvider {
		return nil, invalid("custodian %s is not a provider org of the consortium", custodian)
	}
	return checkConsent(ctx, patient, custodian, granteeID, purpose, ask{resourceType: resourceType})
}

// ask is what a request asks for: every resource of a type ("*": the whole record), or one resource of a type with
// the categories it has.
type ask struct {
	resourceType string
	single       bool
	categories   []string
}

// grantsOpening lists the ids of the grants to the grantee that can open the custodian's records of the patient:
// those the custodian recorded, and those signed by the patient identity the custodian has confirmed.
func grantsOpening(ctx contractapi.TransactionContextInterface, patient, custodian, granteeID string) ([]string, error) {
	ids, err := listJSON[string](ctx, keyConsentIndex, patient, granteeID, "c", custodian)
	if err != nil {
		return nil, err
	}
	if len(ids) > maxConsentsChecked {
		ids = ids[len(ids)-maxConsentsChecked:]
	}
	fingerprint, err := confirmedAt(ctx, patient, custodian)
	if err != nil || fingerprint == "" {
		return ids, err
	}
	own, err := listJSON[string](ctx, keyConsentIndex, patient, granteeID, "p", fingerprint)
	if err != nil {
		return nil, err
	}
	if len(own) > maxConsentsChecked {
		own = own[len(own)-maxConsentsChecked:]
	}
	return append(ids, own...), nil
}

// opens says whether a grant can open the custodian's records (the same rule as grantsOpening, for one grant).
func opens(ctx contractapi.TransactionContextInterface, rec *ConsentRecord, custodian string) (bool, error) {
	if rec.GrantedVia == ViaCustodian {
		return rec.GrantedBy == custodian, nil
	}
	fingerprint, err := confirmedAt(ctx, rec.Patient, custodian)
	return err == nil && fingerprint != "" && fingerprint == rec.Signer, err
}

func checkConsent(ctx contractapi.TransactionContextInterface, patient, custodian, granteeID, purpose string, q ask) (*Decision, error) {
	if err := pseudonym("patient", patient); err != nil {
		return nil, err
	}
	if err := grantee(granteeID); err != nil {
		return nil, err
	}
	if q.resourceType != "*" {
		if err := matches(resourcePattern, "resourceType", q.resourceType, "a FHIR resource type"); err != nil {
			return nil, err
		}
	}
	if err := validCategories("categories", q.categories); err != nil {
		return nil, err
	}
	if !q.single && len(q.categories) > 0 {
		return nil, invalid("categories describe one requested resource; a request for a type or the whole record has none")
	}
	if !purposes[purpose] {
		return nil, invalid("purpose %q is not a supported PurposeOfUse code", purpose)
	}
	now, err := txTime(ctx)
	if err != nil {
		return nil, err
	}
	ids, err := grantsOpening(ctx, patient, custodian, granteeID)
	if err != nil {
		return nil, err
	}
	d := &Decision{Decision: Deny, Coverage: []Coverage{}}
	var reasons, partial []string
	for _, id := range ids {
		k, err := key(ctx, keyConsent, id)
		if err != nil {
			return nil, err
		}
		var rec ConsentRecord
		if _, err := getJSON(ctx, k, &rec); err != nil {
			return nil, err
		}
		if why := rec.inForce(now, purpose); why != "" {
			reasons = append(reasons, "consent "+id+": "+why)
			continue
		}
		reach, why := rec.reach(q)
		if reach == "" {
			reasons = append(reasons, "consent "+id+": "+why)
			continue
		}
		d.Coverage = append(d.Coverage, Coverage{ConsentID: id, Scope: rec.Scope, Categories: nonNil(rec.Categories)})
		if reach == "all" && d.ConsentID == "" {
			d.ConsentID = id
		} else if reach == "part" {
			partial = append(partial, id)
		}
	}
	switch {
	case d.ConsentID != "":
		d.Decision, d.Reason = Permit, "consent "+d.ConsentID+" permits it"
	case len(partial) > 0:
		d.Decision, d.Reason = Partial, "consents "+strings.Join(partial, ", ")+" cover part of it; release only what the coverage lists"
	case len(reasons) == 0:
		d.Reason = "no consent that opens " + custodian + "'s records grants " + granteeID + " access to this patient's records"
	default:
		d.Reason = strings.Join(reasons, "; ")
	}
	return d, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// inForce says why this grant does not apply at time t for the purpose, or "" when it does.
func (r ConsentRecord) inForce(t time.Time, purpose string) string {
	if r.Status != "active" {
		return "revoked at " + r.RevokedAt
	}
	if start, _ := time.Parse(time.RFC3339Nano, r.Start); t.Before(start) {
		return "not valid before " + r.Start
	}
	if r.End != "" {
		if end, _ := time.Parse(time.RFC3339Nano, r.End); !t.Before(end) {
			return "expired at " + r.End
		}
	}
	if r.Purpose != purpose {
		return "granted for purpose " + r.Purpose + ", not " + purpose
	}
	return ""
}

// reach says how much of the request the grant covers: "all", "part", or "" (nothing, with the reason). The whole
// record is covered by scope "*" without categories; any grant covers part of it. A type is covered by "*" or the
// type, wholly without categories, partly with them. One resource is covered when its type is and, if the grant
// names categories, it has one of them.
func (r ConsentRecord) reach(q ask) (string, string) {
	restricted := len(r.Categories) > 0
	if q.resourceType == "*" {
		if slices.Contains(r.Scope, "*") && !restricted {
			return "all", ""
		}
		return "part", ""
	}
	if !slices.Contains(r.Scope, "*") && !slices.Contains(r.Scope, q.resourceType) {
		return "", "does not cover " + q.resourceType
	}
	switch {
	case !restricted:
		return "all", ""
	case !q.single:
		return "part", ""
	}
	for _, c := range q.categories {
		if slices.Contains(r.Categories, c) {
			return "all", ""
		}
	}
	return "", "covers only categories " + strings.Join(r.Categories, ", ") + " of " + q.resourceType
}
