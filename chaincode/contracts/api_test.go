package contracts

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hyperledger/fabric-chaincode-go/v2/shim"
	"github.com/hyperledger/fabric-contract-api-go/v2/contractapi"
	"github.com/hyperledger/fabric-protos-go-apiv2/msp"
	"google.golang.org/protobuf/proto"
)

// The tests in this file go through the contract API as a peer does (ContractChaincode.Invoke): string arguments
// converted and checked against the generated metadata, BeforeTransaction hooks, and return values serialised and
// validated against their schema, where every field is required unless tagged optional and null is not a list.

var (
	apiOnce           sync.Once
	apiCC, servedCC   *contractapi.ContractChaincode
	apiErr, servedErr error
)

// chaincode is the contracts behind the contract API: the one that checks return values against their schema, or
// the one the server serves (which does not).
func chaincode(t *testing.T, served bool) *contractapi.ContractChaincode {
	t.Helper()
	apiOnce.Do(func() {
		apiCC, apiErr = contractapi.NewChaincode(All(testConfig)...)
		servedCC, servedErr = Served(testConfig)
	})
	if apiErr != nil || servedErr != nil {
		t.Fatalf("the contract API rejects the contracts: %v %v", apiErr, servedErr)
	}
	if served {
		return servedCC
	}
	return apiCC
}

// invoke runs "Contract:Function" with string arguments as the actor through the contract API, and commits its
// writes when it succeeds. It returns the payload the peer would return.
func invoke(t *testing.T, w *world, a actor, transient map[string][]byte, fn string, args ...string) (string, error) {
	t.Helper()
	creator, err := proto.Marshal(&msp.SerializedIdentity{Mspid: a.msp, IdBytes: []byte(a.pem())})
	if err != nil {
		t.Fatal(err)
	}
	w.txs++
	stub := &fakeStub{w: w, txID: fmt.Sprintf("tx%d", w.txs), transient: transient, writes: map[string][]byte{},
		pwrites: map[string]map[string][]byte{}, fn: fn, args: args, creator: creator}
	w.calls = append(w.calls, stub)
	resp := chaincode(t, w.served).Invoke(stub)
	if resp.Status != shim.OK {
		return "", errors.New(resp.Message)
	}
	stub.commit()
	stub.committed = true
	return string(resp.Payload), nil
}

// apiStep is one call through the contract API and what must come back: a payload containing want, or an error
// starting with code.
type apiStep struct {
	who       actor
	fn        string
	args      []string
	transient map[string]any
	want      string // a part of the payload ("" accepts any)
	code      string // the error code expected instead
}

// runAPI runs the steps on a fresh world through the checking chaincode, and the same steps on a twin world
// through the chaincode as served, which must answer each step exactly as the checking one does.
func runAPI(t *testing.T, w *world, steps []apiStep) {
	t.Helper()
	if w.txs != 0 {
		t.Fatal("runAPI starts from a fresh world")
	}
	twin := newWorld(w.channel)
	twin.now, twin.served = w.now, true
	for i, s := range steps {
		var tm map[string][]byte
		if s.transient != nil {
			tm = map[string][]byte{}
			for k, v := range s.transient {
				tm[k] = []byte(mustJSON(t, v))
			}
		}
		w.now = w.now.Add(time.Second)
		twin.now = w.now
		out, err := invoke(t, w, s.who, tm, s.fn, s.args...)
		servedOut, servedErr := invoke(t, twin, s.who, tm, s.fn, s.args...)
		if servedOut != out || fmt.Sprint(servedErr) != fmt.Sprint(err) {
			t.Fatalf("step %d %s: served %q / %v, checked %q / %v", i, s.fn, servedOut, servedErr, out, err)
		}
		switch {
		case s.code != "" && (err == nil || !strings.HasPrefix(err.Error(), s.code+": ")):
			t.Fatalf("step %d %s: want %s, got %v / %s", i, s.fn, s.code, err, out)
		case s.code == "" && err != nil:
			t.Fatalf("step %d %s: %v", i, s.fn, err)
		case s.code == "" && !strings.Contains(out, s.want):
			t.Fatalf("step %d %s: payload lacks %q: %s", i, s.fn, s.want, out)
		case s.code == "" && strings.HasPrefix(out, "{") || strings.HasPrefix(out, "["):
			var v any
			if err := json.Unmarshal([]byte(out), &v); err != nil {
				t.Fatalf("step %d %s: payload is not JSON: %s", i, s.fn, out)
			}
		}
	}
}

func js(t *testing.T, v any) string { return mustJSON(t, v) }

