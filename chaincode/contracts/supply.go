package contracts

import (
	"fmt"
	"regexp"
	"slices"
	"time"

	"github.com/hyperledger/fabric-contract-api-go/v2/contractapi"
)

// Supply tracks saleable drug units the GS1 way (GTIN + serial, with lot and expiry) from commissioning by the
// manufacturer through shipments and receipts to dispensing, and answers "is this pack genuine?" with the signals
// that expose counterfeits: unknown serials, second dispenses, recalls, expiry, and custody that does not match.
type Supply struct {
	contractapi.Contract
	cfg Config
}

func newSupply(cfg Config) *Supply {
	c := &Supply{cfg: cfg}
	c.Name = "Supply"
	c.BeforeTransaction = onChannel(cfg, c.Name)
	return c
}

const (
	keyUnit      = "unit"      // gtin, serial -> Unit
	keyUnitEvent = "unitEvent" // gtin, serial, seq -> CustodyEvent
	keyRecall    = "recall"    // gtin, lot -> Recall
	keyAlert     = "unitAlert" // gtin, serial, time, txId -> Alert
)

// Unit states (GS1 dispositions).
const (
	UnitActive         = "active"
	UnitInTransit      = "in_transit"
	UnitDispensed      = "dispensed"
	UnitDecommissioned = "decommissioned"
)

// Verification flags.
const (
	FlagInvalidGTIN      = "invalid_gtin"
	FlagUnknownSerial    = "unknown_serial"
	FlagLotMismatch      = "lot_mismatch"
	FlagExpiryMismatch   = "expiry_mismatch"
	FlagExpired          = "expired"
	FlagAlreadyDispensed = "already_dispensed"
	FlagDecommissioned   = "decommissioned"
	FlagRecalled         = "recalled"
	FlagCustodyMismatch  = "custody_mismatch"
)

var (
	gtinPattern   = regexp.MustCompile(`^[0-9]{14}$`)
	serialPattern = regexp.MustCompile(`^[!-"%-/0-9:-?A-Z_a-z]{1,20}$`) // GS1 AI (21): up to 20 of the 82-character set
	lotPattern    = serialPattern                                       // GS1 AI (10) uses the same set and length
)

// UnitIdentity is what a pack carries in its 2D code.
type UnitIdentity struct {
	GTIN   string `json:"gtin"`
	Serial string `json:"serial"`
	Lot    string `json:"lot"`
	Expiry string `json:"expiry"` // YYYY-MM-DD
}

// Unit is the state of one pack.
type Unit struct {
	GTIN         string `json:"gtin"`
	Serial       string `json:"serial"`
	Lot          string `json:"lot"`
	Expiry       string `json:"expiry"`
	Manufacturer string `json:"manufacturer"`
	Custodian    string `json:"custodian"`
	ShippedTo    string `json:"shippedTo"`
	State        string `json:"state"`
	Events       int    `json:"events"`
	TxID         string `json:"txId"`
}

// CustodyEvent is one step of a pack's history, EPCIS-style.
type CustodyEvent struct {
	GTIN    string `json:"gtin"`
	Serial  string `json:"serial"`
	Seq     int    `json:"seq"`
	BizStep string `json:"bizStep"` // commissioning | shipping | receiving | dispensing | decommissioning
	From    string `json:"from"`
	To      string `json:"to"`
	By      string `json:"by"`
	State   string `json:"state"`
	Reason  string `json:"reason"`
	At      string `json:"at"`
	TxID    string `json:"txId"`
}

// Recall marks a lot of a product recalled by its manufacturer.
type Recall struct {
	GTIN         string `json:"gtin"`
	Lot          string `json:"lot"`
	Manufacturer string `json:"manufacturer"`
	Reason       string `json:"reason"`
	At           string `json:"at"`
	TxID         string `json:"txId"`
}

// Verification answers Verify.
type Verification struct {
	Authentic bool     `json:"authentic"`
	Flags     []string `json:"flags"`
	State     string   `json:"state"`
	Custodian string   `json:"custodian"`
}

