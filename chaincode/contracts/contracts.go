// Package contracts holds CareLedger's smart contracts. Every contract is deterministic (transaction time, never
// the clock), validates its inputs, checks its caller, and emits a "<Contract>.<Event>" event on every change.
package contracts

import "github.com/hyperledger/fabric-contract-api-go/v2/contractapi"

// All lists the contracts the chaincode serves. Probe runs on every channel; each other contract refuses to run
// on a channel the config does not assign it to.
func All(cfg Config) []contractapi.ContractInterface {
	return []contractapi.ContractInterface{
		newProbe(cfg),
		newRecords(cfg),
		newConsent(cfg),
		newAudit(cfg),
		newTrials(cfg),
		newClaims(cfg),
		newSupply(cfg),
	}
}
