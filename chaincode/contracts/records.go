package contracts

import (
	"encoding/json"
	"fmt"

	"github.com/hyperledger/fabric-contract-api-go/v2/contractapi"
)

// Records is the index of FHIR resources that custodians hold off chain: for each resource version, the patient's
// pseudonym (or none, for a directory record), the keyed digest of the canonical resource, who holds it, when it
// changed and how big it is.
//
// A resource is named on chain by an opaque resourceKey that the custodian's gateway derives from the resource's
// type and id with a key the ledger never sees: FHIR ids are chosen by clients and can be medical record numbers, so
// they never reach the ledger. The chaincode cannot check that a key was derived correctly; it refuses anything that
// is not 64 lower-case hex characters.
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
	keyRecord        = "record"          // patient, type, resourceKey, version -> Record
	keyDirectory     = "directoryRecord" // custodian, type, resourceKey, version -> Record
	keyRecordHead    = "recordHead"      // resourceKey -> RecordHead
	keyCustodian     = "custodian"       // patient, msp -> Custodianship
	keyErasure       = "erasure"         // patient, msp -> Erasure
	keyPatientLink   = "patientLink"     // consortium pseudonym, custodian, local pseudonym -> PatientLink
	keyLinkOf        = "patientLinkOf"   // local pseudonym, custodian -> PatientLink
)

// patientTypes are resource types that always belong to a patient (the FHIR R4 Patient compartment, less the types
// that belong to one only when they name one, such as a Device): they are never registered as directory records.
// Every other type may be: resources about the organisation rather than a patient (who works where, what is
// stocked, which devices exist, definitions).
var patientTypes = map[string]bool{
	"AdverseEvent": true, "AllergyIntolerance": true, "BodyStructure": true, "CarePlan": true, "CareTeam": true,
	"Claim": true, "ClaimResponse": true, "ClinicalImpression": true, "Communication": true,
	"CommunicationRequest": true, "Composition": true, "Condition": true, "Consent": true, "Coverage": true,
	"CoverageEligibilityRequest": true, "CoverageEligibilityResponse": true, "DetectedIssue": true,
	"DeviceRequest": true, "DeviceUseStatement": true, "DiagnosticReport": true, "DocumentManifest": true,
	"DocumentReference": true, "Encounter": true, "EnrollmentRequest": true, "EpisodeOfCare": true,
	"ExplanationOfBenefit": true, "FamilyMemberHistory": true, "Flag": true, "Goal": true,
	"GuidanceResponse": true, "ImagingStudy": true, "Immunization": true, "ImmunizationEvaluation": true,
	"ImmunizationRecommendation": true, "Invoice": true, "Media": true, "MedicationAdministration": true,
	"MedicationDispense": true, "MedicationRequest": true, "MedicationStatement": true, "MolecularSequence": true,
	"NutritionOrder": true, "Observation": true, "Patient": true, "Procedure": true,
	"QuestionnaireResponse": true, "RelatedPerson": true, "RequestGroup": true, "ResearchSubject": true,
	"RiskAssessment": true, "ServiceRequest": true, "Specimen": true, "SupplyDelivery": true, "Task": true,
	"VisionPrescription": true,
}

// RecordEntry is one resource version as the gateway registers it: a patient's (patient set, directory false) or a
// directory record of the custodian (patient "", directory true).
type RecordEntry struct {
	Patient      string `json:"patient"`
	Directory    bool   `json:"directory"`
	ResourceType string `json:"resourceType"`
	ResourceKey  string `json:"resourceKey"`
	Version      int    `json:"version"`
	Digest       string `json:"digest"`
	DigestScheme string `json:"digestScheme"` // how digest was computed: v1 (default) | v2
	LastUpdated  string `json:"lastUpdated"`
	Size         int64  `json:"size"`
}

// Digest schemes: how a custodian computed a resource version's digest, so that it can be verified later.
const (
	SchemeWholeResource = "v1" // HMAC over the whole canonical resource
	SchemeMerkle        = "v2" // Merkle root over salted leaves of the resource's elements (selective disclosure)
)

// Record is a registered resource version: the entry as registered, by whom, in which transaction.
type Record struct {
	RecordEntry
	Custodian string `json:"custodian"`
	TxID      string `json:"txId"`
}

