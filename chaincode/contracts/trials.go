package contracts

import (
	"regexp"

	"github.com/hyperledger/fabric-contract-api-go/v2/contractapi"
)

// Trials anchors clinical studies: a study is registered with its protocol digest before anyone is enrolled, each
// subject enters with a research consent, and dataset versions are anchored so that a dataset presented later can
// be checked against what was locked.
type Trials struct {
	contractapi.Contract
	cfg Config
}

func newTrials(cfg Config) *Trials {
	c := &Trials{cfg: cfg}
	c.Name = "Trials"
	c.BeforeTransaction = onChannel(cfg, c.Name)
	return c
}

const (
	keyStudy     = "study"     // studyId -> Study
	keyEnrolment = "enrolment" // studyId, subject -> Enrolment
	keyDataset   = "dataset"   // studyId, version -> Dataset
)

var versionPattern = regexp.MustCompile(`^[A-Za-z0-9._\-]{1,32}$`)

type Study struct {
	StudyID        string `json:"studyId"`
	Sponsor        string `json:"sponsor"`
	ProtocolDigest string `json:"protocolDigest"`
	RegisteredAt   string `json:"registeredAt"`
	TxID           string `json:"txId"`
}

type Enrolment struct {
	StudyID    string `json:"studyId"`
	Subject    string `json:"subject"`
	ConsentID  string `json:"consentId"`
	EnrolledBy string `json:"enrolledBy"`
	EnrolledAt string `json:"enrolledAt"`
	TxID       string `json:"txId"`
}

type Dataset struct {
	StudyID    string `json:"studyId"`
	Version    string `json:"version"`
	Digest     string `json:"digest"`
	AnchoredAt string `json:"anchoredAt"`
	TxID       string `json:"txId"`
}

// DatasetCheck answers VerifyDataset.
type DatasetCheck struct {
	Match          bool   `json:"match"`
	AnchoredDigest string `json:"anchoredDigest"`
	AnchoredAt     string `json:"anchoredAt"`
}

// RegisterStudy fixes a study's protocol (by digest) under the caller's org (a provider or a manufacturer) as sponsor.
func (c *Trials) RegisterStudy(ctx contractapi.TransactionContextInterface, studyID, protocolDigest string) (*Study, error) {
	caller, err := orgWriter(ctx, c.cfg, "Trials.RegisterStudy", KindProvider, KindManufacturer)
	if err != nil {
		return nil, err
	}
	if err := matches(idPattern, "studyId", studyID, "a study id"); err != nil {
		return nil, err
	}
	if err := digestField("protocolDigest", protocolDigest); err != nil {
		return nil, err
	}
	k, err := key(ctx, keyStudy, studyID)
	if err != nil {
		return nil, err
	}
	if err := mustBeNew(ctx, k, "study %s is registered already; its protocol cannot change", studyID); err != nil {
		return nil, err
	}
	now, err := txTime(ctx)
	if err != nil {
		return nil, err
	}
	s := Study{StudyID: studyID, Sponsor: caller.MSP, ProtocolDigest: protocolDigest, RegisteredAt: timeText(now), TxID: ctx.GetStub().GetTxID()}
	if err := putJSON(ctx, k, s); err != nil {
		return nil, err
	}
	return &s, emit(ctx, "Trials.StudyRegistered", s)
}

func (c *Trials) study(ctx contractapi.TransactionContextInterface, studyID string) (*Study, error) {
	if err := matches(idPattern, "studyId", studyID, "a study id"); err != nil {
		return nil, err
	}
	k, err := key(ctx, keyStudy, studyID)
	if err != nil {
		return nil, err
	}
	var s Study
	if found, err := getJSON(ctx, k, &s); err != nil {
		return nil, err
	} else if !found {
		return nil, notFound("study %s is not registered; register it with its protocol digest before enrolment", studyID)
	}
	return &s, nil
}

