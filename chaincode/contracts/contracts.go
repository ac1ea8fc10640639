// Package contracts holds CareLedger's smart contracts. Every contract is deterministic (transaction time, never
// the clock), validates its inputs, checks its caller, and emits a "<Contract>.<Event>" event on every change.
package contracts

import "github.com/hyperledger/fabric-contract-api-go/v2/contractapi"

// All lists the contracts the chaincode serves, on every channel.
func All() []contractapi.ContractInterface {
	return []contractapi.ContractInterface{
		newProbe(),
	}
}
