package contracts

import (
	"reflect"

	"github.com/hyperledger/fabric-contract-api-go/v2/contractapi"
	"github.com/hyperledger/fabric-contract-api-go/v2/metadata"
	"github.com/hyperledger/fabric-contract-api-go/v2/serializer"
)

// Served builds the chaincode a server serves: every contract of All(cfg), with return values written as JSON
// without checking each one against its function's schema.
//
// Arguments are still checked against their schema (they come from the caller, and every contract validates them
// again). A return value is built by these contracts themselves; the check decoded every answer again and walked
// its schema, about a sixth of the chaincode's CPU with batches of claims. The tests run the contracts with the
// check on, so every return value keeps matching the published metadata, and compare the two byte for byte.
func Served(cfg Config) (*contractapi.ContractChaincode, error) {
	cc, err := contractapi.NewChaincode(All(cfg)...)
	if err != nil {
		return nil, err
	}
	cc.TransactionSerializer = &uncheckedResults{}
	return cc, nil
}

// uncheckedResults is the contract API's JSON serializer, its return values not checked against their schema.
type uncheckedResults struct{ serializer.JSONSerializer }

func (u *uncheckedResults) ToString(result reflect.Value, resultType reflect.Type, _ *metadata.ReturnMetadata, components *metadata.ComponentMetadata) (string, error) {
	return u.JSONSerializer.ToString(result, resultType, nil, components)
}
