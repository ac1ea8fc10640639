package contracts

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"

	"github.com/hyperledger/fabric-contract-api-go/v2/contractapi"
)

// A patient's own identity is an X.509 certificate that speaks for the patient: grants and revokes it signs are the
// patient's own. Which certificate that is, each custodian decides for itself: a binding is kept per (patient,
// custodian), so an org that makes itself a custodian of a patient (every member can compute pseudonyms and register
// a dummy record) binds an identity that only its own records trust, and can neither replace nor outrun the binding
// of the custodian that really holds the patient's records.
//
// A binding takes two signatures: the custodian proposes the certificate (RegisterPatientIdentity), and the holder
// of that certificate confirms it (ConfirmPatientIdentity). So nobody can turn someone else's certificate (an org's
// gateway identity, say) into a patient identity. Once bound, the binding changes only when the bound identity
// itself rotates to a new certificate (RotatePatientIdentity, which the new certificate confirms), or when the
// custodian that registered it recovers it for a patient who lost their key (RecoverPatientIdentity, with the
// digest of the identity-proofing document; the old certificate stops counting at once). Every state a binding
// had is kept in its history.
//
// A patient identity never acts for an org: patients' certificates are issued by a member org's CA as clients, and a
// patient must not record custodian consents, register records, log accesses, submit claims or move drug packs in
// that org's name. So a patient certificate is marked: besides its NodeOU client it carries the subject OU patient
// (PatientOU), which every channel's contracts read from the signer's certificate (caller.go). Only marked
// certificates are proposed (RegisterPatientIdentity, RotatePatientIdentity, RecoverPatientIdentity) and confirmed
// (ConfirmPatientIdentity), so every patient identity confirmed under this rule is marked. On providers, where the bindings are, a
// confirmed certificate is refused org actions by its binding as well (orgWriter).

const (
	keyPatientIdentity = "patientIdentity"    // patient, custodian -> PatientIdentity
	keyIdentityLog     = "patientIdentityLog" // patient, custodian, version -> PatientIdentity (every state)
	keyBoundIdentity   = "boundIdentity"      // fingerprint, patient, custodian -> "" (confirmed bindings only)
)

// How a pending certificate was proposed.
const (
	ViaRegistration = "registration"
	ViaRotation     = "rotation"
	ViaRecovery     = "recovery"
)

// PatientIdentity is one custodian's binding of a patient's pseudonym to the SHA-256 fingerprint of the patient's
// own certificate.
type PatientIdentity struct {
	Patient        string `json:"patient"`
	RegisteredBy   string `json:"registeredBy"`   // the custodian whose binding this is
	Fingerprint    string `json:"fingerprint"`    // the confirmed identity; "" before confirmation and after a recovery
	Pending        string `json:"pending"`        // a certificate proposed and not yet confirmed by its holder
	PendingVia     string `json:"pendingVia"`     // registration | rotation | recovery
	DocumentDigest string `json:"documentDigest"` // recovery: digest of the identity-proofing document
	Version        int    `json:"version"`        // 1 at registration, +1 on every change
	At             string `json:"at"`
	TxID           string `json:"txId"`
}

// IdentityChange is the event payload of a rotation or confirmation, which may touch several custodians' bindings.
type IdentityChange struct {
	Patient  string            `json:"patient"`
	Bindings []PatientIdentity `json:"bindings"`
	TxID     string            `json:"txId"`
}

// patientCertFingerprint is the fingerprint of a certificate proposed as a patient's identity: one PEM certificate,
// a client (NodeOU client) marked with OU patient.
func patientCertFingerprint(certificatePEM string) (string, error) {
	block, rest := pem.Decode([]byte(certificatePEM))
	if block == nil || block.Type != "CERTIFICATE" {
		return "", invalid("certificate must be one PEM-encoded X.509 certificate")
	}
	if next, _ := pem.Decode(rest); next != nil {
		return "", invalid("certificate must be one PEM-encoded X.509 certificate, not a chain")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return "", invalid("certificate does not parse: %v", err)
	}
	if err := patientMarked(cert); err != nil {
		return "", invalid("certificate %s", err)
	}
	sum := sha256.Sum256(block.Bytes)
	return hex.EncodeToString(sum[:]), nil
}

