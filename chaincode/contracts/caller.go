package contracts

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"github.com/hyperledger/fabric-contract-api-go/v2/contractapi"
)

// Caller is who signed the proposal: the org (MSP id), the role the certificate's NodeOU gives it, and the SHA-256
// fingerprint of its certificate, which can be stored on chain to recognise it later (a patient's own key).
type Caller struct {
	MSP    string
	Role   string // client | admin | peer | orderer, from the certificate's OU (NodeOUs are on)
	IDHash string
}

var knownRoles = []string{"admin", "client", "peer", "orderer"}

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
	role := ""
	for _, ou := range cert.Subject.OrganizationalUnit {
		for _, r := range knownRoles {
			if ou == r {
				role = r
			}
		}
	}
	sum := sha256.Sum256(cert.Raw)
	return Caller{MSP: msp, Role: role, IDHash: hex.EncodeToString(sum[:])}, nil
}

// writer returns the caller if it may change state at all: a client or an admin of a member org.
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

// writerOfKind returns the caller if it is a writer from an org of one of the given kinds.
func writerOfKind(ctx contractapi.TransactionContextInterface, cfg Config, kind, action string, more ...string) (Caller, error) {
	c, err := writer(ctx)
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

// memberWriter returns the caller if it is a writer from an org the consortium config knows, of any kind.
func memberWriter(ctx contractapi.TransactionContextInterface, cfg Config, action string) (Caller, error) {
	c, err := writer(ctx)
	if err != nil {
		return c, err
	}
	if cfg.kindOf(c.MSP) == "" {
		return c, forbidden("%s: %s is not a member org of the consortium", action, c.MSP)
	}
	return c, nil
}
