package contracts

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/hyperledger/fabric-contract-api-go/v2/contractapi"
)

// Consent keeps patients' access grants: who (an org or a practitioner) may do what (read), to which resource types,
// for which purpose, during which period. A grant or revoke comes from the patient's own registered identity, or from
// a custodian org acting on the patient's behalf with the digest of the consent document the patient signed.
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
	keyConsent         = "consent"         // consentId -> ConsentRecord
	keyConsentByPerson = "consentBy"       // patient, grantee, consentId -> consentId
	keyPatientIdentity = "patientIdentity" // patient -> PatientIdentity
	maxScopeEntries    = 64
	maxConsentsChecked = 256
)

// Purposes of use (HL7 v3 PurposeOfUse) a grant may name.
var purposes = map[string]bool{
	"TREAT": true, "ETREAT": true, "HPAYMT": true, "HRESCH": true, "HOPERAT": true, "PATRQT": true, "PUBHLTH": true,
}

var practitionerPattern = regexp.MustCompile(`^practitioner:[A-Za-z0-9._:|/\-]{1,128}$`)

// Grant is what a grant says; ConsentRecord is what the ledger keeps of it.
type Grant struct {
	ConsentID      string   `json:"consentId"`
	Patient        string   `json:"patient"`
	Grantee        string   `json:"grantee"` // an MSP id ("ClinicMSP") or "practitioner:<system>|<value>"
	Action         string   `json:"action"`  // read
	Scope          []string `json:"scope"`   // resource types, or ["*"]
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
	Purpose        string   `json:"purpose"`
	Start          string   `json:"start"`
	End            string   `json:"end"`
	Status         string   `json:"status"` // active | revoked
	GrantedBy      string   `json:"grantedBy"`
	GrantedVia     string   `json:"grantedVia"` // patient | custodian
	DocumentDigest string   `json:"documentDigest"`
	GrantedAt      string   `json:"grantedAt"`
	RevokedAt      string   `json:"revokedAt"`
	TxID           string   `json:"txId"`
}

// PatientIdentity binds a pseudonym to the SHA-256 fingerprint of the patient's own X.509 certificate.
type PatientIdentity struct {
	Patient      string `json:"patient"`
	Fingerprint  string `json:"fingerprint"`
	RegisteredBy string `json:"registeredBy"`
	At           string `json:"at"`
}

// Decision answers a consent check or an access request.
type Decision struct {
	Decision  string `json:"decision"` // permit | deny
	Reason    string `json:"reason"`
	ConsentID string `json:"consentId"`
}

