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
	Resource string `json:"resource"` // "Observation/<resourceKey>", "Observation" (all of a type), or "$everything"
	Purpose  string `json:"purpose"`
	// Categories of the one resource requested (FHIR category codes), as the custodian holds it; optional, and only
	// for a Type/<resourceKey> request. A grant limited to categories covers the resource if it has one of them.
	Categories []string `json:"categories,omitempty"`
}

// AuditEntry is one logged access decision.
type AuditEntry struct {
	Patient    string     `json:"patient"`
	Accessor   string     `json:"accessor"`
	Custodian  string     `json:"custodian"`
	Resource   string     `json:"resource"`
	Categories []string   `json:"categories"` // of the one resource requested, as the request gave them
	Purpose    string     `json:"purpose"`
	Decision   string     `json:"decision"`
	Reason     string     `json:"reason"`
	ConsentID  string     `json:"consentId"`
	Coverage   []Coverage `json:"coverage"` // what the custodian may release: see Decision
	At         string     `json:"at"`
	TxID       string     `json:"txId"`
}

// AuditPage is one page of log entries, oldest first.
type AuditPage struct {
	Entries  []AuditEntry `json:"entries"`
	Bookmark string       `json:"bookmark"`
}

// Everything names the whole record of a patient in an access request.
const Everything = "$everything"

// askOf reads "Type/<resourceKey>" (one resource), "Type" (every resource of the type) or "$everything" (the whole
// record, type "*"). A resource is named by its opaque key: a FHIR id never reaches the log.
func askOf(req AccessRequest) (ask, error) {
	if req.Resource == Everything {
		return ask{resourceType: "*", categories: req.Categories}, nil
	}
	typ, rkey, one := strings.Cut(req.Resource, "/")
	if !resourcePattern.MatchString(typ) || (one && !hex64Pattern.MatchString(rkey)) {
		return ask{}, invalid("resource %q is neither Type/<resourceKey>, Type nor $everything (a resourceKey is 64 lower-case hex)", req.Resource)
	}
	return ask{resourceType: typ, single: one, categories: req.Categories}, nil
}

// RecordAccess decides the request against the patient's consents and logs the decision. The caller must be a
// custodian of the patient's records: the org about to serve them, and only grants that open its records count. It
// returns the decision: permit (serve what was asked), partial (serve exactly what the coverage lists: its types
// and, where given, categories) or deny. A deny is a normal answer here, not an error, so that it is committed to
// the log.
func (c *Audit) RecordAccess(ctx contractapi.TransactionContextInterface, requestJSON string) (*AuditEntry, error) {
	if _, err := orgWriter(ctx, c.cfg, "Audit.RecordAccess", KindProvider); err != nil {
		return nil, err
	}
	var req AccessRequest
	if err := decode("request", requestJSON, &req); err != nil {
		return nil, err
	}
	q, err := askOf(req)
	if err != nil {
		return nil, err
	}
	caller, err := custodianOrg(ctx, c.cfg, "Audit.RecordAccess", req.Patient)
	if err != nil {
		return nil, err
	}
	// The caller is the custodian about to serve: only grants that open its own records count.
	decision, err := checkConsent(ctx, req.Patient, caller.MSP, req.Accessor, req.Purpose, q)
	if err != nil {
		return nil, err
	}
	now, err := txTime(ctx)
	if err != nil {
		return nil, err
	}
	txID := ctx.GetStub().GetTxID()
	entry := AuditEntry{
		Patient: req.Patient, Accessor: req.Accessor, Custodian: caller.MSP, Resource: req.Resource, Categories: nonNil(req.Categories),
		Purpose: req.Purpose, Decision: decision.Decision, Reason: decision.Reason, ConsentID: decision.ConsentID,
		Coverage: decision.Coverage, At: timeText(now), TxID: txID,
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
