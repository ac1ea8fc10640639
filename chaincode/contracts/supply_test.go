package contracts

import (
	"strings"
	"testing"
	"time"

	"github.com/hyperledger/fabric-contract-api-go/v2/contractapi"
)

// withCheckDigit completes 13 digits into a GTIN-14 (GS1 mod 10).
func withCheckDigit(body string) string {
	sum := 0
	for i, r := range body {
		d := int(r - '0')
		if i%2 == 0 {
			d *= 3
		}
		sum += d
	}
	return body + string(rune('0'+(10-sum%10)%10))
}

var gtin = withCheckDigit("0030012345678")

func TestGTINCheckDigit(t *testing.T) {
	cases := []struct {
		gtin string
		ok   bool
	}{
		{"00012345600012", true}, // GS1's own example GTIN-14
		{"00012345600013", false},
		{gtin, true},
		{"0001234560001", false},
		{"0001234560001X", false},
	}
	for _, tc := range cases {
		if gtinValid(tc.gtin) != tc.ok {
			t.Errorf("gtinValid(%s) = %v", tc.gtin, !tc.ok)
		}
	}
}

func supplyStep[T any](w *world, a actor, fn func(s *Supply, ctx contractapi.TransactionContextInterface) (T, error)) (T, error) {
	s := newSupply(testConfig)
	return call(w, a, s, nil, func(ctx contractapi.TransactionContextInterface) (T, error) { return fn(s, ctx) })
}

func commission(t *testing.T, w *world, a actor, u UnitIdentity) error {
	_, err := supplyStep(w, a, func(s *Supply, ctx contractapi.TransactionContextInterface) (*Unit, error) {
		return s.Commission(ctx, mustJSON(t, u))
	})
	return err
}

func unit(serial string) UnitIdentity {
	return UnitIdentity{GTIN: gtin, Serial: serial, Lot: "LOT42", Expiry: "2027-06-30"}
}

func TestSupplyCommissionValidation(t *testing.T) {
	cases := []struct {
		name   string
		caller string
		mutate func(*UnitIdentity)
		code   string
		msg    string
	}{
		{"hospital cannot commission", "HospitalMSP", nil, CodeForbidden, "only manufacturer"},
		{"bad check digit", "", func(u *UnitIdentity) { u.GTIN = gtin[:13] + "9" }, CodeInvalid, "check digit"},
		{"empty serial", "", func(u *UnitIdentity) { u.Serial = "" }, CodeInvalid, "serial"},
		{"serial too long", "", func(u *UnitIdentity) { u.Serial = strings.Repeat("A", 21) }, CodeInvalid, "serial"},
		{"serial with space", "", func(u *UnitIdentity) { u.Serial = "A B" }, CodeInvalid, "serial"},
		{"bad lot", "", func(u *UnitIdentity) { u.Lot = "" }, CodeInvalid, "lot"},
		{"bad expiry", "", func(u *UnitIdentity) { u.Expiry = "2027-13-01" }, CodeInvalid, "expiry"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld("pharma")
			u := unit("S1")
			if tc.mutate != nil {
				tc.mutate(&u)
			}
			who := "PharmaMSP"
			if tc.caller != "" {
				who = tc.caller
			}
			wantErr(t, commission(t, w, client(t, who), u), tc.code, tc.msg)
		})
	}
	t.Run("once per serial", func(t *testing.T) {
		w := newWorld("pharma")
		mustOK(t, commission(t, w, client(t, "PharmaMSP"), unit("S1")))
		wantErr(t, commission(t, w, client(t, "PharmaMSP"), unit("S1")), CodeConflict, "commissioned already")
	})
	t.Run("only on the pharma channel", func(t *testing.T) {
		wantErr(t, commission(t, newWorld("claims"), client(t, "PharmaMSP"), unit("S1")), CodeForbidden, "does not serve")
	})
}