func (g Grant) validate() error {
	if err := matches(idPattern, "consentId", g.ConsentID, "a FHIR id"); err != nil {
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

func grantee(v string) error {
	if mspPattern.MatchString(v) || practitionerPattern.MatchString(v) {
		return nil
	}
	return invalid("grantee %q is neither an MSP id nor practitioner:<system>|<value>", v)
}

// onBehalf decides how the caller may act for the patient: "patient" when it is the patient's registered identity,
// "custodian" when its org holds the patient's records and a signed document backs the request.
func onBehalf(ctx contractapi.TransactionContextInterface, caller Caller, patient, documentDigest string) (string, error) {
	k, err := key(ctx, keyPatientIdentity, patient)
	if err != nil {
		return "", err
	}
	var pid PatientIdentity
	if found, err := getJSON(ctx, k, &pid); err != nil {
		return "", err
	} else if found && pid.Fingerprint == caller.IDHash {
		return "patient", nil
	}
	custodian, err := isCustodian(ctx, patient, caller.MSP)
	if err != nil {
		return "", err
	}
	if !custodian {
		return "", forbidden("%s is neither the patient nor a custodian of the patient's records", caller.MSP)
	}
	if documentDigest == "" {
		return "", forbidden("a custodian acting for the patient must give the digest of the signed consent document")
	}
	if err := digestField("documentDigest", documentDigest); err != nil {
		return "", err
	}
	return "custodian", nil
}

// RegisterPatientIdentity binds the patient's pseudonym to their own certificate, so that later grants and revokes
// signed with it are the patient's own. Only a custodian of the patient's records may vouch for the binding.
func (c *Consent) RegisterPatientIdentity(ctx contractapi.TransactionContextInterface, patient, certificatePEM string) (*PatientIdentity, error) {
	caller, err := writerOfKind(ctx, c.cfg, KindProvider, "Consent.RegisterPatientIdentity")
	if err != nil {
		return nil, err
	}
	if err := pseudonym("patient", patient); err != nil {
		return nil, err
	}
	fingerprint, err := certFingerprint(certificatePEM)
	if err != nil {
		return nil, err
	}
	if ok, err := isCustodian(ctx, patient, caller.MSP); err != nil {
		return nil, err
	} else if !ok {
		return nil, forbidden("%s holds no records of this patient and cannot vouch for their identity", caller.MSP)
	}
	now, err := txTime(ctx)
	if err != nil {
		return nil, err
	}
	pid := PatientIdentity{Patient: patient, Fingerprint: fingerprint, RegisteredBy: caller.MSP, At: timeText(now)}
	k, err := key(ctx, keyPatientIdentity, patient)
	if err != nil {
		return nil, err
	}
	if err := putJSON(ctx, k, pid); err != nil {
		return nil, err
	}
	return &pid, emit(ctx, "Consent.PatientIdentityRegistered", pid)
}

func certFingerprint(certificatePEM string) (string, error) {
	block, _ := pem.Decode([]byte(certificatePEM))
	if block == nil || block.Type != "CERTIFICATE" {
		return "", invalid("certificate must be one PEM-encoded X.509 certificate")
	}
	if _, err := x509.ParseCertificate(block.Bytes); err != nil {
		return "", invalid("certificate does not parse: %v", err)
	}
	sum := sha256.Sum256(block.Bytes)
	return hex.EncodeToString(sum[:]), nil
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
	via, err := onBehalf(ctx, caller, g.Patient, g.DocumentDigest)
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
	rec := ConsentRecord{
		ConsentID: g.ConsentID, Patient: g.Patient, Grantee: g.Grantee, Action: g.Action, Scope: scope,
		Purpose: g.Purpose, Start: g.Start, End: g.End, Status: "active", GrantedBy: caller.MSP, GrantedVia: via,
		DocumentDigest: g.DocumentDigest, GrantedAt: timeText(now), TxID: ctx.GetStub().GetTxID(),
	}
	if err := putJSON(ctx, k, rec); err != nil {
		return nil, err
	}
	idx, err := key(ctx, keyConsentByPerson, g.Patient, g.Grantee, g.ConsentID)
	if err != nil {
		return nil, err
	}
	if err := putJSON(ctx, idx, g.ConsentID); err != nil {
		return nil, err
	}
	return &rec, emit(ctx, "Consent.Granted", rec)
}

// Revoke ends a grant now. Revoking twice is refused, so a revoke is recorded once.
func (c *Consent) Revoke(ctx contractapi.TransactionContextInterface, consentID, documentDigest string) (*ConsentRecord, error) {
	caller, err := writer(ctx)
	if err != nil {
		return nil, err
	}
	rec, k, err := c.load(ctx, consentID)
	if err != nil {
		return nil, err
	}
	if _, err := onBehalf(ctx, caller, rec.Patient, documentDigest); err != nil {
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
	rec.RevokedAt = timeText(now)
	rec.TxID = ctx.GetStub().GetTxID()
	if err := putJSON(ctx, k, rec); err != nil {
		return nil, err
	}
	return rec, emit(ctx, "Consent.Revoked", rec)
}

func (c *Consent) load(ctx contractapi.TransactionContextInterface, consentID string) (*ConsentRecord, string, error) {
	if err := matches(idPattern, "consentId", consentID, "a FHIR id"); err != nil {
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
	return &rec, k, nil
}

// Get returns a consent as recorded.
func (c *Consent) Get(ctx contractapi.TransactionContextInterface, consentID string) (*ConsentRecord, error) {
	rec, _, err := c.load(ctx, consentID)
	return rec, err
}

// Check decides, at the transaction's time, whether the grantee may read the patient's resources of one type for
// a purpose. Evaluate it to ask; Audit.RecordAccess decides the same way and logs the decision.
func (c *Consent) Check(ctx contractapi.TransactionContextInterface, patient, granteeID, resourceType, purpose string) (*Decision, error) {
	return checkConsent(ctx, patient, granteeID, resourceType, purpose)
}

func checkConsent(ctx contractapi.TransactionContextInterface, patient, granteeID, resourceType, purpose string) (*Decision, error) {
	if err := pseudonym("patient", patient); err != nil {
		return nil, err
	}
	if err := grantee(granteeID); err != nil {
		return nil, err
	}
	if err := matches(resourcePattern, "resourceType", resourceType, "a FHIR resource type"); err != nil {
		return nil, err
	}
	if !purposes[purpose] {
		return nil, invalid("purpose %q is not a supported PurposeOfUse code", purpose)
	}
	now, err := txTime(ctx)
	if err != nil {
		return nil, err
	}
	ids, err := listJSON[string](ctx, keyConsentByPerson, patient, granteeID)
	if err != nil {
		return nil, err
	}
	if len(ids) > maxConsentsChecked {
		ids = ids[len(ids)-maxConsentsChecked:]
	}
	var reasons []string
	for _, id := range ids {
		k, err := key(ctx, keyConsent, id)
		if err != nil {
			return nil, err
		}
		var rec ConsentRecord
		if _, err := getJSON(ctx, k, &rec); err != nil {
			return nil, err
		}
		if why := rec.refusal(now, resourceType, purpose); why != "" {
			reasons = append(reasons, "consent "+id+": "+why)
			continue
		}
		return &Decision{Decision: "permit", Reason: "consent " + id + " permits it", ConsentID: id}, nil
	}
	if len(reasons) == 0 {
		return &Decision{Decision: "deny", Reason: "no consent grants " + granteeID + " access to this patient's records"}, nil
	}
	return &Decision{Decision: "deny", Reason: strings.Join(reasons, "; ")}, nil
}

// refusal says why this grant does not permit the access at time t, or "" when it does.
func (r ConsentRecord) refusal(t time.Time, resourceType, purpose string) string {
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
	for _, s := range r.Scope {
		if s == "*" || s == resourceType {
			return ""
		}
	}
	return "does not cover " + resourceType
}