// schemeOrDefault is the record's digest scheme; records registered before schemes existed are v1.
func (r Record) schemeOrDefault() string {
	if r.DigestScheme == "" {
		return SchemeWholeResource
	}
	return r.DigestScheme
}

// RecordHead points at a resource's newest version and fixes who holds it, whose it is and what type it is.
type RecordHead struct {
	Patient      string `json:"patient"`
	Directory    bool   `json:"directory"`
	ResourceType string `json:"resourceType"`
	Custodian    string `json:"custodian"`
	Version      int    `json:"version"`
}

// Custodianship says an org holds records of a patient: it may then act on the patient's behalf (consent with a
// signed document) and must answer access requests for them. LocalPseudonym is set when the org holds them under its
// own local pseudonym of the patient and linked that to this one (LinkPatient).
type Custodianship struct {
	Patient        string `json:"patient"`
	Custodian      string `json:"custodian"`
	Since          string `json:"since"`
	LocalPseudonym string `json:"localPseudonym"`
}

// PatientLink says a custodian's records under its local pseudonym of a patient are the records of the patient known
// to the consortium by another pseudonym.
type PatientLink struct {
	Consortium string `json:"consortium"`
	Local      string `json:"local"`
	Custodian  string `json:"custodian"`
	Status     string `json:"status"` // linked | unlinked
	LinkedAt   string `json:"linkedAt"`
	UnlinkedAt string `json:"unlinkedAt"`
	TxID       string `json:"txId"`
}

// RecordPage is one page of a patient's (or a custodian's directory) record index.
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
	if err := matches(resourcePattern, at+".resourceType", e.ResourceType, "a FHIR resource type"); err != nil {
		return err
	}
	if e.Directory {
		if e.Patient != "" {
			return invalid("%s: a directory record belongs to no patient; patient must be empty", at)
		}
		if patientTypes[e.ResourceType] {
			return invalid("%s: %s is not a directory resource type; register it under its patient", at, e.ResourceType)
		}
	} else if err := pseudonym(at+".patient", e.Patient); err != nil {
		return err
	}
	if err := opaqueKey(at+".resourceKey", e.ResourceKey); err != nil {
		return err
	}
	if e.Version < 1 {
		return invalid("%s.version must be 1 or more", at)
	}
	if err := digestField(at+".digest", e.Digest); err != nil {
		return err
	}
	if e.DigestScheme != SchemeWholeResource && e.DigestScheme != SchemeMerkle {
		return invalid("%s.digestScheme %q is not v1 or v2", at, e.DigestScheme)
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

// recordKey is where one version of an entry's resource is stored.
func recordKey(ctx contractapi.TransactionContextInterface, e RecordEntry, custodian string) (string, error) {
	if e.Directory {
		return key(ctx, keyDirectory, custodian, e.ResourceType, e.ResourceKey, versionText(e.Version))
	}
	return key(ctx, keyRecord, e.Patient, e.ResourceType, e.ResourceKey, versionText(e.Version))
}

// Register records every entry of a bundle in one transaction: all of them or none. An entry is a patient's resource
// or a directory record of the caller's org, and a bundle may hold both. Each entry is the next version of its
// resource, held by the caller's org. Registering exactly what is already registered is accepted and changes
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
		if e.DigestScheme == "" {
			e.DigestScheme = SchemeWholeResource
			entries[i] = e
		}
		if err := e.validate(i); err != nil {
			return 0, err
		}
		if seen[e.ResourceKey] {
			return 0, invalid("entries[%d]: resourceKey %s appears twice in one registration", i, e.ResourceKey)
		}
		seen[e.ResourceKey] = true
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
			if !e.Directory {
				patients[e.Patient] = true
			}
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
		k, err := key(ctx, keyRecordHead, e.ResourceKey)
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
			return false, conflict("entries[%d]: resource %s is not registered; its first version is 1, not %d", i, e.ResourceKey, e.Version)
		}
		return true, nil
	}
	if head.Custodian != msp {
		return false, forbidden("entries[%d]: resource %s is held by %s; only its custodian registers versions", i, e.ResourceKey, head.Custodian)
	}
	if head.Directory != e.Directory {
		return false, invalid("entries[%d]: resource %s cannot change between a directory record and a patient's record", i, e.ResourceKey)
	}
	if head.ResourceType != e.ResourceType {
		return false, invalid("entries[%d]: resource %s is a %s, not a %s", i, e.ResourceKey, head.ResourceType, e.ResourceType)
	}
	if head.Patient != e.Patient {
		return false, invalid("entries[%d]: resource %s belongs to another patient", i, e.ResourceKey)
	}
	if e.Version <= head.Version {
		recKey, err := recordKey(ctx, e, msp)
		if err != nil {
			return false, err
		}
		var prior Record
		if ok, err := getJSON(ctx, recKey, &prior); err != nil {
			return false, err
		} else if ok && prior.Digest == e.Digest && prior.schemeOrDefault() == e.DigestScheme {
			return false, nil // a retry of what is registered already
		}
		return false, conflict("entries[%d]: resource %s is at version %d; version %d is taken", i, e.ResourceKey, head.Version, e.Version)
	}
	if e.Version != head.Version+1 {
		return false, conflict("entries[%d]: resource %s is at version %d; the next is %d, not %d", i, e.ResourceKey, head.Version, head.Version+1, e.Version)
	}
	return true, nil
}