// patientMarked says why a certificate is not a patient certificate (a client marked with OU patient), or nil.
func patientMarked(cert *x509.Certificate) error {
	if !isPatientCertificate(cert) || roleOf(cert) != "client" {
		return fmt.Errorf("is not a patient certificate: a patient's own certificate is a client (NodeOU client) "+
			"that carries OU %s; its OUs are %q", PatientOU, cert.Subject.OrganizationalUnit)
	}
	return nil
}

// isPatientIdentity reports whether the certificate is a confirmed patient identity of any patient.
func isPatientIdentity(ctx contractapi.TransactionContextInterface, fingerprint string) (bool, error) {
	it, err := ctx.GetStub().GetStateByPartialCompositeKey(keyBoundIdentity, []string{fingerprint})
	if err != nil {
		return false, err
	}
	defer it.Close()
	return it.HasNext(), nil
}

// orgWriter returns the caller if it may act for its org on providers: a client or admin of an org of one of the
// kinds, whose certificate is neither marked as a patient's (writerOfKind) nor confirmed as a patient identity.
func orgWriter(ctx contractapi.TransactionContextInterface, cfg Config, action, kind string, more ...string) (Caller, error) {
	c, err := writerOfKind(ctx, cfg, kind, action, more...)
	if err != nil {
		return c, err
	}
	if patient, err := isPatientIdentity(ctx, c.IDHash); err != nil {
		return c, err
	} else if patient {
		return c, forbidden("%s: this certificate is a patient's own identity; it does not act for %s", action, c.MSP)
	}
	return c, nil
}

// custodianOrg returns the caller if it acts for a provider org that holds records of the patient.
func custodianOrg(ctx contractapi.TransactionContextInterface, cfg Config, action, patient string) (Caller, error) {
	c, err := orgWriter(ctx, cfg, action, KindProvider)
	if err != nil {
		return c, err
	}
	if err := pseudonym("patient", patient); err != nil {
		return c, err
	}
	if ok, err := isCustodian(ctx, patient, c.MSP); err != nil {
		return c, err
	} else if !ok {
		return c, forbidden("%s: %s holds no records of this patient", action, c.MSP)
	}
	return c, nil
}

func bindingOf(ctx contractapi.TransactionContextInterface, patient, custodian string) (*PatientIdentity, error) {
	k, err := key(ctx, keyPatientIdentity, patient, custodian)
	if err != nil {
		return nil, err
	}
	var pid PatientIdentity
	if found, err := getJSON(ctx, k, &pid); err != nil || !found {
		return nil, err
	}
	return &pid, nil
}

// confirmedAt is the fingerprint of the patient's identity as the custodian knows it, or "" when it knows none.
func confirmedAt(ctx contractapi.TransactionContextInterface, patient, custodian string) (string, error) {
	pid, err := bindingOf(ctx, patient, custodian)
	if err != nil || pid == nil {
		return "", err
	}
	return pid.Fingerprint, nil
}

// bindingsOf lists every custodian's binding of the patient, in custodian order.
func bindingsOf(ctx contractapi.TransactionContextInterface, patient string) ([]PatientIdentity, error) {
	return listJSON[PatientIdentity](ctx, keyPatientIdentity, patient)
}

// saveBinding stores a binding's new state, appends it to the binding's history, and keeps the index of confirmed
// certificates in step (old is the fingerprint the binding had confirmed before this change).
func saveBinding(ctx contractapi.TransactionContextInterface, pid *PatientIdentity, old string) error {
	k, err := key(ctx, keyPatientIdentity, pid.Patient, pid.RegisteredBy)
	if err != nil {
		return err
	}
	if err := putJSON(ctx, k, pid); err != nil {
		return err
	}
	lk, err := key(ctx, keyIdentityLog, pid.Patient, pid.RegisteredBy, versionText(pid.Version))
	if err != nil {
		return err
	}
	if err := putJSON(ctx, lk, pid); err != nil {
		return err
	}
	if old == pid.Fingerprint {
		return nil
	}
	if old != "" {
		bk, err := key(ctx, keyBoundIdentity, old, pid.Patient, pid.RegisteredBy)
		if err != nil {
			return err
		}
		if err := ctx.GetStub().DelState(bk); err != nil {
			return err
		}
	}
	if pid.Fingerprint != "" {
		bk, err := key(ctx, keyBoundIdentity, pid.Fingerprint, pid.Patient, pid.RegisteredBy)
		if err != nil {
			return err
		}
		return putJSON(ctx, bk, "")
	}
	return nil
}

