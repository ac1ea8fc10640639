package contracts

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/hyperledger/fabric-contract-api-go/v2/contractapi"
)

func TestProbeWriteValidatesInput(t *testing.T) {
	cases := []struct {
		name, key, value, wantErr string
	}{
		{"ok", "smoke-1", "hello", ""},
		{"empty key", "", "v", "invalid probe key"},
		{"key with space", "a b", "v", "invalid probe key"},
		{"key too long", strings.Repeat("k", 65), "v", "invalid probe key"},
		{"value too long", "k", strings.Repeat("v", maxProbeValueLen+1), "at most"},
		{"longest value", "k", strings.Repeat("v", maxProbeValueLen), ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld("claims")
			p := newProbe(testConfig)
			_, err := call(w, client(t, "HospitalMSP"), p, nil, func(ctx contractapi.TransactionContextInterface) (any, error) {
				return nil, p.Write(ctx, tc.key, tc.value)
			})
			if tc.wantErr == "" {
				mustOK(t, err)
				if len(w.events) != 1 || w.events[0].Name != "Probe.Written" {
					t.Fatalf("want one Probe.Written event, got %+v", w.events)
				}
				return
			}
			refused(t, w, err, CodeInvalid, tc.wantErr)
		})
	}
}

func TestProbeReadBackAndIncrement(t *testing.T) {
	w := newWorld("claims")
	p := newProbe(testConfig)
	_, err := call(w, client(t, "InsurerMSP"), p, nil, func(ctx contractapi.TransactionContextInterface) (any, error) {
		return nil, p.Write(ctx, "k1", "v1")
	})
	mustOK(t, err)
	rec, err := call(w, client(t, "HospitalMSP"), p, nil, func(ctx contractapi.TransactionContextInterface) (*ProbeRecord, error) {
		return p.Read(ctx, "k1")
	})
	mustOK(t, err)
	want := ProbeRecord{Key: "k1", Value: "v1", Writer: "InsurerMSP", TxID: "tx1"}
	if *rec != want {
		t.Fatalf("got %+v, want %+v", *rec, want)
	}
	var evt ProbeRecord
	if err := json.Unmarshal(w.events[0].Payload, &evt); err != nil || evt != want {
		t.Fatalf("event payload %s does not match the record", w.events[0].Payload)
	}
	for want := 1; want <= 3; want++ {
		got, err := call(w, client(t, "HospitalMSP"), p, nil, func(ctx contractapi.TransactionContextInterface) (int, error) {
			return p.Increment(ctx, "counter")
		})
		mustOK(t, err)
		if got != want {
			t.Fatalf("increment %d returned %d", want, got)
		}
	}
	_, err = call(w, client(t, "HospitalMSP"), p, nil, func(ctx contractapi.TransactionContextInterface) (int, error) {
		return p.Increment(ctx, "k1")
	})
	if err == nil || !strings.Contains(err.Error(), "does not hold a counter") {
		t.Fatalf("incrementing a non-counter: %v", err)
	}
}

func TestChaincodeBuildsFromAllContracts(t *testing.T) {
	raw, err := invoke(t, newWorld("claims"), client(t, "HospitalMSP"), nil, "org.hyperledger.fabric:GetMetadata")
	mustOK(t, err)
	var meta struct {
		Contracts map[string]struct {
			Transactions []struct {
				Name string `json:"name"`
			} `json:"transactions"`
		} `json:"contracts"`
	}
	mustOK(t, json.Unmarshal([]byte(raw), &meta))
	for _, name := range []string{"Probe", "Records", "Consent", "Audit", "Trials", "Claims", "Supply"} {
		if len(meta.Contracts[name].Transactions) == 0 {
			t.Errorf("contract %s serves no transactions", name)
		}
	}
}