func TestSupplyCustodyChainAndVerify(t *testing.T) {
	w := newWorld("pharma")
	pharma, hospital, clinic := client(t, "PharmaMSP"), client(t, "HospitalMSP"), client(t, "ClinicMSP")
	ship := func(a actor, serial, to string) error {
		_, err := supplyStep(w, a, func(s *Supply, ctx contractapi.TransactionContextInterface) (*Unit, error) {
			return s.Ship(ctx, gtin, serial, to)
		})
		return err
	}
	receive := func(a actor, serial string) error {
		_, err := supplyStep(w, a, func(s *Supply, ctx contractapi.TransactionContextInterface) (*Unit, error) {
			return s.Receive(ctx, gtin, serial)
		})
		return err
	}
	dispense := func(a actor, serial string) error {
		_, err := supplyStep(w, a, func(s *Supply, ctx contractapi.TransactionContextInterface) (*Unit, error) {
			return s.Dispense(ctx, gtin, serial)
		})
		return err
	}
	verify := func(a actor, g, serial, lot, expiry string) *Verification {
		t.Helper()
		v, err := supplyStep(w, a, func(s *Supply, ctx contractapi.TransactionContextInterface) (*Verification, error) {
			return s.Verify(ctx, g, serial, lot, expiry)
		})
		mustOK(t, err)
		return v
	}

	for _, s := range []string{"S1", "S2", "S3"} {
		mustOK(t, commission(t, w, pharma, unit(s)))
	}
	wantErr(t, ship(hospital, "S1", "ClinicMSP"), CodeForbidden, "not the custodian")
	wantErr(t, ship(pharma, "S1", "NowhereMSP"), CodeInvalid, "not another member")
	wantErr(t, ship(pharma, "S9", "HospitalMSP"), CodeNotFound, "never commissioned")
	mustOK(t, ship(pharma, "S1", "HospitalMSP"))
	wantErr(t, ship(pharma, "S1", "ClinicMSP"), CodeConflict, "it is in_transit")
	wantErr(t, dispense(hospital, "S1"), CodeForbidden, "not the custodian")
	if v := verify(hospital, gtin, "S1", "LOT42", "2027-06-30"); !v.Authentic {
		t.Fatalf("in transit to the verifier: %+v", v)
	}
	wantErr(t, receive(clinic, "S1"), CodeConflict, "not in transit to ClinicMSP")
	mustOK(t, receive(hospital, "S1"))
	wantErr(t, receive(hospital, "S1"), CodeConflict, "not in transit")
	wantErr(t, dispense(clinic, "S1"), CodeForbidden, "not the custodian")
	mustOK(t, dispense(hospital, "S1"))
	wantErr(t, dispense(hospital, "S1"), CodeConflict, "it is dispensed")

	hist, err := supplyStep(w, clinic, func(s *Supply, ctx contractapi.TransactionContextInterface) ([]CustodyEvent, error) {
		return s.History(ctx, gtin, "S1")
	})
	mustOK(t, err)
	steps := []string{}
	for _, e := range hist {
		steps = append(steps, e.BizStep)
	}
	if strings.Join(steps, ",") != "commissioning,shipping,receiving,dispensing" || hist[3].State != UnitDispensed {
		t.Fatalf("history %v", hist)
	}

	cases := []struct {
		name              string
		who               actor
		gtin, serial, lot string
		expiry            string
		authentic         bool
		flags             string
	}{
		{"genuine at its custodian", pharma, gtin, "S2", "LOT42", "2027-06-30", true, ""},
		{"clone of a dispensed pack", clinic, gtin, "S1", "LOT42", "", false, "already_dispensed,custody_mismatch"},
		{"unknown serial", hospital, gtin, "FAKE1", "", "", false, "unknown_serial"},
		{"bad GTIN", hospital, "12345678901234", "S2", "", "", false, "invalid_gtin"},
		{"printed lot differs", pharma, gtin, "S2", "LOT43", "", false, "lot_mismatch"},
		{"printed expiry differs", pharma, gtin, "S2", "", "2028-01-01", false, "expiry_mismatch"},
		{"someone else's stock", clinic, gtin, "S2", "", "", false, "custody_mismatch"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := verify(tc.who, tc.gtin, tc.serial, tc.lot, tc.expiry)
			if v.Authentic != tc.authentic || strings.Join(v.Flags, ",") != tc.flags {
				t.Fatalf("got %+v, want authentic=%v flags=%s", v, tc.authentic, tc.flags)
			}
			if !tc.authentic && lastEvent(t, w).Name != "Supply.Alert" {
				t.Fatalf("a suspicious verification raised no alert")
			}
		})
	}

	// Recall and expiry stop movement and show up in verification.
	_, err = supplyStep(w, hospital, func(s *Supply, ctx contractapi.TransactionContextInterface) (*Recall, error) {
		return s.RecallLot(ctx, gtin, "LOT42", "contamination")
	})
	wantErr(t, err, CodeForbidden, "only manufacturer")
	_, err = supplyStep(w, pharma, func(s *Supply, ctx contractapi.TransactionContextInterface) (*Recall, error) {
		return s.RecallLot(ctx, gtin, "LOT42", "contamination")
	})
	mustOK(t, err)
	wantErr(t, ship(pharma, "S2", "ClinicMSP"), CodeConflict, "recalled")
	if v := verify(pharma, gtin, "S2", "", ""); strings.Join(v.Flags, ",") != "recalled" {
		t.Fatalf("after recall: %+v", v)
	}
	w.now = time.Date(2027, 7, 1, 0, 0, 0, 0, time.UTC)
	if v := verify(pharma, gtin, "S3", "", ""); strings.Join(v.Flags, ",") != "recalled,expired" {
		t.Fatalf("after expiry: %+v", v)
	}

	// Decommission: the manufacturer only, once.
	decommission := func(a actor, serial string) error {
		_, err := supplyStep(w, a, func(s *Supply, ctx contractapi.TransactionContextInterface) (*Unit, error) {
			return s.Decommission(ctx, gtin, serial, "destroyed")
		})
		return err
	}
	wantErr(t, decommission(hospital, "S3"), CodeForbidden, "only manufacturer")
	mustOK(t, decommission(pharma, "S3"))
	wantErr(t, decommission(pharma, "S3"), CodeConflict, "decommissioned already")
	wantErr(t, decommission(pharma, "S1"), CodeConflict, "dispensed already")
	if v := verify(pharma, gtin, "S3", "", ""); !strings.Contains(strings.Join(v.Flags, ","), "decommissioned") {
		t.Fatalf("after decommission: %+v", v)
	}
}