func stamp(ctx contractapi.TransactionContextInterface, pid *PatientIdentity) error {
	now, err := txTime(ctx)
	if err != nil {
		return err
	}
	pid.Version++
	pid.At, pid.TxID = timeText(now), ctx.GetStub().GetTxID()
	return nil
}

// RegisterPatientIdentity proposes the patient's own certificate for the caller's binding. Only a custodian of the
// patient's records may propose; the certificate's holder must confirm it (ConfirmPatientIdentity) before it counts.
// A confirmed binding is never replaced here (CONFLICT): only by RotatePatientIdentity or RecoverPatientIdentity.
// Proposing the confirmed or the pending certificate again changes nothing, so a retry is safe.
func (c *Consent) RegisterPatientIdentity(ctx contractapi.TransactionContextInterface, patient, certificatePEM string) (*PatientIdentity, error) {
	caller, err := custodianOrg(ctx, c.cfg, "Consent.RegisterPatientIdentity", patient)
	if err != nil {
		return nil, err
	}
	fingerprint, err := patientCertFingerprint(certificatePEM)
	if err != nil {
		return nil, err
	}
	pid, err := bindingOf(ctx, patient, caller.MSP)
	if err != nil {
		return nil, err
	}
	switch {
	case pid == nil:
		pid = &PatientIdentity{Patient: patient, RegisteredBy: caller.MSP}
	case pid.Fingerprint == fingerprint || pid.Pending == fingerprint:
		return pid, nil
	case pid.Fingerprint != "":
		return nil, conflict("%s's binding of this patient is confirmed to another certificate; it is replaced only by the "+
			"patient's rotation (RotatePatientIdentity) or the custodian's recovery (RecoverPatientIdentity)", caller.MSP)
	}
	pid.Pending, pid.PendingVia, pid.DocumentDigest = fingerprint, ViaRegistration, ""
	if err := stamp(ctx, pid); err != nil {
		return nil, err
	}
	if err := saveBinding(ctx, pid, pid.Fingerprint); err != nil {
		return nil, err
	}
	return pid, emit(ctx, "Consent.PatientIdentityRegistered", pid)
}

// ConfirmPatientIdentity is signed by the patient's own certificate: every binding of the patient that is waiting
// for this certificate (registered, rotated to, or recovered to) takes it as the patient's identity.
// Only a patient certificate (a client marked with OU patient) confirms, so no unmarked certificate becomes one.
func (c *Consent) ConfirmPatientIdentity(ctx contractapi.TransactionContextInterface, patient string) (*IdentityChange, error) {
	caller, err := writer(ctx)
	if err != nil {
		return nil, err
	}
	if !caller.Patient || caller.Role != "client" {
		return nil, forbidden("only a patient certificate (a client that carries OU %s) confirms a patient identity", PatientOU)
	}
	if err := pseudonym("patient", patient); err != nil {
		return nil, err
	}
	all, err := bindingsOf(ctx, patient)
	if err != nil {
		return nil, err
	}
	change := &IdentityChange{Patient: patient, Bindings: []PatientIdentity{}, TxID: ctx.GetStub().GetTxID()}
	for _, pid := range all {
		if pid.Pending != caller.IDHash {
			continue
		}
		old := pid.Fingerprint
		pid.Fingerprint, pid.Pending, pid.PendingVia = pid.Pending, "", ""
		if err := stamp(ctx, &pid); err != nil {
			return nil, err
		}
		if err := saveBinding(ctx, &pid, old); err != nil {
			return nil, err
		}
		change.Bindings = append(change.Bindings, pid)
	}
	if len(change.Bindings) == 0 {
		return nil, forbidden("no binding of this patient is waiting for the caller's certificate")
	}
	return change, emit(ctx, "Consent.PatientIdentityConfirmed", change)
}