func TestContractAPIProviders(t *testing.T) {
	w := newWorld("providers")
	hospital, clinic := client(t, "HospitalMSP"), client(t, "ClinicMSP")
	patient := patientCert(t, "HospitalMSP", "patient-app")
	phone := patientCert(t, "HospitalMSP", "patient-phone")
	lost := patientCert(t, "HospitalMSP", "patient-lost")
	patientC := strings.Repeat("c3", 32)
	v2 := entry(patientA, "Observation", "o1", 1, digest1)
	v2.DigestScheme = SchemeMerkle
	lab := grant("g-lab", "ClinicMSP", []string{"Observation"}, "TREAT", "2026-03-01T00:00:00Z", "")
	lab.DocumentDigest, lab.Categories = "", []string{"laboratory"}
	research := grant("g-research", "HospitalMSP", []string{"*"}, "HRESCH", "2026-03-01T00:00:00Z", "")
	one := accessReq(patientA, "ClinicMSP", obsO1, "TREAT")
	one.Categories = []string{"laboratory"}
	runAPI(t, w, []apiStep{
		{who: hospital, fn: "Records:Register", args: []string{js(t, []RecordEntry{entry(patientA, "Patient", "p1", 1, digest1), v2, dirEntry("Practitioner", "pr1", 1, digest1)})}, want: "3"},
		{who: hospital, fn: "Records:Register", args: []string{js(t, []RecordEntry{entry(patientB, "Patient", "p-local", 1, digest1)})}, want: "1"},
		{who: hospital, fn: "Records:LinkPatient", args: []string{patientB, patientC}, want: `"status":"linked"`},
		{who: clinic, fn: "Records:Custodians", args: []string{patientC}, want: `"localPseudonym":"` + patientB},
		{who: clinic, fn: "Records:Custodians", args: []string{patientA}, want: `"localPseudonym":""`},
		{who: clinic, fn: "Records:Links", args: []string{patientC}, want: `"custodian":"HospitalMSP"`},
		{who: clinic, fn: "Records:Get", args: []string{ref("Observation/o1"), "0"}, want: `"digestScheme":"v2"`},
		{who: clinic, fn: "Records:History", args: []string{ref("Practitioner/pr1")}, want: `"directory":true`},
		{who: clinic, fn: "Records:PatientIndex", args: []string{patientA, "1", ""}, want: `"bookmark":"`},
		{who: clinic, fn: "Records:DirectoryIndex", args: []string{"HospitalMSP", "10", ""}, want: `"resourceType":"Practitioner"`},
		{who: clinic, fn: "Records:Get", args: []string{"MRN-1", "0"}, code: CodeInvalid},
		{who: hospital, fn: "Consent:RegisterPatientIdentity", args: []string{patientA, patient.pem()}, want: `"pendingVia":"registration"`},
		{who: patient, fn: "Consent:ConfirmPatientIdentity", args: []string{patientA}, want: `"bindings":[{`},
		{who: clinic, fn: "Consent:PatientIdentities", args: []string{patientA}, want: patient.fingerprint()},
		{who: patient, fn: "Consent:Grant", args: []string{js(t, lab)}, want: `"categories":["laboratory"]`},
		{who: hospital, fn: "Consent:Grant", args: []string{js(t, research)}, want: `"categories":[]`},
		{who: clinic, fn: "Consent:Check", args: []string{patientA, "HospitalMSP", "ClinicMSP", "Observation", "TREAT"}, want: `"decision":"partial"`},
		{who: clinic, fn: "Consent:Check", args: []string{patientA, "HospitalMSP", "InsurerMSP", "*", "HPAYMT"}, want: `"coverage":[]`},
		{who: clinic, fn: "Consent:Check", args: []string{patientA, "InsurerMSP", "ClinicMSP", "Observation", "TREAT"}, code: CodeInvalid},
		{who: hospital, fn: "Audit:RecordAccess", args: []string{js(t, one)}, want: `"decision":"permit"`},
		{who: hospital, fn: "Audit:RecordAccess", args: []string{js(t, accessReq(patientA, "ClinicMSP", Everything, "TREAT"))}, want: `"decision":"partial"`},
		{who: hospital, fn: "Audit:RecordAccess", args: []string{js(t, accessReq(patientA, "InsurerMSP", Everything, "HPAYMT"))}, want: `"decision":"deny"`},
		{who: clinic, fn: "Audit:ByPatient", args: []string{patientA, "2026-03-01T00:00:00Z", "2026-03-02T00:00:00Z", "10", ""}, want: `"coverage":[{`},
		{who: clinic, fn: "Audit:ByPeriod", args: []string{"2026-03-01T00:00:00Z", "2026-03-02T00:00:00Z", "1", ""}, want: `"bookmark":"`},
		{who: hospital, fn: "Trials:RegisterStudy", args: []string{"study-1", digest1}, want: `"sponsor":"HospitalMSP"`},
		{who: hospital, fn: "Trials:Enrol", args: []string{"study-1", patientA, ref("g-research")}, want: `"enrolledBy":"HospitalMSP"`},
		{who: hospital, fn: "Trials:AnchorDataset", args: []string{"study-1", "v1", digest1}, want: `"version":"v1"`},
		{who: clinic, fn: "Trials:VerifyDataset", args: []string{"study-1", "v1", digest2}, want: `"match":false`},
		{who: clinic, fn: "Trials:Enrolments", args: []string{"study-1"}, want: patientA},
		{who: patient, fn: "Consent:Revoke", args: []string{ref("g-lab"), ""}, want: `"revokedVia":"patient"`},
		{who: clinic, fn: "Consent:Get", args: []string{ref("g-lab")}, want: `"status":"revoked"`},
		{who: patient, fn: "Consent:RotatePatientIdentity", args: []string{patientA, phone.pem()}, want: `"pendingVia":"rotation"`},
		{who: phone, fn: "Consent:ConfirmPatientIdentity", args: []string{patientA}, want: phone.fingerprint()},
		{who: hospital, fn: "Consent:RecoverPatientIdentity", args: []string{patientA, lost.pem(), digest2}, want: `"pendingVia":"recovery"`},
		{who: clinic, fn: "Consent:PatientIdentityHistory", args: []string{patientA, "HospitalMSP"}, want: `"version":5`},
		{who: hospital, fn: "Records:UnlinkPatient", args: []string{patientB, patientC}, want: `"status":"unlinked"`},
		{who: hospital, fn: "Records:RecordErasure", args: []string{patientA}, want: `"custodian":"HospitalMSP"`},
		{who: hospital, fn: "Probe:Write", args: []string{"k", "v"}},
		{who: clinic, fn: "Probe:Read", args: []string{"k"}, want: `"writer":"HospitalMSP"`},
		{who: clinic, fn: "Probe:Increment", args: []string{"n"}, want: "1"},
		{who: clinic, fn: "Claims:Get", args: []string{ref("x")}, code: CodeForbidden},
	})
}