// gtinValid checks a GTIN-14 and its GS1 mod-10 check digit.
func gtinValid(gtin string) bool {
	if !gtinPattern.MatchString(gtin) {
		return false
	}
	sum := 0
	for i := 0; i < 13; i++ {
		d := int(gtin[i] - '0')
		if i%2 == 0 {
			d *= 3
		}
		sum += d
	}
	return (10-sum%10)%10 == int(gtin[13]-'0')
}

func (u UnitIdentity) validate() error {
	if !gtinValid(u.GTIN) {
		return invalid("gtin %q is not a GTIN-14 with a valid check digit", u.GTIN)
	}
	if err := matches(serialPattern, "serial", u.Serial, "a GS1 serial (1-20 characters)"); err != nil {
		return err
	}
	if err := matches(lotPattern, "lot", u.Lot, "a GS1 lot (1-20 characters)"); err != nil {
		return err
	}
	_, err := date("expiry", u.Expiry)
	return err
}

func (c *Supply) load(ctx contractapi.TransactionContextInterface, gtin, serial string) (*Unit, string, error) {
	if !gtinValid(gtin) {
		return nil, "", invalid("gtin %q is not a GTIN-14 with a valid check digit", gtin)
	}
	if err := matches(serialPattern, "serial", serial, "a GS1 serial"); err != nil {
		return nil, "", err
	}
	k, err := key(ctx, keyUnit, gtin, serial)
	if err != nil {
		return nil, "", err
	}
	var u Unit
	if found, err := getJSON(ctx, k, &u); err != nil {
		return nil, "", err
	} else if !found {
		return nil, k, notFound("unit %s/%s was never commissioned", gtin, serial)
	}
	return &u, k, nil
}

// heldBy loads a unit that the caller's org must hold.
func (c *Supply) heldBy(ctx contractapi.TransactionContextInterface, caller Caller, gtin, serial string) (*Unit, string, error) {
	u, k, err := c.load(ctx, gtin, serial)
	if err != nil {
		return nil, "", err
	}
	if u.Custodian != caller.MSP {
		return nil, "", forbidden("%s is not the custodian of %s/%s", caller.MSP, gtin, serial)
	}
	return u, k, nil
}

// record saves the unit and appends the event to its history, then announces it as Supply.<name>.
func (c *Supply) record(ctx contractapi.TransactionContextInterface, u *Unit, k, name string, ev CustodyEvent) error {
	now, err := txTime(ctx)
	if err != nil {
		return err
	}
	u.Events++
	u.TxID = ctx.GetStub().GetTxID()
	ev.GTIN, ev.Serial, ev.Seq, ev.State, ev.At, ev.TxID = u.GTIN, u.Serial, u.Events, u.State, timeText(now), u.TxID
	if err := putJSON(ctx, k, u); err != nil {
		return err
	}
	ek, err := key(ctx, keyUnitEvent, u.GTIN, u.Serial, fmt.Sprintf("%06d", ev.Seq))
	if err != nil {
		return err
	}
	if err := putJSON(ctx, ek, ev); err != nil {
		return err
	}
	return emit(ctx, "Supply."+name, ev)
}

// Commission brings a new pack into existence: only a manufacturer, once per GTIN + serial.
func (c *Supply) Commission(ctx contractapi.TransactionContextInterface, unitJSON string) (*Unit, error) {
	caller, err := writerOfKind(ctx, c.cfg, KindManufacturer, "Supply.Commission")
	if err != nil {
		return nil, err
	}
	var id UnitIdentity
	if err := decode("unit", unitJSON, &id); err != nil {
		return nil, err
	}
	if err := id.validate(); err != nil {
		return nil, err
	}
	k, err := key(ctx, keyUnit, id.GTIN, id.Serial)
	if err != nil {
		return nil, err
	}
	if err := mustBeNew(ctx, k, "unit %s/%s is commissioned already", id.GTIN, id.Serial); err != nil {
		return nil, err
	}
	u := &Unit{GTIN: id.GTIN, Serial: id.Serial, Lot: id.Lot, Expiry: id.Expiry, Manufacturer: caller.MSP, Custodian: caller.MSP, State: UnitActive}
	return u, c.record(ctx, u, k, "Commissioned", CustodyEvent{BizStep: "commissioning", To: caller.MSP, By: caller.MSP})
}

