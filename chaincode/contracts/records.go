package contracts

import (
	"encoding/json"
	"fmt"

	"github.com/hyperledger/fabric-contract-api-go/v2/contractapi"
)

// Records is the index of FHIR resources that custodians hold off chain: for each resource version, the patient's
// pseudonym, the keyed digest of the canonical resource, who holds it, when it changed and how big it is.
type Records struct {
	contractapi.Contract
	cfg Config
}

func newRecords(cfg Config) *Records {
	c := &Records{cfg: cfg}
	c.Name = "Records"
	c.BeforeTransaction = onChannel(cfg, c.Name)
	return c
}

const (
	maxBundleEntries = 5000
	maxResourceSize  = 64 << 20
	keyRecord        = "record"     // patient, type, id, version -> Record
	keyRecordHead    = "recordHead" // type, id -> RecordHead
	keyCustodian     = "custodian"  // patient, msp -> Custodianship
	keyErasure       = "erasure"    // patient, msp -> Erasure
)

// RecordEntry is one resource version as the gateway registers it.
type RecordEntry struct {
	Patient      string `json:"patient"`
	ResourceType string `json:"resourceType"`
	ID           string `json:"id"`
	Version      int    `json:"version"`
	Digest       string `json:"digest"`
	LastUpdated  string `json:"lastUpdated"`
	Size         int64  `json:"size"`
}

// Record is a registered resource version: the entry as registered, by whom, in which transaction.
type Record struct {
	RecordEntry
	Custodian string `json:"custodian"`
	TxID      string `json:"txId"`
}

// RecordHead points at a resource's newest version and fixes who holds it.
type RecordHead struct {
	Patient   string `json:"patient"`
	Custodian string `json:"custodian"`
	Version   int    `json:"version"`
}

// Custodianship says an org holds records of a patient: it may then act on the patient's behalf (consent with a
// signed document) and must answer access requests for them.
type Custodianship struct {
	Patient   string `json:"patient"`
	Custodian string `json:"custodian"`
	Since     string `json:"since"`
}

// RecordPage is one page of a patient's record index.
type RecordPage struct {
	Records  []Record `json:"records"`
	Bookmark string   `json:"bookmark"`
}

// Erasure records that a custodian crypto-shredded a patient's data key.
type Erasure struct {
	Patient   string `json:"patient"`
	Custodian string `json:"custodian"`
	At        string `json:"at"`
	TxID      string `json:"txId"`
}

type registeredEvent struct {
	Custodian string        `json:"custodian"`
	TxID      string        `json:"txId"`
	Entries   []RecordEntry `json:"entries"`
}

func (e RecordEntry) validate(i int) error {
	at := fmt.Sprintf("entries[%d]", i)
	if err := pseudonym(at+".patient", e.Patient); err != nil {
		return err
	}
	if err := matches(resourcePattern, at+".resourceType", e.ResourceType, "a FHIR resource type"); err != nil {
		return err
	}
	if err := matches(idPattern, at+".id", e.ID, "a FHIR id"); err != nil {
		return err
	}
	if e.Version < 1 {
		return invalid("%s.version must be 1 or more", at)
	}
	if err := digestField(at+".digest", e.Digest); err != nil {
		return err
	}
	if _, err := instant(at+".lastUpdated", e.LastUpdated); err != nil {
		return err
	}
	if e.Size < 0 || e.Size > maxResourceSize {
		return invalid("%s.size %d is out of range", at, e.Size)
	}
	return nil
}

func versionText(v int) string { return fmt.Sprintf("%010d", v) }