func TestContractAPIClaims(t *testing.T) {
	w := newWorld("claims")
	hospital, insurer := client(t, "HospitalMSP"), client(t, "InsurerMSP")
	pa := preauth("pa-1", "expedited")
	runAPI(t, w, []apiStep{
		{who: hospital, fn: "Claims:Submit", args: []string{js(t, dated("c-1", 1))}, transient: map[string]any{"claim": detail("c-1")}, want: `"use":"claim"`},
		{who: hospital, fn: "Claims:Submit", args: []string{js(t, pa)}, transient: map[string]any{"claim": detail("pa-1")}, want: `"dueAt"`},
		{who: hospital, fn: "Claims:SubmitBatch", args: []string{js(t, []ClaimSubmission{dated("c-2", 2), dated("c-3", 3), dated("c-4", 4)})},
			transient: map[string]any{"claims": map[string]ClaimDetail{ref("c-2"): detail("c-2"), ref("c-3"): detail("c-3"), ref("c-4"): detail("c-4")}},
			want:      `"provider":"HospitalMSP"`},
		{who: insurer, fn: "Claims:Adjudicate", args: []string{ref("c-1")}, transient: map[string]any{"adjudication": approveAll(0)}, want: `"status":"adjudicated"`},
		{who: insurer, fn: "Claims:AdjudicateBatch", transient: map[string]any{"adjudications": map[string]AdjudicationInput{
			ref("c-2"): approveAll(0), ref("c-3"): {Lines: approveAll(0).Lines[:1]}, ref("missing"): approveAll(0),
		}}, want: `"status":"refused"`},
		{who: insurer, fn: "Claims:PayBatch", args: []string{"HospitalMSP", "EFT-1", js(t, []string{ref("c-1"), ref("c-2"), ref("c-3")})}, want: `"totalCents":55000`},
		{who: insurer, fn: "Claims:Payment", args: []string{"EFT-1"}, want: `"refused":[{`},
		{who: insurer, fn: "Claims:PayBatch", args: []string{"HospitalMSP", "EFT-2", js(t, []string{ref("c-3")})}, code: CodeConflict},
		{who: insurer, fn: "Claims:DecidePreauth", args: []string{ref("pa-1"), js(t, deny)}, want: `"denialReason":"N386"`},
		{who: hospital, fn: "Claims:AppealPreauth", args: []string{ref("pa-1"), digest2}, want: `"status":"appealed"`},
		{who: insurer, fn: "Claims:DecidePreauth", args: []string{ref("pa-1"), js(t, approve)}, want: `"onAppeal":true`},
		{who: hospital, fn: "Claims:SubmitBatch", args: []string{js(t, []ClaimSubmission{preauth("pa-2", "standard"), preauth("pa-3", "standard")})},
			transient: map[string]any{"claims": map[string]ClaimDetail{ref("pa-2"): detail("pa-2"), ref("pa-3"): detail("pa-3")}},
			want:      `"use":"preauthorization"`},
		{who: insurer, fn: "Claims:DecidePreauthBatch", transient: map[string]any{"decisions": map[string]PreauthDecisionInput{
			ref("pa-2"): seen(0, approve), ref("pa-3"): seen(1, pend),
		}}, want: `"status":"decided"`},
		{who: insurer, fn: "Claims:PreauthsByPeriod", args: []string{"InsurerMSP", "2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z", "10", ""}, want: `"preAuthRef":"PA-1"`},
		{who: insurer, fn: "Claims:DueForPurge", args: []string{"2027-01-01T00:00:00Z", "10", ""}, want: `"claims":[{`},
		{who: hospital, fn: "Claims:Lines", args: []string{ref("c-1")}, want: `"code":"99213"`},
		{who: insurer, fn: "Claims:LinesBatch", args: []string{js(t, []string{ref("c-1"), ref("missing")})}, want: `"code":"99213"`},
		{who: insurer, fn: "Claims:LinesBatch", args: []string{js(t, []string{ref("c-1"), ref("missing")})}, want: `"code":"NOT_FOUND"`},
		{who: insurer, fn: "Claims:LinesBatch", args: []string{js(t, []string{})}, code: CodeInvalid},
		{who: hospital, fn: "Claims:AdjudicationOf", args: []string{ref("c-1")}, want: `"reasons":[]`},
		{who: hospital, fn: "Claims:Cancel", args: []string{ref("c-4"), "dup"}, want: `"status":"cancelled"`},
		{who: insurer, fn: "Claims:PurgeLines", args: []string{ref("c-4")}, want: `"linesPurged":true`},
		{who: hospital, fn: "Claims:Submit", args: []string{js(t, dated("c-5", 5))}, transient: map[string]any{"claim": detail("c-5")}},
		{who: insurer, fn: "Claims:Adjudicate", args: []string{ref("c-5")}, transient: map[string]any{"adjudication": approveAll(0)}},
		{who: insurer, fn: "Claims:Pay", args: []string{ref("c-5"), "EFT-3"}, want: `"paymentRef":"EFT-3"`},
		{who: insurer, fn: "Claims:Get", args: []string{ref("c-3")}, want: `"status":"submitted"`},
	})
}

