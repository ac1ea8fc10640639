package contracts

import (
	"testing"

	"github.com/hyperledger/fabric-contract-api-go/v2/contractapi"
)

// write is one state-changing contract call, ready to run in a world its prep arranged, as an actor of org.
type write struct {
	name    string
	channel string
	org     string // the org whose identity may make the call
	prep    func(t *testing.T, w *world)
	move    func(t *testing.T, w *world, a actor) error
}

// writes lists every write of every contract, each with what it needs to succeed.
func writes(t *testing.T) []write {
	hospital, insurer, pharma := client(t, "HospitalMSP"), client(t, "InsurerMSP"), client(t, "PharmaMSP")
	patient := patientCert(t, "HospitalMSP", "patient-app")
	newIdentity := patientCert(t, "HospitalMSP", "patient-new")
	p, r, cs, tr, cl, su := newProbe(testConfig), newRecords(testConfig), newConsent(testConfig),
		newTrials(testConfig), newClaims(testConfig), newSupply(testConfig)
	records := func(t *testing.T, w *world) {
		_, err := register(t, w, hospital, entry(patientA, "Patient", "p1", 1, digest1))
		mustOK(t, err)
	}
	withGrant := func(t *testing.T, w *world) {
		records(t, w)
		_, err := doGrant(t, w, hospital, grant("c1", "HospitalMSP", []string{"*"}, "HRESCH", "2026-03-01T00:00:00Z", ""))
		mustOK(t, err)
	}
	withStudy := func(t *testing.T, w *world) {
		withGrant(t, w)
		mustOK(t, do(w, hospital, tr, func(ctx contractapi.TransactionContextInterface) (*Study, error) {
			return tr.RegisterStudy(ctx, "study-1", digest1)
		}))
	}
	submitted := func(t *testing.T, w *world) {
		_, err := submit(t, w, hospital, submission("cl-1"), detail("cl-1"))
		mustOK(t, err)
	}
	adjudicated := func(t *testing.T, w *world) {
		submitted(t, w)
		_, err := adjudicate(t, w, insurer, "cl-1", approveAll(0))
		mustOK(t, err)
	}
	preauthSubmitted := func(t *testing.T, w *world) {
		_, err := submit(t, w, hospital, preauth("pa-1", "standard"), detail("pa-1"))
		mustOK(t, err)
	}
	commissioned := func(t *testing.T, w *world) { mustOK(t, commission(t, w, pharma, unit("S1"))) }
	shipped := func(t *testing.T, w *world) {
		commissioned(t, w)
		_, err := supplyStep(w, pharma, func(s *Supply, ctx contractapi.TransactionContextInterface) (*Unit, error) {
			return s.Ship(ctx, gtin, "S1", "HospitalMSP")
		})
		mustOK(t, err)
	}
	received := func(t *testing.T, w *world) {
		shipped(t, w)
		_, err := supplyStep(w, hospital, func(s *Supply, ctx contractapi.TransactionContextInterface) (*Unit, error) {
			return s.Receive(ctx, gtin, "S1")
		})
		mustOK(t, err)
	}
	return []write{
		{"Probe.Write", "claims", "InsurerMSP", nil, func(t *testing.T, w *world, a actor) error {
			return do(w, a, p, func(ctx contractapi.TransactionContextInterface) (any, error) { return nil, p.Write(ctx, "k", "v") })
		}},
		{"Probe.Increment", "pharma", "PharmaMSP", nil, func(t *testing.T, w *world, a actor) error {
			return do(w, a, p, func(ctx contractapi.TransactionContextInterface) (int, error) { return p.Increment(ctx, "k") })
		}},
		{"Records.Register", "providers", "HospitalMSP", nil, func(t *testing.T, w *world, a actor) error {
			_, err := register(t, w, a, entry(patientA, "Patient", "p1", 1, digest1))
			return err
		}},
		{"Records.RecordErasure", "providers", "HospitalMSP", records, func(t *testing.T, w *world, a actor) error {
			return do(w, a, r, func(ctx contractapi.TransactionContextInterface) (*Erasure, error) {
				return r.RecordErasure(ctx, patientA)
			})
		}},
		{"Records.LinkPatient", "providers", "HospitalMSP", records, func(t *testing.T, w *world, a actor) error {
			return do(w, a, r, func(ctx contractapi.TransactionContextInterface) (*PatientLink, error) {
				return r.LinkPatient(ctx, patientA, patientB)
			})
		}},
		{"Records.UnlinkPatient", "providers", "HospitalMSP", func(t *testing.T, w *world) {
			records(t, w)
			mustOK(t, do(w, hospital, r, func(ctx contractapi.TransactionContextInterface) (*PatientLink, error) {
				return r.LinkPatient(ctx, patientA, patientB)
			}))
		}, func(t *testing.T, w *world, a actor) error {
			return do(w, a, r, func(ctx contractapi.TransactionContextInterface) (*PatientLink, error) {
				return r.UnlinkPatient(ctx, patientA, patientB)
			})
		}},
		{"Consent.RegisterPatientIdentity", "providers", "HospitalMSP", records, func(t *testing.T, w *world, a actor) error {
			return registerIdentity(w, a, patientA, patient)
		}},
		{"Consent.RecoverPatientIdentity", "providers", "HospitalMSP", func(t *testing.T, w *world) {
			records(t, w)
			mustOK(t, registerIdentity(w, hospital, patientA, patient))
		}, func(t *testing.T, w *world, a actor) error {
			return do(w, a, cs, func(ctx contractapi.TransactionContextInterface) (*PatientIdentity, error) {
				return cs.RecoverPatientIdentity(ctx, patientA, newIdentity.pem(), digest2)
			})
		}},
		{"Consent.Grant", "providers", "HospitalMSP", records, func(t *testing.T, w *world, a actor) error {
			_, err := doGrant(t, w, a, grant("c1", "ClinicMSP", []string{"*"}, "TREAT", "2026-03-01T00:00:00Z", ""))
			return err
		}},
		{"Consent.Revoke", "providers", "HospitalMSP", withGrant, func(t *testing.T, w *world, a actor) error {
			_, err := doRevoke(w, a, "c1", digest1)
			return err
		}},
		{"Audit.RecordAccess", "providers", "HospitalMSP", records, func(t *testing.T, w *world, a actor) error {
			_, err := access(t, w, a, accessReq(patientA, "ClinicMSP", obsO1, "TREAT"))
			return err
		}},
		{"Trials.RegisterStudy", "providers", "HospitalMSP", nil, func(t *testing.T, w *world, a actor) error {
			return do(w, a, tr, func(ctx contractapi.TransactionContextInterface) (*Study, error) {
				return tr.RegisterStudy(ctx, "s", digest1)
			})
		}},
		{"Trials.Enrol", "providers", "HospitalMSP", withStudy, func(t *testing.T, w *world, a actor) error {
			return do(w, a, tr, func(ctx contractapi.TransactionContextInterface) (*Enrolment, error) {
				return tr.Enrol(ctx, "study-1", patientA, ref("c1"))
			})
		}},
		{"Trials.AnchorDataset", "providers", "HospitalMSP", withStudy, func(t *testing.T, w *world, a actor) error {
			return do(w, a, tr, func(ctx contractapi.TransactionContextInterface) (*Dataset, error) {
				return tr.AnchorDataset(ctx, "study-1", "v1", digest1)
			})
		}},
		{"Claims.Submit", "claims", "HospitalMSP", nil, func(t *testing.T, w *world, a actor) error {
			_, err := submit(t, w, a, submission("cl-1"), detail("cl-1"))
			return err
		}},
		{"Claims.Adjudicate", "claims", "InsurerMSP", submitted, func(t *testing.T, w *world, a actor) error {
			_, err := adjudicate(t, w, a, "cl-1", approveAll(0))
			return err
		}},
		{"Claims.Pay", "claims", "InsurerMSP", adjudicated, func(t *testing.T, w *world, a actor) error {
			return do(w, a, cl, func(ctx contractapi.TransactionContextInterface) (*Claim, error) {
				return cl.Pay(ctx, ref("cl-1"), "EFT-1")
			})
		}},
		{"Claims.Cancel", "claims", "HospitalMSP", submitted, func(t *testing.T, w *world, a actor) error {
			return do(w, a, cl, func(ctx contractapi.TransactionContextInterface) (*Claim, error) {
				return cl.Cancel(ctx, ref("cl-1"), "dup")
			})
		}},
		{"Claims.PurgeLines", "claims", "InsurerMSP", adjudicated, func(t *testing.T, w *world, a actor) error {
			return do(w, a, cl, func(ctx contractapi.TransactionContextInterface) (*Claim, error) {
				return cl.PurgeLines(ctx, ref("cl-1"))
			})
		}},
		{"Claims.SubmitBatch", "claims", "HospitalMSP", nil, func(t *testing.T, w *world, a actor) error {
			_, err := submitBatch(t, w, a, []ClaimSubmission{submission("cl-1")}, map[string]ClaimDetail{ref("cl-1"): detail("cl-1")})
			return err
		}},
		{"Claims.AdjudicateBatch", "claims", "InsurerMSP", submitted, func(t *testing.T, w *world, a actor) error {
			_, err := adjudicateBatch(t, w, a, map[string]AdjudicationInput{ref("cl-1"): approveAll(0)})
			return err
		}},
		{"Claims.PayBatch", "claims", "InsurerMSP", adjudicated, func(t *testing.T, w *world, a actor) error {
			_, err := payBatch(t, w, a, "HospitalMSP", "EFT-1", "cl-1")
			return err
		}},
		{"Claims.DecidePreauth", "claims", "InsurerMSP", preauthSubmitted, func(t *testing.T, w *world, a actor) error {
			_, err := decide(t, w, a, "pa-1", deny)
			return err
		}},
		{"Claims.DecidePreauthBatch", "claims", "InsurerMSP", preauthSubmitted, func(t *testing.T, w *world, a actor) error {
			_, err := decideBatch(t, w, a, map[string]PreauthDecisionInput{ref("pa-1"): deny})
			return err
		}},
		{"Claims.AppealPreauth", "claims", "HospitalMSP", func(t *testing.T, w *world) {
			preauthSubmitted(t, w)
			_, err := decide(t, w, insurer, "pa-1", deny)
			mustOK(t, err)
		}, func(t *testing.T, w *world, a actor) error {
			_, err := appeal(w, a, "pa-1")
			return err
		}},
		{"Supply.Commission", "pharma", "PharmaMSP", nil, func(t *testing.T, w *world, a actor) error {
			return commission(t, w, a, unit("S1"))
		}},
		{"Supply.Ship", "pharma", "PharmaMSP", commissioned, func(t *testing.T, w *world, a actor) error {
			return do(w, a, su, func(ctx contractapi.TransactionContextInterface) (*Unit, error) {
				return su.Ship(ctx, gtin, "S1", "HospitalMSP")
			})
		}},
		{"Supply.Receive", "pharma", "HospitalMSP", shipped, func(t *testing.T, w *world, a actor) error {
			return do(w, a, su, func(ctx contractapi.TransactionContextInterface) (*Unit, error) { return su.Receive(ctx, gtin, "S1") })
		}},
		{"Supply.Dispense", "pharma", "HospitalMSP", received, func(t *testing.T, w *world, a actor) error {
			return do(w, a, su, func(ctx contractapi.TransactionContextInterface) (*Unit, error) { return su.Dispense(ctx, gtin, "S1") })
		}},
		{"Supply.Decommission", "pharma", "PharmaMSP", commissioned, func(t *testing.T, w *world, a actor) error {
			return do(w, a, su, func(ctx contractapi.TransactionContextInterface) (*Unit, error) {
				return su.Decommission(ctx, gtin, "S1", "damaged")
			})
		}},
		{"Supply.RecallLot", "pharma", "PharmaMSP", nil, func(t *testing.T, w *world, a actor) error {
			return do(w, a, su, func(ctx contractapi.TransactionContextInterface) (*Recall, error) {
				return su.RecallLot(ctx, gtin, "LOT42", "contamination")
			})
		}},
		{"Supply.VerifyAndReport", "pharma", "ClinicMSP", commissioned, func(t *testing.T, w *world, a actor) error {
			return do(w, a, su, func(ctx contractapi.TransactionContextInterface) (*Verification, error) {
				return su.VerifyAndReport(ctx, gtin, "S1", "", "")
			})
		}},
	}
}

