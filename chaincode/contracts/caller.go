package contracts

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"slices"

	"github.com/hyperledger/fabric-contract-api-go/v2/contractapi"
)

// PatientOU is the subject OU that marks a patient's own certificate. A patient certificate is issued by a member
// org's CA as a client (NodeOU `client`) and carries this OU besides: Fabric's MSPs with NodeOUs ignore OUs that are
// not NodeOU identifiers, so it is a valid client of its org on every channel, and the contracts read the mark to
// refuse it every action for that org. The mark is in the certificate, so it holds on every channel, also where
// the patient identity bindings (on `providers`) are not in the world state.
const PatientOU = "patient"

// Caller is who signed the proposal: the org (MSP id), the role the certificate's NodeOU gives it, the SHA-256
// fingerprint of its certificate, which can be stored on chain to recognise it later (a patient's own key), and
// whether the certificate is marked as a patient's own (OU patient).
type Caller struct {
	MSP     string
	Role    string // client | admin | peer | orderer, from the certificate's OU (NodeOUs are on)
	IDHash  string
	Patient bool // the certificate carries OU patient: it speaks for a patient, never for its org
}

var knownRoles = []string{"admin", "client", "peer", "orderer"}

// roleOf is the role a certificate's NodeOU gives it ("" when none).
func roleOf(cert *x509.Certificate) string {
	role := ""
	for _, ou := range cert.Subject.OrganizationalUnit {
		if slices.Contains(knownRoles, ou) {
			role = ou
		}
	}
	return role
}

// isPatientCertificate reports whether a certificate is marked as a patient's own.
func isPatientCertificate(cert *x509.Certificate) bool {
	return slices.Contains(cert.Subject.OrganizationalUnit, PatientOU)
}

func callerOf(ctx contractapi.TransactionContextInterface) (Caller, error) {
	id := ctx.GetClientIdentity()
	msp, err := id.GetMSPID()
	if err != nil {
		return Caller{}, fmt.Errorf("reading the caller's MSP id: %w", err)
	}
	cert, err := id.GetX509Certificate()
	if err != nil || cert == nil {
		return Caller{}, forbidden("the caller has no X.509 identity")
	}
	sum := sha256.Sum256(cert.Raw)
	return Caller{MSP: msp, Role: roleOf(cert), IDHash: hex.EncodeToString(sum[:]), Patient: isPatientCertificate(cert)}, nil
}

// writer returns the caller if it may change state at all: a client or an admin of a member org. A patient
// certificate is a writer too; only the patient's own actions (identity, grants, revocations) may use writer alone.
func writer(ctx contractapi.TransactionContextInterface) (Caller, error) {
	c, err := callerOf(ctx)
	if err != nil {
		return c, err
	}
	if c.Role != "client" && c.Role != "admin" {
		return c, forbidden("role %q of %s may not submit transactions; use a client or admin identity", c.Role, c.MSP)
	}
	return c, nil
}

// notAPatient refuses a caller whose certificate is marked as a patient's own: it acts for its patient, never for
// its org.
func notAPatient(c Caller, action string) error {
	if c.Patient {
		return forbidden("%s: this certificate is a patient's own identity (OU %s); it does not act for %s", action, PatientOU, c.MSP)
	}
	return nil
}

// orgCaller returns the caller if it may act for its org: a writer whose certificate is not a patient's.
func orgCaller(ctx contractapi.TransactionContextInterface, action string) (Caller, error) {
	c, err := writer(ctx)
	if err != nil {
		return c, err
	}
	return c, notAPatient(c, action)
}

// writerOfKind returns the caller if it acts for an org of one of the given kinds (see orgCaller).
func writerOfKind(ctx contractapi.TransactionContextInterface, cfg Config, kind, action string, more ...string) (Caller, error) {
	c, err := orgCaller(ctx, action)
	if err != nil {
		return c, err
	}
	have := cfg.kindOf(c.MSP)
	for _, k := range append([]string{kind}, more...) {
		if have == k {
			return c, nil
		}
	}
	want := kind
	for _, k := range more {
		want += " or " + k
	}
	return c, forbidden("%s: only %s orgs may do this; %s is %q", action, want, c.MSP, have)
}

// memberWriter returns the caller if it acts for an org the consortium config knows, of any kind (see orgCaller).
func memberWriter(ctx contractapi.TransactionContextInterface, cfg Config, action string) (Caller, error) {
	c, err := orgCaller(ctx, action)
	if err != nil {
		return c, err
	}
	if cfg.kindOf(c.MSP) == "" {
		return c, forbidden("%s: %s is not a member org of the consortium", action, c.MSP)
	}
	return c, nil
}