func TestContractAPIPharma(t *testing.T) {
	w := newWorld("pharma")
	pharma, hospital, clinic := client(t, "PharmaMSP"), client(t, "HospitalMSP"), client(t, "ClinicMSP")
	runAPI(t, w, []apiStep{
		{who: pharma, fn: "Supply:Commission", args: []string{js(t, unit("S1"))}, want: `"state":"active"`},
		{who: pharma, fn: "Supply:Commission", args: []string{js(t, unit("S2"))}},
		{who: pharma, fn: "Supply:Ship", args: []string{gtin, "S1", "HospitalMSP"}, want: `"shippedTo":"HospitalMSP"`},
		{who: pharma, fn: "Supply:Ship", args: []string{gtin, "S2", "InsurerMSP"}, code: CodeInvalid},
		{who: hospital, fn: "Supply:Receive", args: []string{gtin, "S1"}, want: `"custodian":"HospitalMSP"`},
		{who: hospital, fn: "Supply:Dispense", args: []string{gtin, "S1"}, want: `"state":"dispensed"`},
		{who: pharma, fn: "Supply:Decommission", args: []string{gtin, "S2", "damaged"}, want: `"state":"decommissioned"`},
		{who: pharma, fn: "Supply:RecallLot", args: []string{gtin, "LOT42", "contamination"}, want: `"lot":"LOT42"`},
		{who: clinic, fn: "Supply:Verify", args: []string{gtin, "S1", "LOT42", ""}, want: `"authentic":false`},
		{who: clinic, fn: "Supply:VerifyAndReport", args: []string{gtin, "S1", "LOT42", "2027-06-30"}, want: "already_dispensed"},
		{who: clinic, fn: "Supply:Alerts", args: []string{gtin, "S1"}, want: `"verifiedBy":"ClinicMSP"`},
		{who: clinic, fn: "Supply:History", args: []string{gtin, "S1"}, want: `"bizStep":"dispensing"`},
		{who: clinic, fn: "Supply:Get", args: []string{gtin, "S2"}, want: `"manufacturer":"PharmaMSP"`},
		{who: clinic, fn: "Supply:Verify", args: []string{gtin, "FAKE", "", ""}, want: "unknown_serial"},
	})
}
