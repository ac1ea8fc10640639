package contracts

import (
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/hyperledger/fabric-contract-api-go/v2/contractapi"
)

// The helpers here are the only way contracts touch state and events, so that every value is JSON, every time is
// the transaction's own timestamp, and every change can be announced in one line.

// txTime is the transaction's timestamp as the client set it (endorsers all see the same), never the clock.
func txTime(ctx contractapi.TransactionContextInterface) (time.Time, error) {
	ts, err := ctx.GetStub().GetTxTimestamp()
	if err != nil {
		return time.Time{}, fmt.Errorf("reading the transaction time: %w", err)
	}
	return ts.AsTime().UTC(), nil
}

// timeText renders times in one fixed-width form, so that keys built from them sort in time order.
func timeText(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000000000Z") }

func key(ctx contractapi.TransactionContextInterface, objectType string, attrs ...string) (string, error) {
	k, err := ctx.GetStub().CreateCompositeKey(objectType, attrs)
	if err != nil {
		return "", invalid("%v", err)
	}
	return k, nil
}

// getJSON loads the value under k into v; found is false when the key is absent.
func getJSON(ctx contractapi.TransactionContextInterface, k string, v any) (bool, error) {
	raw, err := ctx.GetStub().GetState(k)
	if err != nil {
		return false, err
	}
	if raw == nil {
		return false, nil
	}
	return true, json.Unmarshal(raw, v)
}

func putJSON(ctx contractapi.TransactionContextInterface, k string, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return ctx.GetStub().PutState(k, raw)
}

func exists(ctx contractapi.TransactionContextInterface, k string) (bool, error) {
	raw, err := ctx.GetStub().GetState(k)
	return raw != nil, err
}

// mustBeNew refuses to create what exists: a CONFLICT with the message given.
func mustBeNew(ctx contractapi.TransactionContextInterface, k, format string, a ...any) error {
	ok, err := exists(ctx, k)
	if err != nil {
		return err
	}
	if ok {
		return conflict(format, a...)
	}
	return nil
}

func emit(ctx contractapi.TransactionContextInterface, name string, payload any) error {
	raw, err := json.Marshal(payload)
	if err != nil {
		return err
	}
	return ctx.GetStub().SetEvent(name, raw)
}

// listJSON reads every value under a partial composite key, in key order.
func listJSON[T any](ctx contractapi.TransactionContextInterface, objectType string, attrs ...string) ([]T, error) {
	it, err := ctx.GetStub().GetStateByPartialCompositeKey(objectType, attrs)
	if err != nil {
		return nil, err
	}
	defer it.Close()
	out := []T{}
	for it.HasNext() {
		kv, err := it.Next()
		if err != nil {
			return nil, err
		}
		var v T
		if err := json.Unmarshal(kv.Value, &v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// pageJSON reads one page of values under a partial composite key; the bookmark continues the listing.
func pageJSON[T any](
	ctx contractapi.TransactionContextInterface, pageSize int32, bookmark, objectType string, attrs ...string,
) ([]T, string, error) {
	it, meta, err := ctx.GetStub().GetStateByPartialCompositeKeyWithPagination(objectType, attrs, pageSize, bookmark)
	if err != nil {
		return nil, "", err
	}
	defer it.Close()
	out := []T{}
	for it.HasNext() {
		kv, err := it.Next()
		if err != nil {
			return nil, "", err
		}
		var v T
		if err := json.Unmarshal(kv.Value, &v); err != nil {
			return nil, "", err
		}
		out = append(out, v)
	}
	next := ""
	if meta != nil && int32(len(out)) == pageSize {
		next = meta.Bookmark
	}
	return out, next, nil
}

// onChannel builds a BeforeTransaction hook that refuses to run a contract on a channel it does not serve: the
// claims contract on a channel the insurer is not a member of would leak claims to the wrong orgs.
func onChannel(cfg Config, contract string) func(contractapi.TransactionContextInterface) error {
	return func(ctx contractapi.TransactionContextInterface) error {
		ch := ctx.GetStub().GetChannelID()
		if !cfg.servesOn(contract, ch) {
			return forbidden("contract %s does not serve channel %q", contract, ch)
		}
		return nil
	}
}

// batched runs fn with its state writes sent to the peer as one write batch (Fabric 3.x) instead of one round trip
// per PutState. Reads inside fn still see the state before the transaction, as always in Fabric.
func batched(ctx contractapi.TransactionContextInterface, fn func() error) error {
	stub := ctx.GetStub()
	stub.StartWriteBatch()
	if err := fn(); err != nil {
		return err
	}
	return stub.FinishWriteBatch()
}

func sortedKeys(set map[string]bool) []string {
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
