package contracts

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
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
			stub := newFakeStub()
			err := newProbe().Write(newContext(t, stub, "HospitalMSP"), tc.key, tc.value)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if len(stub.events) != 1 || stub.events[0].Name != "Probe.Written" {
					t.Fatalf("want one Probe.Written event, got %+v", stub.events)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("want error containing %q, got %v", tc.wantErr, err)
			}
			if len(stub.state) != 0 || len(stub.events) != 0 {
				t.Fatalf("a rejected write changed state or emitted events")
			}
		})
	}
}

func TestProbeReadBack(t *testing.T) {
	stub := newFakeStub()
	p := newProbe()
	if err := p.Write(newContext(t, stub, "InsurerMSP"), "k1", "v1"); err != nil {
		t.Fatal(err)
	}
	rec, err := p.Read(newContext(t, stub, "HospitalMSP"), "k1")
	if err != nil {
		t.Fatal(err)
	}
	want := ProbeRecord{Key: "k1", Value: "v1", Writer: "InsurerMSP", TxID: "tx1"}
	if *rec != want {
		t.Fatalf("got %+v, want %+v", *rec, want)
	}
	var evt ProbeRecord
	if err := json.Unmarshal(stub.events[0].Payload, &evt); err != nil || evt != want {
		t.Fatalf("event payload %s does not match the record", stub.events[0].Payload)
	}
	if _, err := p.Read(newContext(t, stub, "HospitalMSP"), "missing"); err == nil {
		t.Fatal("reading a missing key must fail")
	}
}

func TestProbeIncrement(t *testing.T) {
	cases := []struct {
		name    string
		initial string // "" = no record
		want    int
		wantErr string
	}{
		{"absent starts at one", "", 1, ""},
		{"counts up", "41", 42, ""},
		{"not a counter", "hello", 0, "does not hold a counter"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			stub := newFakeStub()
			p := newProbe()
			ctx := newContext(t, stub, "ClinicMSP")
			if tc.initial != "" {
				if err := p.Write(ctx, "c", tc.initial); err != nil {
					t.Fatal(err)
				}
			}
			got, err := p.Increment(ctx, "c")
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("want error %q, got %v", tc.wantErr, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Increment = %d, %v; want %d", got, err, tc.want)
			}
			rec, _ := p.Read(ctx, "c")
			if rec.Value != strconv.Itoa(tc.want) {
				t.Fatalf("stored %q, want %d", rec.Value, tc.want)
			}
		})
	}
}