// Ship sends a pack from its current custodian (the caller) to another member org of this channel: an org that is
// not on the channel could never receive it, and the pack would stay in transit for ever.
func (c *Supply) Ship(ctx contractapi.TransactionContextInterface, gtin, serial, to string) (*Unit, error) {
	caller, err := memberWriter(ctx, c.cfg, "Supply.Ship")
	if err != nil {
		return nil, err
	}
	u, k, err := c.heldBy(ctx, caller, gtin, serial)
	if err != nil {
		return nil, err
	}
	if err := matches(mspPattern, "to", to, "an MSP id"); err != nil {
		return nil, err
	}
	if to == caller.MSP {
		return nil, invalid("to %q is the caller's own org", to)
	}
	channel := ctx.GetStub().GetChannelID()
	if member, known := c.cfg.isMember(channel, to); !known {
		return nil, forbidden("the chaincode config lists no members of channel %q; the addressee cannot be checked", channel)
	} else if !member {
		return nil, invalid("to %s is not a member of channel %q", to, channel)
	}
	if err := c.saleable(ctx, u, "ship"); err != nil {
		return nil, err
	}
	u.State, u.ShippedTo = UnitInTransit, to
	return u, c.record(ctx, u, k, "Shipped", CustodyEvent{BizStep: "shipping", From: caller.MSP, To: to, By: caller.MSP})
}

// Receive takes custody of a pack shipped to the caller's org.
func (c *Supply) Receive(ctx contractapi.TransactionContextInterface, gtin, serial string) (*Unit, error) {
	caller, err := memberWriter(ctx, c.cfg, "Supply.Receive")
	if err != nil {
		return nil, err
	}
	u, k, err := c.load(ctx, gtin, serial)
	if err != nil {
		return nil, err
	}
	if u.State != UnitInTransit || u.ShippedTo != caller.MSP {
		return nil, conflict("%s/%s is not in transit to %s", gtin, serial, caller.MSP)
	}
	from := u.Custodian
	u.State, u.Custodian, u.ShippedTo = UnitActive, caller.MSP, ""
	return u, c.record(ctx, u, k, "Received", CustodyEvent{BizStep: "receiving", From: from, To: caller.MSP, By: caller.MSP})
}

// Dispense hands a pack to a patient: a provider org holding it, once, before expiry, and not recalled.
func (c *Supply) Dispense(ctx contractapi.TransactionContextInterface, gtin, serial string) (*Unit, error) {
	caller, err := writerOfKind(ctx, c.cfg, KindProvider, "Supply.Dispense")
	if err != nil {
		return nil, err
	}
	u, k, err := c.heldBy(ctx, caller, gtin, serial)
	if err != nil {
		return nil, err
	}
	if err := c.saleable(ctx, u, "dispense"); err != nil {
		return nil, err
	}
	u.State = UnitDispensed
	return u, c.record(ctx, u, k, "Dispensed", CustodyEvent{BizStep: "dispensing", From: caller.MSP, By: caller.MSP})
}

// saleable refuses to move or dispense a pack that is not active, is expired, or belongs to a recalled lot.
func (c *Supply) saleable(ctx contractapi.TransactionContextInterface, u *Unit, action string) error {
	if u.State != UnitActive {
		return conflict("cannot %s %s/%s: it is %s", action, u.GTIN, u.Serial, u.State)
	}
	flags, err := c.condition(ctx, u)
	if err != nil {
		return err
	}
	if len(flags) > 0 {
		return conflict("cannot %s %s/%s: %v", action, u.GTIN, u.Serial, flags)
	}
	return nil
}

// condition lists the recall and expiry flags of a unit at the transaction's time.
func (c *Supply) condition(ctx contractapi.TransactionContextInterface, u *Unit) ([]string, error) {
	flags := []string{}
	rk, err := key(ctx, keyRecall, u.GTIN, u.Lot)
	if err != nil {
		return nil, err
	}
	if recalled, err := exists(ctx, rk); err != nil {
		return nil, err
	} else if recalled {
		flags = append(flags, FlagRecalled)
	}
	now, err := txTime(ctx)
	if err != nil {
		return nil, err
	}
	expiry, _ := time.Parse(time.DateOnly, u.Expiry)
	if !now.Before(expiry.AddDate(0, 0, 1)) { // usable through the expiry date
		flags = append(flags, FlagExpired)
	}
	return flags, nil
}