// RotatePatientIdentity is signed by the patient's confirmed identity and proposes a new certificate for every
// binding that has the caller's certificate confirmed. The old certificate keeps counting until the new one confirms.
func (c *Consent) RotatePatientIdentity(ctx contractapi.TransactionContextInterface, patient, certificatePEM string) (*IdentityChange, error) {
	caller, err := writer(ctx)
	if err != nil {
		return nil, err
	}
	if err := pseudonym("patient", patient); err != nil {
		return nil, err
	}
	fingerprint, err := patientCertFingerprint(certificatePEM)
	if err != nil {
		return nil, err
	}
	if fingerprint == caller.IDHash {
		return nil, invalid("the new certificate is the one in use")
	}
	all, err := bindingsOf(ctx, patient)
	if err != nil {
		return nil, err
	}
	change := &IdentityChange{Patient: patient, Bindings: []PatientIdentity{}, TxID: ctx.GetStub().GetTxID()}
	for _, pid := range all {
		if pid.Fingerprint != caller.IDHash {
			continue
		}
		pid.Pending, pid.PendingVia, pid.DocumentDigest = fingerprint, ViaRotation, ""
		if err := stamp(ctx, &pid); err != nil {
			return nil, err
		}
		if err := saveBinding(ctx, &pid, pid.Fingerprint); err != nil {
			return nil, err
		}
		change.Bindings = append(change.Bindings, pid)
	}
	if len(change.Bindings) == 0 {
		return nil, forbidden("the caller's certificate is not this patient's confirmed identity at any custodian")
	}
	return change, emit(ctx, "Consent.PatientIdentityRotationRequested", change)
}

// RecoverPatientIdentity is the documented path for a patient who lost their key or whose key is compromised: the
// custodian that registered the binding, with the digest of the identity-proofing document, drops the confirmed
// certificate at once (grants it signed stop counting at this custodian) and proposes a new one for the patient to
// confirm. Only the binding's own custodian can do this; the old binding stays in the history.
func (c *Consent) RecoverPatientIdentity(ctx contractapi.TransactionContextInterface, patient, certificatePEM, documentDigest string) (*PatientIdentity, error) {
	caller, err := custodianOrg(ctx, c.cfg, "Consent.RecoverPatientIdentity", patient)
	if err != nil {
		return nil, err
	}
	fingerprint, err := patientCertFingerprint(certificatePEM)
	if err != nil {
		return nil, err
	}
	if err := digestField("documentDigest", documentDigest); err != nil {
		return nil, err
	}
	pid, err := bindingOf(ctx, patient, caller.MSP)
	if err != nil {
		return nil, err
	}
	if pid == nil {
		return nil, notFound("%s has no binding of this patient to recover; register one", caller.MSP)
	}
	old := pid.Fingerprint
	pid.Fingerprint, pid.Pending, pid.PendingVia, pid.DocumentDigest = "", fingerprint, ViaRecovery, documentDigest
	if err := stamp(ctx, pid); err != nil {
		return nil, err
	}
	if err := saveBinding(ctx, pid, old); err != nil {
		return nil, err
	}
	return pid, emit(ctx, "Consent.PatientIdentityRecovered", pid)
}

// PatientIdentities lists every custodian's binding of the patient.
func (c *Consent) PatientIdentities(ctx contractapi.TransactionContextInterface, patient string) ([]PatientIdentity, error) {
	if err := pseudonym("patient", patient); err != nil {
		return nil, err
	}
	return bindingsOf(ctx, patient)
}

// PatientIdentityHistory lists every state one custodian's binding of the patient has had, oldest first.
func (c *Consent) PatientIdentityHistory(ctx contractapi.TransactionContextInterface, patient, custodian string) ([]PatientIdentity, error) {
	if err := pseudonym("patient", patient); err != nil {
		return nil, err
	}
	if err := matches(mspPattern, "custodian", custodian, "an MSP id"); err != nil {
		return nil, err
	}
	return listJSON[PatientIdentity](ctx, keyIdentityLog, patient, custodian)
}
