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
	// verify evaluates Verify, which answers and writes nothing; report submits VerifyAndReport.
	verify := func(a actor, g, serial, lot, expiry string) *Verification {
		t.Helper()
		v, err := supplyStep(w, a, func(s *Supply, ctx contractapi.TransactionContextInterface) (*Verification, error) {
			return s.Verify(ctx, g, serial, lot, expiry)
		})
		mustOK(t, err)
		wroteNothing(t, w)
		return v
	}
	report := func(a actor, g, serial, lot, expiry string) *Verification {
		t.Helper()
		v, err := supplyStep(w, a, func(s *Supply, ctx contractapi.TransactionContextInterface) (*Verification, error) {
			return s.VerifyAndReport(ctx, g, serial, lot, expiry)
		})
		mustOK(t, err)
		return v
	}

	for _, s := range []string{"S1", "S2", "S3"} {
		mustOK(t, commission(t, w, pharma, unit(s)))
	}
	wantErr(t, ship(hospital, "S1", "ClinicMSP"), CodeForbidden, "not the custodian")
	wantErr(t, ship(pharma, "S1", "NowhereMSP"), CodeInvalid, "not a member of channel")
	wantErr(t, ship(pharma, "S1", "InsurerMSP"), CodeInvalid, "not a member of channel \"pharma\"")
	wantErr(t, ship(pharma, "S1", "PharmaMSP"), CodeInvalid, "caller's own org")
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
			w.now = w.now.Add(time.Second)
			reported := report(tc.who, tc.gtin, tc.serial, tc.lot, tc.expiry)
			if strings.Join(reported.Flags, ",") != tc.flags {
				t.Fatalf("reported %+v", reported)
			}
			last := w.calls[len(w.calls)-1]
			onRecord := !tc.authentic && tc.gtin == gtin // an unreadable GTIN names no pack to alert on
			if !onRecord {
				wroteNothing(t, w)
				return
			}
			if len(last.events) != 1 || last.events[0].Name != "Supply.Alert" || len(last.writes) != 1 {
				t.Fatalf("a suspicious verification wrote %s", last.wrote())
			}
			alerts, err := supplyStep(w, tc.who, func(s *Supply, ctx contractapi.TransactionContextInterface) ([]Alert, error) {
				return s.Alerts(ctx, tc.gtin, tc.serial)
			})
			mustOK(t, err)
			a := alerts[len(alerts)-1]
			if a.VerifiedBy != tc.who.msp || strings.Join(a.Flags, ",") != tc.flags || a.Lot != tc.lot || a.TxID != last.txID {
				t.Fatalf("alerts %+v", alerts)
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

// TestSupplyAttacks: PharmaMSP commissioned S1 (shipped to and received by HospitalMSP), S2 (still at PharmaMSP) and
// S3 (in transit to HospitalMSP).
func TestSupplyAttacks(t *testing.T) {
	pharma, hospital, clinic := client(t, "PharmaMSP"), client(t, "HospitalMSP"), client(t, "ClinicMSP")
	fixture := func(t *testing.T) *world {
		w := newWorld("pharma")
		for _, s := range []string{"S1", "S2", "S3"} {
			mustOK(t, commission(t, w, pharma, unit(s)))
		}
		for _, s := range []string{"S1", "S3"} {
			_, err := supplyStep(w, pharma, func(c *Supply, ctx contractapi.TransactionContextInterface) (*Unit, error) {
				return c.Ship(ctx, gtin, s, "HospitalMSP")
			})
			mustOK(t, err)
		}
		_, err := supplyStep(w, hospital, func(c *Supply, ctx contractapi.TransactionContextInterface) (*Unit, error) {
			return c.Receive(ctx, gtin, "S1")
		})
		mustOK(t, err)
		return w
	}
	as := func(msp, role string) actor { return newActor(t, msp, role, "someone") }
	unitStep := func(a actor, fn func(c *Supply, ctx contractapi.TransactionContextInterface) (*Unit, error)) func(t *testing.T, w *world) error {
		return func(t *testing.T, w *world) error { _, err := supplyStep(w, a, fn); return err }
	}
	ship := func(a actor, serial, to string) func(t *testing.T, w *world) error {
		return unitStep(a, func(c *Supply, ctx contractapi.TransactionContextInterface) (*Unit, error) {
			return c.Ship(ctx, gtin, serial, to)
		})
	}
	receive := func(a actor, serial string) func(t *testing.T, w *world) error {
		return unitStep(a, func(c *Supply, ctx contractapi.TransactionContextInterface) (*Unit, error) {
			return c.Receive(ctx, gtin, serial)
		})
	}
	dispense := func(a actor, serial string) func(t *testing.T, w *world) error {
		return unitStep(a, func(c *Supply, ctx contractapi.TransactionContextInterface) (*Unit, error) {
			return c.Dispense(ctx, gtin, serial)
		})
	}
	decommission := func(a actor, serial string) func(t *testing.T, w *world) error {
		return unitStep(a, func(c *Supply, ctx contractapi.TransactionContextInterface) (*Unit, error) {
			return c.Decommission(ctx, gtin, serial, "damaged")
		})
	}
	recall := func(a actor) func(t *testing.T, w *world) error {
		return func(t *testing.T, w *world) error {
			_, err := supplyStep(w, a, func(c *Supply, ctx contractapi.TransactionContextInterface) (*Recall, error) {
				return c.RecallLot(ctx, gtin, "LOT42", "contamination")
			})
			return err
		}
	}
	report := func(a actor, serial string) func(t *testing.T, w *world) error {
		return func(t *testing.T, w *world) error {
			_, err := supplyStep(w, a, func(c *Supply, ctx contractapi.TransactionContextInterface) (*Verification, error) {
				return c.VerifyAndReport(ctx, gtin, serial, "", "")
			})
			return err
		}
	}
	stillAt := func(serial, custodian, state string) func(t *testing.T, w *world) {
		return func(t *testing.T, w *world) {
			u, err := supplyStep(w, clinic, func(c *Supply, ctx contractapi.TransactionContextInterface) (*Unit, error) {
				return c.Get(ctx, gtin, serial)
			})
			mustOK(t, err)
			if u.Custodian != custodian || u.State != state {
				t.Fatalf("%s is %s at %s", serial, u.State, u.Custodian)
			}
		}
	}
	noMembers := Config{OrgKinds: testConfig.OrgKinds, Channels: testConfig.Channels}
	runAttacks(t, fixture, []attack{
		{name: "peer identity commissions a pack", move: func(t *testing.T, w *world) error {
			return commission(t, w, as("PharmaMSP", "peer"), unit("S9"))
		}, code: CodeForbidden, msg: "may not submit"},
		{name: "provider commissions a pack", move: func(t *testing.T, w *world) error {
			return commission(t, w, hospital, unit("S9"))
		}, code: CodeForbidden, msg: "only manufacturer orgs"},
		{name: "manufacturer commissions a clone of a serial", move: func(t *testing.T, w *world) error {
			return commission(t, w, client(t, "Pharma2MSP"), unit("S1"))
		}, code: CodeConflict, msg: "commissioned already"},
		{name: "peer identity ships", move: ship(as("PharmaMSP", "peer"), "S2", "ClinicMSP"), code: CodeForbidden, msg: "may not submit"},
		{name: "an org ships a pack it does not hold", move: ship(clinic, "S2", "ClinicMSP"), code: CodeForbidden, msg: "not the custodian"},
		{name: "custodian ships to an org that is not on the pharma channel", move: ship(pharma, "S2", "InsurerMSP"), code: CodeInvalid, msg: "not a member of channel \"pharma\"",
			then: stillAt("S2", "PharmaMSP", UnitActive)},
		{name: "custodian ships to an org outside the consortium", move: ship(pharma, "S2", "NowhereMSP"), code: CodeInvalid, msg: "not a member"},
		{name: "custodian ships when the config lists no members", move: func(t *testing.T, w *world) error {
			s := newSupply(noMembers)
			return do(w, pharma, s, func(ctx contractapi.TransactionContextInterface) (*Unit, error) {
				return s.Ship(ctx, gtin, "S2", "ClinicMSP")
			})
		}, code: CodeForbidden, msg: "lists no members"},
		{name: "peer identity receives", move: receive(as("HospitalMSP", "peer"), "S3"), code: CodeForbidden, msg: "may not submit"},
		{name: "an org receives a pack addressed to another", move: receive(clinic, "S3"), code: CodeConflict, msg: "not in transit to ClinicMSP",
			then: stillAt("S3", "PharmaMSP", UnitInTransit)},
		{name: "peer identity dispenses", move: dispense(as("HospitalMSP", "peer"), "S1"), code: CodeForbidden, msg: "may not submit"},
		{name: "manufacturer dispenses a pack it holds", move: dispense(pharma, "S2"), code: CodeForbidden, msg: "only provider orgs"},
		{name: "provider dispenses a pack it does not hold", move: dispense(clinic, "S1"), code: CodeForbidden, msg: "not the custodian"},
		{name: "addressee dispenses a pack before receiving it", move: dispense(hospital, "S3"), code: CodeForbidden, msg: "not the custodian"},
		{name: "peer identity decommissions", move: decommission(as("PharmaMSP", "peer"), "S2"), code: CodeForbidden, msg: "may not submit"},
		{name: "provider decommissions", move: decommission(hospital, "S1"), code: CodeForbidden, msg: "only manufacturer orgs"},
		{name: "another manufacturer decommissions", move: decommission(client(t, "Pharma2MSP"), "S2"), code: CodeForbidden, msg: "only the manufacturer PharmaMSP"},
		{name: "peer identity recalls a lot", move: recall(as("PharmaMSP", "peer")), code: CodeForbidden, msg: "may not submit"},
		{name: "provider recalls a lot", move: recall(hospital), code: CodeForbidden, msg: "only manufacturer orgs"},
		{name: "manufacturer recalls a lot twice", prep: func(t *testing.T, w *world) { mustOK(t, recall(pharma)(t, w)) },
			move: recall(pharma), code: CodeConflict, msg: "recalled already"},
		{name: "peer identity reports a verification", move: report(as("HospitalMSP", "peer"), "S2"), code: CodeForbidden, msg: "may not submit"},
		{name: "org outside the consortium reports a verification", move: report(client(t, "NowhereMSP"), "S2"), code: CodeForbidden, msg: "not a member org"},
		{name: "peer identity evaluates a verification (read only)", move: func(t *testing.T, w *world) error {
			_, err := supplyStep(w, as("HospitalMSP", "peer"), func(c *Supply, ctx contractapi.TransactionContextInterface) (*Verification, error) {
				return c.Verify(ctx, gtin, "S2", "", "")
			})
			return err
		}, then: func(t *testing.T, w *world) { wroteNothing(t, w) }},
	})
}
