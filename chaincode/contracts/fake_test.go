package contracts

import (
	"testing"

	"github.com/hyperledger/fabric-chaincode-go/v2/pkg/cid"
	"github.com/hyperledger/fabric-chaincode-go/v2/shim"
	"github.com/hyperledger/fabric-contract-api-go/v2/contractapi"
)

// fakeStub is an in-memory world state for contract unit tests. It embeds the stub interface so that calling a
// method the fake does not implement panics loudly instead of silently doing nothing.
type fakeStub struct {
	shim.ChaincodeStubInterface
	state  map[string][]byte
	txID   string
	events []fakeEvent
}

type fakeEvent struct {
	Name    string
	Payload []byte
}

func newFakeStub() *fakeStub {
	return &fakeStub{state: map[string][]byte{}, txID: "tx1"}
}

func (s *fakeStub) GetTxID() string { return s.txID }

func (s *fakeStub) GetState(key string) ([]byte, error) { return s.state[key], nil }

func (s *fakeStub) PutState(key string, value []byte) error {
	s.state[key] = append([]byte(nil), value...)
	return nil
}

func (s *fakeStub) DelState(key string) error {
	delete(s.state, key)
	return nil
}

func (s *fakeStub) SetEvent(name string, payload []byte) error {
	s.events = append(s.events, fakeEvent{name, append([]byte(nil), payload...)})
	return nil
}

func (s *fakeStub) CreateCompositeKey(objectType string, attributes []string) (string, error) {
	return shim.CreateCompositeKey(objectType, attributes)
}

func (s *fakeStub) SplitCompositeKey(key string) (string, []string, error) {
	return (&shim.ChaincodeStub{}).SplitCompositeKey(key)
}

// fakeIdentity is the caller as the contract sees it through cid.ClientIdentity.
type fakeIdentity struct {
	cid.ClientIdentity
	msp   string
	attrs map[string]string
}

func (f fakeIdentity) GetMSPID() (string, error) { return f.msp, nil }

func (f fakeIdentity) GetAttributeValue(name string) (string, bool, error) {
	v, ok := f.attrs[name]
	return v, ok, nil
}

func newContext(t *testing.T, stub *fakeStub, msp string) *contractapi.TransactionContext {
	t.Helper()
	ctx := &contractapi.TransactionContext{}
	ctx.SetStub(stub)
	ctx.SetClientIdentity(fakeIdentity{msp: msp})
	return ctx
}