// Register records every entry of a bundle in one transaction: all of them or none. Each entry is the next version
// of its resource, held by the caller's org. Registering exactly what is already registered is accepted and changes
// nothing, so a client that lost the answer can safely retry.
func (c *Records) Register(ctx contractapi.TransactionContextInterface, entriesJSON string) (int, error) {
	caller, err := orgWriter(ctx, c.cfg, "Records.Register", KindProvider)
	if err != nil {
		return 0, err
	}
	var entries []RecordEntry
	if err := decode("entries", entriesJSON, &entries); err != nil {
		return 0, err
	}
	if len(entries) == 0 || len(entries) > maxBundleEntries {
		return 0, invalid("a registration holds 1 to %d entries, not %d", maxBundleEntries, len(entries))
	}
	seen := map[string]bool{}
	for i, e := range entries {
		if err := e.validate(i); err != nil {
			return 0, err
		}
		ref := e.ResourceType + "/" + e.ID
		if seen[ref] {
			return 0, invalid("entries[%d]: %s appears twice in one registration", i, ref)
		}
		seen[ref] = true
	}
	now, err := txTime(ctx)
	if err != nil {
		return 0, err
	}
	heads, err := c.heads(ctx, entries)
	if err != nil {
		return 0, err
	}
	// Decide every entry before writing any: a refused bundle writes nothing.
	written := []RecordEntry{}
	for i, e := range entries {
		fresh, err := c.check(ctx, caller.MSP, i, e, heads[i])
		if err != nil {
			return 0, err
		}
		if fresh {
			written = append(written, e)
		}
	}
	err = batched(ctx, func() error {
		patients := map[string]bool{}
		for _, e := range written {
			if err := c.write(ctx, caller.MSP, e); err != nil {
				return err
			}
			patients[e.Patient] = true
		}
		for _, p := range sortedKeys(patients) {
			if err := c.noteCustodian(ctx, p, caller.MSP, timeText(now)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	if len(written) > 0 {
		ev := registeredEvent{Custodian: caller.MSP, TxID: ctx.GetStub().GetTxID(), Entries: written}
		if err := emit(ctx, "Records.Registered", ev); err != nil {
			return 0, err
		}
	}
	return len(written), nil
}

// heads reads the current head of every entry's resource in one round trip to the peer.
func (c *Records) heads(ctx contractapi.TransactionContextInterface, entries []RecordEntry) ([]*RecordHead, error) {
	keys := make([]string, len(entries))
	for i, e := range entries {
		k, err := key(ctx, keyRecordHead, e.ResourceType, e.ID)
		if err != nil {
			return nil, err
		}
		keys[i] = k
	}
	raws, err := ctx.GetStub().GetMultipleStates(keys...)
	if err != nil {
		return nil, err
	}
	heads := make([]*RecordHead, len(entries))
	for i, raw := range raws {
		if raw == nil {
			continue
		}
		heads[i] = &RecordHead{}
		if err := json.Unmarshal(raw, heads[i]); err != nil {
			return nil, err
		}
	}
	return heads, nil
}

// check decides whether an entry is the next version of its resource (true), a retry of what is registered
// (false), or refused; head is the resource's current head (nil: a new resource).
func (c *Records) check(ctx contractapi.TransactionContextInterface, msp string, i int, e RecordEntry, head *RecordHead) (bool, error) {
	if head == nil {
		if e.Version != 1 {
			return false, conflict("entries[%d]: %s/%s is not registered; its first version is 1, not %d", i, e.ResourceType, e.ID, e.Version)
		}
		return true, nil
	}
	if head.Custodian != msp {
		return false, forbidden("entries[%d]: %s/%s is held by %s; only its custodian registers versions", i, e.ResourceType, e.ID, head.Custodian)
	}
	if head.Patient != e.Patient {
		return false, invalid("entries[%d]: %s/%s belongs to another patient", i, e.ResourceType, e.ID)
	}
	if e.Version <= head.Version {
		recKey, err := key(ctx, keyRecord, e.Patient, e.ResourceType, e.ID, versionText(e.Version))
		if err != nil {
			return false, err
		}
		var prior Record
		if ok, err := getJSON(ctx, recKey, &prior); err != nil {
			return false, err
		} else if ok && prior.Digest == e.Digest {
			return false, nil // a retry of what is registered already
		}
		return false, conflict("entries[%d]: %s/%s is at version %d; version %d is taken", i, e.ResourceType, e.ID, head.Version, e.Version)
	}
	if e.Version != head.Version+1 {
		return false, conflict("entries[%d]: %s/%s is at version %d; the next is %d, not %d", i, e.ResourceType, e.ID, head.Version, head.Version+1, e.Version)
	}
	return true, nil
}

// write stores an entry checked by check as its resource's newest version.
func (c *Records) write(ctx contractapi.TransactionContextInterface, msp string, e RecordEntry) error {
	headKey, err := key(ctx, keyRecordHead, e.ResourceType, e.ID)
	if err != nil {
		return err
	}
	recKey, err := key(ctx, keyRecord, e.Patient, e.ResourceType, e.ID, versionText(e.Version))
	if err != nil {
		return err
	}
	rec := Record{RecordEntry: e, Custodian: msp, TxID: ctx.GetStub().GetTxID()}
	if err := putJSON(ctx, recKey, rec); err != nil {
		return err
	}
	return putJSON(ctx, headKey, RecordHead{Patient: e.Patient, Custodian: msp, Version: e.Version})
}

func (c *Records) noteCustodian(ctx contractapi.TransactionContextInterface, patient, msp, now string) error {
	k, err := key(ctx, keyCustodian, patient, msp)
	if err != nil {
		return err
	}
	if ok, err := exists(ctx, k); err != nil || ok {
		return err
	}
	return putJSON(ctx, k, Custodianship{Patient: patient, Custodian: msp, Since: now})
}

// isCustodian reports whether msp holds records of the patient.
func isCustodian(ctx contractapi.TransactionContextInterface, patient, msp string) (bool, error) {
	k, err := key(ctx, keyCustodian, patient, msp)
	if err != nil {
		return false, err
	}
	return exists(ctx, k)
}

// Custodians lists the orgs that hold records of a patient: where a longitudinal record is fetched from.
func (c *Records) Custodians(ctx contractapi.TransactionContextInterface, patient string) ([]Custodianship, error) {
	if err := pseudonym("patient", patient); err != nil {
		return nil, err
	}
	return listJSON[Custodianship](ctx, keyCustodian, patient)
}

// PatientIndex lists a patient's registered resource versions across custodians, a page at a time.
func (c *Records) PatientIndex(ctx contractapi.TransactionContextInterface, patient string, pageSize int, bookmark string) (*RecordPage, error) {
	if err := pseudonym("patient", patient); err != nil {
		return nil, err
	}
	if pageSize < 1 || pageSize > 1000 {
		return nil, invalid("pageSize must be 1 to 1000")
	}
	recs, next, err := pageJSON[Record](ctx, int32(pageSize), bookmark, keyRecord, patient)
	if err != nil {
		return nil, err
	}
	return &RecordPage{Records: recs, Bookmark: next}, nil
}

// History lists every registered version of one resource, oldest first.
func (c *Records) History(ctx contractapi.TransactionContextInterface, resourceType, id string) ([]Record, error) {
	head, err := c.head(ctx, resourceType, id)
	if err != nil {
		return nil, err
	}
	return listJSON[Record](ctx, keyRecord, head.Patient, resourceType, id)
}

// Get returns one version of a resource; version 0 means the newest.
func (c *Records) Get(ctx contractapi.TransactionContextInterface, resourceType, id string, version int) (*Record, error) {
	head, err := c.head(ctx, resourceType, id)
	if err != nil {
		return nil, err
	}
	if version == 0 {
		version = head.Version
	}
	if version < 1 || version > head.Version {
		return nil, notFound("%s/%s has no version %d", resourceType, id, version)
	}
	k, err := key(ctx, keyRecord, head.Patient, resourceType, id, versionText(version))
	if err != nil {
		return nil, err
	}
	var rec Record
	if _, err := getJSON(ctx, k, &rec); err != nil {
		return nil, err
	}
	return &rec, nil
}

func (c *Records) head(ctx contractapi.TransactionContextInterface, resourceType, id string) (*RecordHead, error) {
	if err := matches(resourcePattern, "resourceType", resourceType, "a FHIR resource type"); err != nil {
		return nil, err
	}
	if err := matches(idPattern, "id", id, "a FHIR id"); err != nil {
		return nil, err
	}
	k, err := key(ctx, keyRecordHead, resourceType, id)
	if err != nil {
		return nil, err
	}
	var head RecordHead
	found, err := getJSON(ctx, k, &head)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, notFound("%s/%s is not registered", resourceType, id)
	}
	return &head, nil
}

// RecordErasure notes that the caller's org crypto-shredded the patient's data key: its content is gone and the
// digests on chain can no longer be linked to it. The index entries stay; they now point at nothing readable.
func (c *Records) RecordErasure(ctx contractapi.TransactionContextInterface, patient string) (*Erasure, error) {
	caller, err := custodianOrg(ctx, c.cfg, "Records.RecordErasure", patient)
	if err != nil {
		return nil, err
	}
	now, err := txTime(ctx)
	if err != nil {
		return nil, err
	}
	k, err := key(ctx, keyErasure, patient, caller.MSP)
	if err != nil {
		return nil, err
	}
	er := Erasure{Patient: patient, Custodian: caller.MSP, At: timeText(now), TxID: ctx.GetStub().GetTxID()}
	if err := putJSON(ctx, k, er); err != nil {
		return nil, err
	}
	return &er, emit(ctx, "Records.Erased", er)
}