// Decommission takes a pack out of the supply chain (destroyed, damaged, sample): its manufacturer only.
func (c *Supply) Decommission(ctx contractapi.TransactionContextInterface, gtin, serial, reason string) (*Unit, error) {
	caller, err := writerOfKind(ctx, c.cfg, KindManufacturer, "Supply.Decommission")
	if err != nil {
		return nil, err
	}
	u, k, err := c.load(ctx, gtin, serial)
	if err != nil {
		return nil, err
	}
	if u.Manufacturer != caller.MSP {
		return nil, forbidden("only the manufacturer %s decommissions %s/%s", u.Manufacturer, gtin, serial)
	}
	if err := matches(codePattern, "reason", reason, "a short reason code"); err != nil {
		return nil, err
	}
	if u.State == UnitDecommissioned || u.State == UnitDispensed {
		return nil, conflict("%s/%s is %s already", gtin, serial, u.State)
	}
	u.State = UnitDecommissioned
	return u, c.record(ctx, u, k, "Decommissioned", CustodyEvent{BizStep: "decommissioning", By: caller.MSP, Reason: reason})
}

// RecallLot recalls a whole lot of a product; verification flags every pack of it from now on.
func (c *Supply) RecallLot(ctx contractapi.TransactionContextInterface, gtin, lot, reason string) (*Recall, error) {
	caller, err := writerOfKind(ctx, c.cfg, KindManufacturer, "Supply.RecallLot")
	if err != nil {
		return nil, err
	}
	if !gtinValid(gtin) {
		return nil, invalid("gtin %q is not a GTIN-14 with a valid check digit", gtin)
	}
	if err := matches(lotPattern, "lot", lot, "a GS1 lot"); err != nil {
		return nil, err
	}
	if err := matches(codePattern, "reason", reason, "a short reason code"); err != nil {
		return nil, err
	}
	k, err := key(ctx, keyRecall, gtin, lot)
	if err != nil {
		return nil, err
	}
	if err := mustBeNew(ctx, k, "lot %s of %s is recalled already", lot, gtin); err != nil {
		return nil, err
	}
	now, err := txTime(ctx)
	if err != nil {
		return nil, err
	}
	r := Recall{GTIN: gtin, Lot: lot, Manufacturer: caller.MSP, Reason: reason, At: timeText(now), TxID: ctx.GetStub().GetTxID()}
	if err := putJSON(ctx, k, r); err != nil {
		return nil, err
	}
	return &r, emit(ctx, "Supply.Recalled", r)
}

// Verify checks a scanned pack (lot and expiry as printed; either may be empty) for the caller's org. It only
// answers: it writes nothing and emits nothing, so any identity of a channel member may evaluate it. To put a
// suspicious result on record and alert the manufacturer, submit VerifyAndReport.
func (c *Supply) Verify(ctx contractapi.TransactionContextInterface, gtin, serial, lot, expiry string) (*Verification, error) {
	caller, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	v, _, err := c.verify(ctx, caller, gtin, serial, lot, expiry)
	return v, err
}

// VerifyAndReport verifies like Verify and, when the pack is suspicious, records an Alert (listed by Alerts) and
// emits Supply.Alert for the manufacturer. The caller must be a client or admin of a member org. An authentic pack
// writes nothing and emits nothing.
func (c *Supply) VerifyAndReport(ctx contractapi.TransactionContextInterface, gtin, serial, lot, expiry string) (*Verification, error) {
	caller, err := memberWriter(ctx, c.cfg, "Supply.VerifyAndReport")
	if err != nil {
		return nil, err
	}
	if lot != "" {
		if err := matches(lotPattern, "lot", lot, "a GS1 lot"); err != nil {
			return nil, err
		}
	}
	if expiry != "" {
		if _, err := date("expiry", expiry); err != nil {
			return nil, err
		}
	}
	v, manufacturer, err := c.verify(ctx, caller, gtin, serial, lot, expiry)
	if err != nil || v.Authentic || slices.Contains(v.Flags, FlagInvalidGTIN) {
		return v, err // an unreadable GTIN names no pack to put an alert on
	}
	now, err := txTime(ctx)
	if err != nil {
		return nil, err
	}
	txID := ctx.GetStub().GetTxID()
	a := Alert{GTIN: gtin, Serial: serial, Lot: lot, Expiry: expiry, Manufacturer: manufacturer, VerifiedBy: caller.MSP,
		Flags: v.Flags, At: timeText(now), TxID: txID}
	k, err := key(ctx, keyAlert, gtin, serial, a.At, txID)
	if err != nil {
		return nil, err
	}
	if err := putJSON(ctx, k, a); err != nil {
		return nil, err
	}
	return v, emit(ctx, "Supply.Alert", a)
}

