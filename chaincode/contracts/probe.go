package contracts

import (
	"encoding/json"
	"regexp"
	"strconv"

	"github.com/hyperledger/fabric-contract-api-go/v2/contractapi"
)

// Probe proves that a channel accepts, orders and commits transactions end to end. Operators and tests write a
// short marker and read it back from any member peer; it holds no health data.
type Probe struct {
	contractapi.Contract
	cfg Config
}

func newProbe(cfg Config) *Probe {
	p := &Probe{cfg: cfg}
	p.Name = "Probe"
	return p
}

const (
	probeKeyType     = "probe"
	maxProbeValueLen = 256
)

var probeKeyPattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// ProbeRecord is what a probe write stores and what its event carries.
type ProbeRecord struct {
	Key    string `json:"key"`
	Value  string `json:"value"`
	Writer string `json:"writer"`
	TxID   string `json:"txId"`
}

// Write stores value under key, replacing any earlier value, and emits Probe.Written. The caller must be a client
// or admin of a member org.
func (p *Probe) Write(ctx contractapi.TransactionContextInterface, key, value string) error {
	caller, err := memberWriter(ctx, p.cfg, "Probe.Write")
	if err != nil {
		return err
	}
	if !probeKeyPattern.MatchString(key) {
		return invalid("invalid probe key %q: 1-64 characters of A-Z a-z 0-9 . _ -", key)
	}
	if len(value) > maxProbeValueLen {
		return invalid("probe value is %d bytes; at most %d", len(value), maxProbeValueLen)
	}
	stub := ctx.GetStub()
	rec := ProbeRecord{Key: key, Value: value, Writer: caller.MSP, TxID: stub.GetTxID()}
	raw, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	stateKey, err := stub.CreateCompositeKey(probeKeyType, []string{key})
	if err != nil {
		return err
	}
	if err := stub.PutState(stateKey, raw); err != nil {
		return err
	}
	return stub.SetEvent("Probe.Written", raw)
}

// Read returns the record stored under key.
func (p *Probe) Read(ctx contractapi.TransactionContextInterface, key string) (*ProbeRecord, error) {
	if !probeKeyPattern.MatchString(key) {
		return nil, invalid("invalid probe key %q", key)
	}
	stateKey, err := ctx.GetStub().CreateCompositeKey(probeKeyType, []string{key})
	if err != nil {
		return nil, err
	}
	raw, err := ctx.GetStub().GetState(stateKey)
	if err != nil {
		return nil, err
	}
	if raw == nil {
		return nil, notFound("no probe record %q", key)
	}
	var rec ProbeRecord
	if err := json.Unmarshal(raw, &rec); err != nil {
		return nil, err
	}
	return &rec, nil
}

// Increment reads the counter stored under key (0 when absent), stores it plus one and returns the new value.
// Because it reads before it writes, two concurrent increments of one key conflict at commit (MVCC): clients use
// it to prove their conflict handling.
func (p *Probe) Increment(ctx contractapi.TransactionContextInterface, key string) (int, error) {
	if _, err := memberWriter(ctx, p.cfg, "Probe.Increment"); err != nil {
		return 0, err
	}
	current := 0
	rec, err := p.Read(ctx, key)
	var ce *ContractError
	switch {
	case err == nil:
		if current, err = strconv.Atoi(rec.Value); err != nil {
			return 0, conflict("probe %q does not hold a counter", key)
		}
	case !asContractError(err, &ce) || ce.Code != CodeNotFound:
		return 0, err
	}
	next := strconv.Itoa(current + 1)
	if err := p.Write(ctx, key, next); err != nil {
		return 0, err
	}
	return current + 1, nil
}