// TestWritesCheckTheRole runs every write as each NodeOU role of the org allowed to make it: clients and admins
// are accepted, peers, orderers and certificates without a role are refused before anything is written.
func TestWritesCheckTheRole(t *testing.T) {
	roles := []struct {
		role string
		ok   bool
	}{{"client", true}, {"admin", true}, {"peer", false}, {"orderer", false}, {"", false}}
	for _, wr := range writes(t) {
		for _, r := range roles {
			t.Run(wr.name+"/"+r.role, func(t *testing.T) {
				w := newWorld(wr.channel)
				if wr.prep != nil {
					wr.prep(t, w)
				}
				err := wr.move(t, w, newActor(t, wr.org, r.role, "someone@"+wr.org))
				if r.ok {
					mustOK(t, err)
					if last := w.calls[len(w.calls)-1]; len(last.events) != 1 {
						t.Fatalf("a write emitted %d events", len(last.events))
					}
					return
				}
				refused(t, w, err, CodeForbidden, "may not submit")
			})
		}
	}
}

// TestContractsRefuseOtherChannels runs every write, and a read of each contract, on each channel its contract
// does not serve.
func TestContractsRefuseOtherChannels(t *testing.T) {
	reads := []write{
		{"Records.Custodians", "providers", "ClinicMSP", nil, func(t *testing.T, w *world, a actor) error {
			r := newRecords(testConfig)
			return do(w, a, r, func(ctx contractapi.TransactionContextInterface) ([]Custodianship, error) {
				return r.Custodians(ctx, patientA)
			})
		}},
		{"Consent.Check", "providers", "ClinicMSP", nil, func(t *testing.T, w *world, a actor) error {
			c := newConsent(testConfig)
			return do(w, a, c, func(ctx contractapi.TransactionContextInterface) (*Decision, error) {
				return c.Check(ctx, patientA, "HospitalMSP", "ClinicMSP", "Observation", "TREAT")
			})
		}},
		{"Audit.ByPeriod", "providers", "ClinicMSP", nil, func(t *testing.T, w *world, a actor) error {
			c := newAudit(testConfig)
			return do(w, a, c, func(ctx contractapi.TransactionContextInterface) (*AuditPage, error) {
				return c.ByPeriod(ctx, "2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z", 10, "")
			})
		}},
		{"Trials.Enrolments", "providers", "ClinicMSP", nil, func(t *testing.T, w *world, a actor) error {
			c := newTrials(testConfig)
			return do(w, a, c, func(ctx contractapi.TransactionContextInterface) ([]Enrolment, error) { return c.Enrolments(ctx, "s") })
		}},
		{"Claims.Get", "claims", "ClinicMSP", nil, func(t *testing.T, w *world, a actor) error {
			c := newClaims(testConfig)
			return do(w, a, c, func(ctx contractapi.TransactionContextInterface) (*Claim, error) { return c.Get(ctx, ref("cl-1")) })
		}},
		{"Supply.Verify", "pharma", "ClinicMSP", nil, func(t *testing.T, w *world, a actor) error {
			c := newSupply(testConfig)
			return do(w, a, c, func(ctx contractapi.TransactionContextInterface) (*Verification, error) {
				return c.Verify(ctx, gtin, "S1", "", "")
			})
		}},
	}
	for _, wr := range append(writes(t), reads...) {
		if wr.name[:6] == "Probe." {
			continue // the probe runs on every channel
		}
		for _, channel := range []string{"providers", "claims", "pharma", "other"} {
			if channel == wr.channel {
				continue
			}
			t.Run(wr.name+"/"+channel, func(t *testing.T) {
				w := newWorld(channel)
				err := wr.move(t, w, client(t, wr.org))
				refused(t, w, err, CodeForbidden, "does not serve channel \""+channel+"\"")
			})
		}
	}
}

func TestProbeRunsOnEveryChannel(t *testing.T) {
	for _, channel := range []string{"providers", "claims", "pharma"} {
		w := newWorld(channel)
		p := newProbe(testConfig)
		mustOK(t, do(w, admin(t, "HospitalMSP"), p, func(ctx contractapi.TransactionContextInterface) (any, error) {
			return nil, p.Write(ctx, "k", channel)
		}))
	}
}
