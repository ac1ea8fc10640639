package contracts

import (
	"encoding/json"
	"strings"

	"github.com/hyperledger/fabric-contract-api-go/v2/contractapi"
)

// Audit is the append-only access log. A custodian asked for a patient's records records the request here; the
// contract decides it against the patient's consents at the transaction's time and logs permit or deny in the same
// transaction, so no access is served without its log entry and no decision can be logged differently than made.
type Audit struct {
	contractapi.Contract
	cfg Config
}

func newAudit(cfg Config) *Audit {
	c := &Audit{cfg: cfg}
	c.Name = "Audit"
	c.BeforeTransaction = onChannel(cfg, c.Name)
	return c
}

// Audit entries use plain keys ("audit/p/<patient>/<time>/<tx>", "audit/t/<time>/<tx>") rather than composite keys:
// plain keys can be range-queried, which makes "this patient in this period" one bounded read.
const (
	auditByPatient = "audit/p/"
	auditByTime    = "audit/t/"
)

// AccessRequest is what a custodian logs before serving (or refusing) records.
type AccessRequest struct {
	Patient  string `json:"patient"`
	Accessor string `json:"accessor"` // who asks: an MSP id or practitioner:<system>|<value>
	Resource string `json:"resource"` // "Observation/abc", or "Patient/<id>/$everything"
	Purpose  string `json:"purpose"`
}

// AuditEntry is one logged access decision.
type AuditEntry struct {
	Patient   string `json:"patient"`
	Accessor  string `json:"accessor"`
	Custodian string `json:"custodian"`
	Resource  string `json:"resource"`
	Purpose   string `json:"purpose"`
	Decision  string `json:"decision"`
	Reason    string `json:"reason"`
	ConsentID string `json:"consentId"`
	At        string `json:"at"`
	TxID      string `json:"txId"`
}

// AuditPage is one page of log entries, oldest first.
type AuditPage struct {
	Entries  []AuditEntry `json:"entries"`
	Bookmark string       `json:"bookmark"`
}

// resourceTypeOf reads "Type/id" (one resource) or "Patient/id/$everything" (the whole record, returned as "*").
func resourceTypeOf(ref string) (string, error) {
	parts := strings.Split(ref, "/")
	whole := len(parts) == 3 && parts[0] == "Patient" && parts[2] == "$everything"
	if (len(parts) != 2 && !whole) || !resourcePattern.MatchString(parts[0]) || !idPattern.MatchString(parts[1]) {
		return "", invalid("resource %q is neither Type/id nor Patient/id/$everything", ref)
	}
	if whole {
		return "*", nil
	}
	return parts[0], nil
}

// RecordAccess decides the request against the patient's consents and logs the decision. The caller must be a
// custodian of the patient's records: the org about to serve them. It returns the decision; a deny is a normal
// answer here, not an error, so that the deny is committed to the log.
func (c *Audit) RecordAccess(ctx contractapi.TransactionContextInterface, requestJSON string) (*AuditEntry, error) {
	caller, err := writerOfKind(ctx, c.cfg, KindProvider, "Audit.RecordAccess")
	if err != nil {
		return nil, err
	}
	var req AccessRequest
	if err := decode("request", requestJSON, &req); err != nil {
		return nil, err
	}
	if err := pseudonym("patient", req.Patient); err != nil {
		return nil, err
	}
	resourceType, err := resourceTypeOf(req.Resource)
	if err != nil {
		return nil, err
	}
	if ok, err := isCustodian(ctx, req.Patient, caller.MSP); err != nil {
		return nil, err
	} else if !ok {
		return nil, forbidden("%s holds no records of this patient", caller.MSP)
	}
	checkType := resourceType
	if checkType == "*" {
		checkType = "Patient" // the longitudinal record starts from the Patient: consent must cover all of it
	}
	decision, err := checkConsent(ctx, req.Patient, req.Accessor, checkType, req.Purpose)
	if err != nil {
		return nil, err
	}
	if resourceType == "*" && decision.Decision == "permit" {
		decision, err = c.coversEverything(ctx, decision)
		if err != nil {
			return nil, err
		}
	}
	now, err := txTime(ctx)
	if err != nil {
		return nil, err
	}
	txID := ctx.GetStub().GetTxID()
	entry := AuditEntry{
		Patient: req.Patient, Accessor: req.Accessor, Custodian: caller.MSP, Resource: req.Resource,
		Purpose: req.Purpose, Decision: decision.Decision, Reason: decision.Reason, ConsentID: decision.ConsentID,
		At: timeText(now), TxID: txID,
	}
	raw, err := json.Marshal(entry)
	if err != nil {
		return nil, err
	}
	stub := ctx.GetStub()
	if err := stub.PutState(auditByPatient+req.Patient+"/"+entry.At+"/"+txID, raw); err != nil {
		return nil, err
	}
	if err := stub.PutState(auditByTime+entry.At+"/"+txID, raw); err != nil {
		return nil, err
	}
	return &entry, stub.SetEvent("Audit.Logged", raw)
}

// coversEverything narrows a permit for the whole record to grants whose scope is "*".
func (c *Audit) coversEverything(ctx contractapi.TransactionContextInterface, d *Decision) (*Decision, error) {
	k, err := key(ctx, keyConsent, d.ConsentID)
	if err != nil {
		return nil, err
	}
	var rec ConsentRecord
	if _, err := getJSON(ctx, k, &rec); err != nil {
		return nil, err
	}
	for _, s := range rec.Scope {
		if s == "*" {
			return d, nil
		}
	}
	return &Decision{Decision: "deny", Reason: "consent " + d.ConsentID + " does not cover the whole record"}, nil
}

// ByPatient lists the access log of one patient between two instants (from inclusive, to exclusive).
func (c *Audit) ByPatient(ctx contractapi.TransactionContextInterface, patient, from, to string, pageSize int, bookmark string) (*AuditPage, error) {
	if err := pseudonym("patient", patient); err != nil {
		return nil, err
	}
	return c.page(ctx, auditByPatient+patient+"/", from, to, pageSize, bookmark)
}

// ByPeriod lists every access logged between two instants, for an auditor.
func (c *Audit) ByPeriod(ctx contractapi.TransactionContextInterface, from, to string, pageSize int, bookmark string) (*AuditPage, error) {
	return c.page(ctx, auditByTime, from, to, pageSize, bookmark)
}

func (c *Audit) page(ctx contractapi.TransactionContextInterface, prefix, from, to string, pageSize int, bookmark string) (*AuditPage, error) {
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
	if pageSize < 1 || pageSize > 1000 {
		return nil, invalid("pageSize must be 1 to 1000")
	}
	it, meta, err := ctx.GetStub().GetStateByRangeWithPagination(prefix+timeText(start), prefix+timeText(end), int32(pageSize), bookmark)
	if err != nil {
		return nil, err
	}
	defer it.Close()
	page := &AuditPage{Entries: []AuditEntry{}}
	for it.HasNext() {
		kv, err := it.Next()
		if err != nil {
			return nil, err
		}
		var e AuditEntry
		if err := json.Unmarshal(kv.Value, &e); err != nil {
			return nil, err
		}
		page.Entries = append(page.Entries, e)
	}
	if meta != nil && len(page.Entries) == pageSize {
		page.Bookmark = meta.Bookmark
	}
	return page, nil
}
