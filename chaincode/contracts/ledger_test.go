package contracts

import (
	"strings"
	"testing"

	"github.com/hyperledger/fabric-contract-api-go/v2/contractapi"
)

// TestNoClientIDOnTheLedger runs the records, consent, audit and claims paths with client ids that look like medical
// record numbers, as a gateway would pass them (hashed into opaque keys), and scans every public key, value and
// event of every call for them. Private data (the provider–insurer collection) is not on the ledger and not scanned.
func TestNoClientIDOnTheLedger(t *testing.T) {
	const mrn = "MRN0042"
	hospital, insurer := client(t, "HospitalMSP"), client(t, "InsurerMSP")
	patient := patientCert(t, "HospitalMSP", "patient-app")

	providers := newWorld("providers")
	_, err := register(t, providers, hospital,
		entry(patientA, "Patient", mrn, 1, digest1), entry(patientA, "Observation", mrn+"-1", 1, digest1),
		dirEntry("Practitioner", mrn+"-dr", 1, digest1))
	mustOK(t, err)
	_, err = register(t, providers, hospital, entry(patientB, "Patient", mrn+"-local", 1, digest1))
	mustOK(t, err)
	r := newRecords(testConfig)
	mustOK(t, do(providers, hospital, r, func(ctx contractapi.TransactionContextInterface) (*PatientLink, error) {
		return r.LinkPatient(ctx, patientB, patientA)
	}))
	mustOK(t, registerIdentity(providers, hospital, patientA, patient))
	mustOK(t, confirmIdentity(providers, patient, patientA))
	g := grant(mrn+"-consent", "ClinicMSP", []string{"Observation"}, "TREAT", "2026-03-01T00:00:00Z", "")
	g.DocumentDigest = ""
	_, err = doGrant(t, providers, patient, g)
	mustOK(t, err)
	_, err = access(t, providers, hospital, accessReq(patientA, "ClinicMSP", "Observation/"+ref("Observation/"+mrn+"-1"), "TREAT"))
	mustOK(t, err)
	_, err = access(t, providers, hospital, accessReq(patientA, "ClinicMSP", Everything, "TREAT"))
	mustOK(t, err)
	_, err = doRevoke(providers, patient, mrn+"-consent", "")
	mustOK(t, err)

	claims := newWorld("claims")
	_, err = submit(t, claims, hospital, submission(mrn+"-claim"), detail(mrn+"-claim"))
	mustOK(t, err)
	_, err = adjudicate(t, claims, insurer, mrn+"-claim", approveAll(0))
	mustOK(t, err)

	for _, w := range []*world{providers, claims} {
		for k, v := range w.state {
			if strings.Contains(k, mrn) || strings.Contains(string(v), mrn) {
				t.Fatalf("%s: a client id reached public state under %q: %s", w.channel, k, v)
			}
		}
		for _, c := range w.calls {
			if !c.committed {
				t.Fatalf("%s: call %s failed", w.channel, c.txID)
			}
			for _, e := range c.events {
				if strings.Contains(string(e.Payload), mrn) {
					t.Fatalf("%s: a client id reached event %s: %s", w.channel, e.Name, e.Payload)
				}
			}
		}
	}
}