// write stores an entry checked by check as its resource's newest version.
func (c *Records) write(ctx contractapi.TransactionContextInterface, msp string, e RecordEntry) error {
	headKey, err := key(ctx, keyRecordHead, e.ResourceKey)
	if err != nil {
		return err
	}
	recKey, err := recordKey(ctx, e, msp)
	if err != nil {
		return err
	}
	rec := Record{RecordEntry: e, Custodian: msp, TxID: ctx.GetStub().GetTxID()}
	if err := putJSON(ctx, recKey, rec); err != nil {
		return err
	}
	head := RecordHead{Patient: e.Patient, Directory: e.Directory, ResourceType: e.ResourceType, Custodian: msp, Version: e.Version}
	return putJSON(ctx, headKey, head)
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

// holdsRecords reports whether msp registered records under this pseudonym itself.
func holdsRecords(ctx contractapi.TransactionContextInterface, patient, msp string) (bool, error) {
	k, err := key(ctx, keyCustodian, patient, msp)
	if err != nil {
		return false, err
	}
	return exists(ctx, k)
}

// isCustodian reports whether msp holds records of the patient: under this pseudonym, or under a local pseudonym it
// linked to this one.
func isCustodian(ctx contractapi.TransactionContextInterface, patient, msp string) (bool, error) {
	if ok, err := holdsRecords(ctx, patient, msp); err != nil || ok {
		return ok, err
	}
	links, err := listJSON[PatientLink](ctx, keyPatientLink, patient, msp)
	if err != nil {
		return false, err
	}
	for _, l := range links {
		if l.Status == "linked" {
			return true, nil
		}
	}
	return false, nil
}

// Custodians lists the orgs that hold records of a patient: where a longitudinal record is fetched from. It reports
// the orgs that registered records under this pseudonym, then, with LocalPseudonym set, the orgs that linked their
// local pseudonym of the patient to it (an org can appear both ways). Fetch a linked org's records by its local
// pseudonym.
func (c *Records) Custodians(ctx contractapi.TransactionContextInterface, patient string) ([]Custodianship, error) {
	if err := pseudonym("patient", patient); err != nil {
		return nil, err
	}
	out, err := listJSON[Custodianship](ctx, keyCustodian, patient)
	if err != nil {
		return nil, err
	}
	links, err := listJSON[PatientLink](ctx, keyPatientLink, patient)
	if err != nil {
		return nil, err
	}
	for _, l := range links {
		if l.Status == "linked" {
			out = append(out, Custodianship{Patient: patient, Custodian: l.Custodian, Since: l.LinkedAt, LocalPseudonym: l.Local})
		}
	}
	return out, nil
}

// LinkPatient records that the caller's records under its local pseudonym of a patient (a patient registered before
// a consortium-wide identifier was known) are the records of the patient the consortium knows by another pseudonym.
// Only an org that registered records under the local pseudonym itself links it, and the link covers that org's
// records only: another org's records under the same local pseudonym stay unlinked. A local pseudonym is linked to
// one consortium pseudonym at a time; linking it again to the same one changes nothing.
func (c *Records) LinkPatient(ctx contractapi.TransactionContextInterface, localPseudonym, consortiumPseudonym string) (*PatientLink, error) {
	caller, err := orgWriter(ctx, c.cfg, "Records.LinkPatient", KindProvider)
	if err != nil {
		return nil, err
	}
	if err := pseudonym("localPseudonym", localPseudonym); err != nil {
		return nil, err
	}
	if err := pseudonym("consortiumPseudonym", consortiumPseudonym); err != nil {
		return nil, err
	}
	if localPseudonym == consortiumPseudonym {
		return nil, invalid("a pseudonym is not linked to itself")
	}
	if ok, err := holdsRecords(ctx, localPseudonym, caller.MSP); err != nil {
		return nil, err
	} else if !ok {
		return nil, forbidden("%s registered no records under this local pseudonym; only its own records can be linked", caller.MSP)
	}
	if chained, err := c.linkOf(ctx, consortiumPseudonym, caller.MSP); err != nil {
		return nil, err
	} else if chained != nil && chained.Status == "linked" {
		return nil, invalid("consortiumPseudonym is a local pseudonym that %s linked to another; link to that one", caller.MSP)
	}
	current, err := c.linkOf(ctx, localPseudonym, caller.MSP)
	if err != nil {
		return nil, err
	}
	if current != nil && current.Status == "linked" {
		if current.Consortium == consortiumPseudonym {
			return current, nil
		}
		return nil, conflict("%s linked this local pseudonym to another patient; unlink it first", caller.MSP)
	}
	now, err := txTime(ctx)
	if err != nil {
		return nil, err
	}
	l := &PatientLink{Consortium: consortiumPseudonym, Local: localPseudonym, Custodian: caller.MSP, Status: "linked",
		LinkedAt: timeText(now), TxID: ctx.GetStub().GetTxID()}
	if err := c.saveLink(ctx, l); err != nil {
		return nil, err
	}
	return l, emit(ctx, "Records.PatientLinked", l)
}

// UnlinkPatient undoes the caller's link of its local pseudonym (a wrong match). The link stays on record as unlinked.
func (c *Records) UnlinkPatient(ctx contractapi.TransactionContextInterface, localPseudonym, consortiumPseudonym string) (*PatientLink, error) {
	caller, err := orgWriter(ctx, c.cfg, "Records.UnlinkPatient", KindProvider)
	if err != nil {
		return nil, err
	}
	if err := pseudonym("localPseudonym", localPseudonym); err != nil {
		return nil, err
	}
	if err := pseudonym("consortiumPseudonym", consortiumPseudonym); err != nil {
		return nil, err
	}
	l, err := c.linkOf(ctx, localPseudonym, caller.MSP)
	if err != nil {
		return nil, err
	}
	if l == nil || l.Status != "linked" || l.Consortium != consortiumPseudonym {
		return nil, notFound("%s has no link of this local pseudonym to this patient", caller.MSP)
	}
	now, err := txTime(ctx)
	if err != nil {
		return nil, err
	}
	l.Status, l.UnlinkedAt, l.TxID = "unlinked", timeText(now), ctx.GetStub().GetTxID()
	if err := c.saveLink(ctx, l); err != nil {
		return nil, err
	}
	return l, emit(ctx, "Records.PatientUnlinked", l)
}

// Links lists every link to a consortium pseudonym, linked or unlinked.
func (c *Records) Links(ctx contractapi.TransactionContextInterface, consortiumPseudonym string) ([]PatientLink, error) {
	if err := pseudonym("consortiumPseudonym", consortiumPseudonym); err != nil {
		return nil, err
	}
	return listJSON[PatientLink](ctx, keyPatientLink, consortiumPseudonym)
}

func (c *Records) linkOf(ctx contractapi.TransactionContextInterface, local, msp string) (*PatientLink, error) {
	k, err := key(ctx, keyLinkOf, local, msp)
	if err != nil {
		return nil, err
	}
	var l PatientLink
	if found, err := getJSON(ctx, k, &l); err != nil || !found {
		return nil, err
	}
	return &l, nil
}

func (c *Records) saveLink(ctx contractapi.TransactionContextInterface, l *PatientLink) error {
	k, err := key(ctx, keyPatientLink, l.Consortium, l.Custodian, l.Local)
	if err != nil {
		return err
	}
	if err := putJSON(ctx, k, l); err != nil {
		return err
	}
	k, err = key(ctx, keyLinkOf, l.Local, l.Custodian)
	if err != nil {
		return err
	}
	return putJSON(ctx, k, l)
}

// PatientIndex lists a patient's registered resource versions across custodians, a page at a time. It lists what
// was registered under this pseudonym; a linked custodian's records are listed under its local pseudonym.
func (c *Records) PatientIndex(ctx contractapi.TransactionContextInterface, patient string, pageSize int, bookmark string) (*RecordPage, error) {
	if err := pseudonym("patient", patient); err != nil {
		return nil, err
	}
	return recordPage(ctx, pageSize, bookmark, keyRecord, patient)
}

// DirectoryIndex lists a custodian's directory records (every version), a page at a time.
func (c *Records) DirectoryIndex(ctx contractapi.TransactionContextInterface, custodian string, pageSize int, bookmark string) (*RecordPage, error) {
	if err := matches(mspPattern, "custodian", custodian, "an MSP id"); err != nil {
		return nil, err
	}
	return recordPage(ctx, pageSize, bookmark, keyDirectory, custodian)
}

func recordPage(ctx contractapi.TransactionContextInterface, pageSize int, bookmark, objectType, attr string) (*RecordPage, error) {
	if pageSize < 1 || pageSize > 1000 {
		return nil, invalid("pageSize must be 1 to 1000")
	}
	recs, next, err := pageJSON[Record](ctx, int32(pageSize), bookmark, objectType, attr)
	if err != nil {
		return nil, err
	}
	return &RecordPage{Records: withSchemes(recs), Bookmark: next}, nil
}

// History lists every registered version of one resource, oldest first.
func (c *Records) History(ctx contractapi.TransactionContextInterface, resourceKey string) ([]Record, error) {
	head, err := c.head(ctx, resourceKey)
	if err != nil {
		return nil, err
	}
	var recs []Record
	if head.Directory {
		recs, err = listJSON[Record](ctx, keyDirectory, head.Custodian, head.ResourceType, resourceKey)
	} else {
		recs, err = listJSON[Record](ctx, keyRecord, head.Patient, head.ResourceType, resourceKey)
	}
	return withSchemes(recs), err
}

// withSchemes fills in the digest scheme of records stored before schemes existed.
func withSchemes(recs []Record) []Record {
	for i := range recs {
		recs[i].DigestScheme = recs[i].schemeOrDefault()
	}
	return recs
}

// Get returns one version of a resource; version 0 means the newest.
func (c *Records) Get(ctx contractapi.TransactionContextInterface, resourceKey string, version int) (*Record, error) {
	head, err := c.head(ctx, resourceKey)
	if err != nil {
		return nil, err
	}
	if version == 0 {
		version = head.Version
	}
	if version < 1 || version > head.Version {
		return nil, notFound("resource %s has no version %d", resourceKey, version)
	}
	e := RecordEntry{Patient: head.Patient, Directory: head.Directory, ResourceType: head.ResourceType, ResourceKey: resourceKey, Version: version}
	k, err := recordKey(ctx, e, head.Custodian)
	if err != nil {
		return nil, err
	}
	var rec Record
	if _, err := getJSON(ctx, k, &rec); err != nil {
		return nil, err
	}
	rec.DigestScheme = rec.schemeOrDefault()
	return &rec, nil
}

func (c *Records) head(ctx contractapi.TransactionContextInterface, resourceKey string) (*RecordHead, error) {
	if err := opaqueKey("resourceKey", resourceKey); err != nil {
		return nil, err
	}
	k, err := key(ctx, keyRecordHead, resourceKey)
	if err != nil {
		return nil, err
	}
	var head RecordHead
	found, err := getJSON(ctx, k, &head)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, notFound("resource %s is not registered", resourceKey)
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