// verify is the check behind Verify and VerifyAndReport; it also returns the pack's manufacturer ("" if unknown).
func (c *Supply) verify(ctx contractapi.TransactionContextInterface, caller Caller, gtin, serial, lot, expiry string) (*Verification, string, error) {
	v := &Verification{Flags: []string{}}
	if !gtinValid(gtin) {
		v.Flags = append(v.Flags, FlagInvalidGTIN)
		return v, "", nil
	}
	u, _, err := c.load(ctx, gtin, serial)
	var ce *ContractError
	if asContractError(err, &ce) && ce.Code == CodeNotFound {
		v.Flags = append(v.Flags, FlagUnknownSerial)
		return v, "", nil
	}
	if err != nil {
		return nil, "", err
	}
	v.State, v.Custodian = u.State, u.Custodian
	if lot != "" && lot != u.Lot {
		v.Flags = append(v.Flags, FlagLotMismatch)
	}
	if expiry != "" && expiry != u.Expiry {
		v.Flags = append(v.Flags, FlagExpiryMismatch)
	}
	switch u.State {
	case UnitDispensed:
		v.Flags = append(v.Flags, FlagAlreadyDispensed)
	case UnitDecommissioned:
		v.Flags = append(v.Flags, FlagDecommissioned)
	}
	cond, err := c.condition(ctx, u)
	if err != nil {
		return nil, "", err
	}
	v.Flags = append(v.Flags, cond...)
	if u.Custodian != caller.MSP && u.ShippedTo != caller.MSP {
		v.Flags = append(v.Flags, FlagCustodyMismatch)
	}
	v.Authentic = len(v.Flags) == 0
	return v, u.Manufacturer, nil
}

// Alert is a suspicious verification on record: what was scanned, by whom, and what was wrong.
type Alert struct {
	GTIN         string   `json:"gtin"`
	Serial       string   `json:"serial"`
	Lot          string   `json:"lot"`    // as printed on the pack ("" if not given)
	Expiry       string   `json:"expiry"` // as printed on the pack ("" if not given)
	Manufacturer string   `json:"manufacturer"`
	VerifiedBy   string   `json:"verifiedBy"`
	Flags        []string `json:"flags"`
	At           string   `json:"at"`
	TxID         string   `json:"txId"`
}

// Alerts lists the suspicious verifications reported for a pack (commissioned or not), oldest first.
func (c *Supply) Alerts(ctx contractapi.TransactionContextInterface, gtin, serial string) ([]Alert, error) {
	if !gtinValid(gtin) {
		return nil, invalid("gtin %q is not a GTIN-14 with a valid check digit", gtin)
	}
	if err := matches(serialPattern, "serial", serial, "a GS1 serial"); err != nil {
		return nil, err
	}
	return listJSON[Alert](ctx, keyAlert, gtin, serial)
}

// History lists a pack's custody events, oldest first.
func (c *Supply) History(ctx contractapi.TransactionContextInterface, gtin, serial string) ([]CustodyEvent, error) {
	if _, _, err := c.load(ctx, gtin, serial); err != nil {
		return nil, err
	}
	return listJSON[CustodyEvent](ctx, keyUnitEvent, gtin, serial)
}

// Get returns a pack's current state.
func (c *Supply) Get(ctx contractapi.TransactionContextInterface, gtin, serial string) (*Unit, error) {
	u, _, err := c.load(ctx, gtin, serial)
	return u, err
}