// Enrol adds a subject under an active research consent (purpose HRESCH) that the subject gave to the sponsor. The
// enrolling org must hold records of the subject, and the consent must be one that opens its records: signed by the
// subject's identity as it knows it, or recorded by itself (see Consent).
func (c *Trials) Enrol(ctx contractapi.TransactionContextInterface, studyID, subject, consentID string) (*Enrolment, error) {
	caller, err := custodianOrg(ctx, c.cfg, "Trials.Enrol", subject)
	if err != nil {
		return nil, err
	}
	s, err := c.study(ctx, studyID)
	if err != nil {
		return nil, err
	}
	consent, _, err := loadConsent(ctx, consentID)
	if err != nil {
		return nil, err
	}
	now, err := txTime(ctx)
	if err != nil {
		return nil, err
	}
	if consent.Patient != subject || consent.Grantee != s.Sponsor {
		return nil, forbidden("consent %s is not the subject's consent to the sponsor %s", consentID, s.Sponsor)
	}
	if ok, err := opens(ctx, consent, caller.MSP); err != nil {
		return nil, err
	} else if !ok {
		return nil, forbidden("consent %s was recorded by %s; it does not open %s's records", consentID, consent.GrantedBy, caller.MSP)
	}
	why := consent.inForce(now, "HRESCH")
	if why == "" {
		if reach, notCovered := consent.reach(ask{resourceType: "ResearchSubject"}); reach == "" {
			why = notCovered
		}
	}
	if why != "" {
		return nil, forbidden("consent %s does not allow enrolment: %s", consentID, why)
	}
	k, err := key(ctx, keyEnrolment, studyID, subject)
	if err != nil {
		return nil, err
	}
	if err := mustBeNew(ctx, k, "the subject is enrolled in %s already", studyID); err != nil {
		return nil, err
	}
	e := Enrolment{StudyID: studyID, Subject: subject, ConsentID: consentID, EnrolledBy: caller.MSP, EnrolledAt: timeText(now), TxID: ctx.GetStub().GetTxID()}
	if err := putJSON(ctx, k, e); err != nil {
		return nil, err
	}
	return &e, emit(ctx, "Trials.SubjectEnrolled", e)
}

// Enrolments lists a study's subjects.
func (c *Trials) Enrolments(ctx contractapi.TransactionContextInterface, studyID string) ([]Enrolment, error) {
	if _, err := c.study(ctx, studyID); err != nil {
		return nil, err
	}
	return listJSON[Enrolment](ctx, keyEnrolment, studyID)
}

// AnchorDataset locks a dataset version by digest. Only the sponsor anchors, and a version is anchored once.
func (c *Trials) AnchorDataset(ctx contractapi.TransactionContextInterface, studyID, version, digest string) (*Dataset, error) {
	caller, err := orgWriter(ctx, c.cfg, "Trials.AnchorDataset", KindProvider, KindManufacturer)
	if err != nil {
		return nil, err
	}
	s, err := c.study(ctx, studyID)
	if err != nil {
		return nil, err
	}
	if caller.MSP != s.Sponsor {
		return nil, forbidden("only the sponsor %s anchors datasets of %s", s.Sponsor, studyID)
	}
	if err := matches(versionPattern, "version", version, "a dataset version"); err != nil {
		return nil, err
	}
	if err := digestField("digest", digest); err != nil {
		return nil, err
	}
	k, err := key(ctx, keyDataset, studyID, version)
	if err != nil {
		return nil, err
	}
	if err := mustBeNew(ctx, k, "dataset %s of %s is anchored already", version, studyID); err != nil {
		return nil, err
	}
	now, err := txTime(ctx)
	if err != nil {
		return nil, err
	}
	d := Dataset{StudyID: studyID, Version: version, Digest: digest, AnchoredAt: timeText(now), TxID: ctx.GetStub().GetTxID()}
	if err := putJSON(ctx, k, d); err != nil {
		return nil, err
	}
	return &d, emit(ctx, "Trials.DatasetAnchored", d)
}

// VerifyDataset tells whether a presented dataset's digest matches the anchored version.
func (c *Trials) VerifyDataset(ctx contractapi.TransactionContextInterface, studyID, version, digest string) (*DatasetCheck, error) {
	if _, err := c.study(ctx, studyID); err != nil {
		return nil, err
	}
	if err := matches(versionPattern, "version", version, "a dataset version"); err != nil {
		return nil, err
	}
	if err := digestField("digest", digest); err != nil {
		return nil, err
	}
	k, err := key(ctx, keyDataset, studyID, version)
	if err != nil {
		return nil, err
	}
	var d Dataset
	if found, err := getJSON(ctx, k, &d); err != nil {
		return nil, err
	} else if !found {
		return nil, notFound("dataset %s of %s is not anchored", version, studyID)
	}
	return &DatasetCheck{Match: d.Digest == digest, AnchoredDigest: d.Digest, AnchoredAt: d.AnchoredAt}, nil
}
