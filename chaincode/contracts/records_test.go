package contracts

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"

	"github.com/hyperledger/fabric-contract-api-go/v2/contractapi"
)

// Test pseudonyms and digests: 64 lower-case hex characters, like the gateway's HMACs.
var (
	patientA = strings.Repeat("a1", 32)
	patientB = strings.Repeat("b2", 32)
	digest1  = strings.Repeat("d1", 32)
	digest2  = strings.Repeat("d2", 32)
)

// ref stands for the opaque key a gateway derives from a client id: the SHA-256 hex of the name, so tests can keep
// readable names. A name that is a key already is returned as it is.
func ref(name string) string {
	if hex64Pattern.MatchString(name) {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	return hex.EncodeToString(sum[:])
}

// entry is a patient's resource version, keyed by ref("Type/id").
func entry(patient, typ, id string, version int, digest string) RecordEntry {
	return RecordEntry{Patient: patient, ResourceType: typ, ResourceKey: ref(typ + "/" + id), Version: version, Digest: digest,
		LastUpdated: "2026-03-01T10:00:00Z", Size: 512}
}

// dirEntry is a directory record version of the registering custodian.
func dirEntry(typ, id string, version int, digest string) RecordEntry {
	e := entry("", typ, id, version, digest)
	e.Directory = true
	return e
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}

func register(t *testing.T, w *world, a actor, entries ...RecordEntry) (int, error) {
	t.Helper()
	r := newRecords(testConfig)
	return call(w, a, r, nil, func(ctx contractapi.TransactionContextInterface) (int, error) {
		return r.Register(ctx, mustJSON(t, entries))
	})
}

func TestRecordsRegisterBundleAtomically(t *testing.T) {
	w := newWorld("providers")
	hospital := client(t, "HospitalMSP")
	n, err := register(t, w, hospital,
		entry(patientA, "Patient", "p1", 1, digest1),
		entry(patientA, "Observation", "o1", 1, digest2),
		entry(patientB, "Patient", "p2", 1, digest1))
	mustOK(t, err)
	if n != 3 {
		t.Fatalf("registered %d, want 3", n)
	}
	ev := lastEvent(t, w)
	if ev.Name != "Records.Registered" || !strings.Contains(string(ev.Payload), `"custodian":"HospitalMSP"`) {
		t.Fatalf("event %s %s", ev.Name, ev.Payload)
	}
	// One bad entry rejects the whole bundle: the good entry before it is not registered either.
	_, err = register(t, w, hospital, entry(patientA, "Observation", "o2", 1, digest1), entry(patientA, "Observation", "o3", 1, "nothex"))
	refused(t, w, err, CodeInvalid, "entries[1].digest")
	// A bundle whose last entry conflicts is refused before its first entry is written.
	_, err = register(t, w, hospital, entry(patientA, "Observation", "o2", 1, digest1), entry(patientA, "Observation", "o1", 3, digest2))
	refused(t, w, err, CodeConflict, "entries[1]")
}

func TestRecordsRegisterRejections(t *testing.T) {
	cases := []struct {
		name    string
		caller  func(t *testing.T) actor
		entries []RecordEntry
		code    string
		msg     string
	}{
		{"insurer may not register", func(t *testing.T) actor { return client(t, "InsurerMSP") },
			[]RecordEntry{entry(patientA, "Patient", "x", 1, digest1)}, CodeForbidden, "only provider orgs"},
		{"peer role may not write", func(t *testing.T) actor { return newActor(t, "HospitalMSP", "peer", "peer0") },
			[]RecordEntry{entry(patientA, "Patient", "x", 1, digest1)}, CodeForbidden, "may not submit"},
		{"empty bundle", nil, []RecordEntry{}, CodeInvalid, "1 to 5000"},
		{"name instead of pseudonym", nil, []RecordEntry{entry("Jane Doe", "Patient", "x", 1, digest1)}, CodeInvalid, "pseudonym"},
		{"bad resource type", nil, []RecordEntry{entry(patientA, "patient", "x", 1, digest1)}, CodeInvalid, "resource type"},
		{"client id instead of a key", nil, []RecordEntry{{Patient: patientA, ResourceType: "Patient", ResourceKey: "MRN-12345", Version: 1, Digest: digest1, LastUpdated: "2026-01-01T00:00:00Z"}}, CodeInvalid, "opaque key"},
		{"upper-case key", nil, []RecordEntry{{Patient: patientA, ResourceType: "Patient", ResourceKey: strings.ToUpper(ref("x")), Version: 1, Digest: digest1, LastUpdated: "2026-01-01T00:00:00Z"}}, CodeInvalid, "opaque key"},
		{"version 0", nil, []RecordEntry{entry(patientA, "Patient", "x", 0, digest1)}, CodeInvalid, "version"},
		{"first version 2", nil, []RecordEntry{entry(patientA, "Patient", "x", 2, digest1)}, CodeConflict, "first version is 1"},
		{"bad time", nil, []RecordEntry{{Patient: patientA, ResourceType: "Patient", ResourceKey: ref("x"), Version: 1, Digest: digest1, LastUpdated: "yesterday"}}, CodeInvalid, "RFC 3339"},
		{"negative size", nil, []RecordEntry{{Patient: patientA, ResourceType: "Patient", ResourceKey: ref("x"), Version: 1, Digest: digest1, LastUpdated: "2026-01-01T00:00:00Z", Size: -1}}, CodeInvalid, "size"},
		{"directory record with a patient", nil, []RecordEntry{func() RecordEntry { e := dirEntry("Organization", "o", 1, digest1); e.Patient = patientA; return e }()}, CodeInvalid, "belongs to no patient"},
		{"directory record of a clinical type", nil, []RecordEntry{dirEntry("Observation", "o", 1, digest1)}, CodeInvalid, "not a directory resource type"},
		{"patient record without a patient", nil, []RecordEntry{entry("", "Organization", "o", 1, digest1)}, CodeInvalid, "pseudonym"},
		{"same resource twice", nil, []RecordEntry{entry(patientA, "Patient", "x", 1, digest1), entry(patientA, "Patient", "x", 2, digest2)}, CodeInvalid, "twice"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld("providers")
			a := client(t, "HospitalMSP")
			if tc.caller != nil {
				a = tc.caller(t)
			}
			_, err := register(t, w, a, tc.entries...)
			refused(t, w, err, tc.code, tc.msg)
		})
	}
	t.Run("unknown field", func(t *testing.T) {
		w := newWorld("providers")
		r := newRecords(testConfig)
		_, err := call(w, client(t, "HospitalMSP"), r, nil, func(ctx contractapi.TransactionContextInterface) (int, error) {
			return r.Register(ctx, `[{"patient":"`+patientA+`","name":"Jane"}]`)
		})
		wantErr(t, err, CodeInvalid, "unknown field")
	})
	t.Run("wrong channel", func(t *testing.T) {
		w := newWorld("claims")
		_, err := register(t, w, client(t, "HospitalMSP"), entry(patientA, "Patient", "x", 1, digest1))
		wantErr(t, err, CodeForbidden, "does not serve channel")
	})
}

func TestRecordsVersionsAndCustody(t *testing.T) {
	w := newWorld("providers")
	hospital, clinic := client(t, "HospitalMSP"), client(t, "ClinicMSP")
	_, err := register(t, w, hospital, entry(patientA, "Observation", "o1", 1, digest1))
	mustOK(t, err)

	n, err := register(t, w, hospital, entry(patientA, "Observation", "o1", 1, digest1))
	mustOK(t, err)
	if n != 0 {
		t.Fatalf("a retried registration wrote %d entries", n)
	}
	_, err = register(t, w, hospital, entry(patientA, "Observation", "o1", 1, digest2))
	wantErr(t, err, CodeConflict, "version 1 is taken")
	_, err = register(t, w, hospital, entry(patientA, "Observation", "o1", 3, digest2))
	wantErr(t, err, CodeConflict, "the next is 2")
	_, err = register(t, w, clinic, entry(patientA, "Observation", "o1", 2, digest2))
	wantErr(t, err, CodeForbidden, "held by HospitalMSP")
	_, err = register(t, w, hospital, entry(patientB, "Observation", "o1", 2, digest2))
	wantErr(t, err, CodeInvalid, "another patient")
	_, err = register(t, w, hospital, entry(patientA, "Observation", "o1", 2, digest2))
	mustOK(t, err)
	_, err = register(t, w, clinic, entry(patientA, "Condition", "c1", 1, digest1))
	mustOK(t, err)

	r := newRecords(testConfig)
	hist, err := call(w, clinic, r, nil, func(ctx contractapi.TransactionContextInterface) ([]Record, error) {
		return r.History(ctx, ref("Observation/o1"))
	})
	mustOK(t, err)
	if len(hist) != 2 || hist[0].Version != 1 || hist[1].Version != 2 || hist[1].Digest != digest2 {
		t.Fatalf("history %+v", hist)
	}
	latest, err := call(w, clinic, r, nil, func(ctx contractapi.TransactionContextInterface) (*Record, error) {
		return r.Get(ctx, ref("Observation/o1"), 0)
	})
	mustOK(t, err)
	if latest.Version != 2 || latest.Custodian != "HospitalMSP" {
		t.Fatalf("latest %+v", latest)
	}
	custodians, err := call(w, clinic, r, nil, func(ctx contractapi.TransactionContextInterface) ([]Custodianship, error) {
		return r.Custodians(ctx, patientA)
	})
	mustOK(t, err)
	if len(custodians) != 2 || custodians[0].Custodian != "ClinicMSP" || custodians[1].Custodian != "HospitalMSP" {
		t.Fatalf("custodians %+v", custodians)
	}
	_, err = call(w, clinic, r, nil, func(ctx contractapi.TransactionContextInterface) (*Record, error) {
		return r.Get(ctx, ref("Observation/missing"), 0)
	})
	wantErr(t, err, CodeNotFound, "not registered")
}

func TestRecordsPatientIndexPages(t *testing.T) {
	w := newWorld("providers")
	hospital := client(t, "HospitalMSP")
	var entries []RecordEntry
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		entries = append(entries, entry(patientA, "Observation", id, 1, digest1))
	}
	entries = append(entries, entry(patientB, "Observation", "z", 1, digest1))
	_, err := register(t, w, hospital, entries...)
	mustOK(t, err)
	r := newRecords(testConfig)
	got := map[string]bool{}
	bookmark := ""
	for pages := 0; pages < 5; pages++ {
		p, err := call(w, hospital, r, nil, func(ctx contractapi.TransactionContextInterface) (*RecordPage, error) {
			return r.PatientIndex(ctx, patientA, 2, bookmark)
		})
		mustOK(t, err)
		if len(p.Records) > 2 {
			t.Fatalf("a page of %d records", len(p.Records))
		}
		for _, rec := range p.Records {
			got[rec.ResourceKey] = true
		}
		if bookmark = p.Bookmark; bookmark == "" {
			break
		}
	}
	if len(got) != 5 {
		t.Fatalf("paged index %v", got)
	}
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		if !got[ref("Observation/"+id)] {
			t.Fatalf("paged index lacks %s", id)
		}
	}
	_, err = call(w, hospital, r, nil, func(ctx contractapi.TransactionContextInterface) (*RecordPage, error) {
		return r.PatientIndex(ctx, patientA, 0, "")
	})
	wantErr(t, err, CodeInvalid, "pageSize")
}

func TestRecordsErasure(t *testing.T) {
	w := newWorld("providers")
	hospital, clinic := client(t, "HospitalMSP"), client(t, "ClinicMSP")
	_, err := register(t, w, hospital, entry(patientA, "Patient", "p1", 1, digest1))
	mustOK(t, err)
	r := newRecords(testConfig)
	erase := func(a actor) error {
		_, err := call(w, a, r, nil, func(ctx contractapi.TransactionContextInterface) (*Erasure, error) {
			return r.RecordErasure(ctx, patientA)
		})
		return err
	}
	wantErr(t, erase(clinic), CodeForbidden, "holds no records")
	mustOK(t, erase(hospital))
	if ev := lastEvent(t, w); ev.Name != "Records.Erased" {
		t.Fatalf("event %s", ev.Name)
	}
}

// TestRecordsAttacks: HospitalMSP holds patientA's Observation o1 (version 1), and patientA's own certificate (issued
// by the hospital's CA) is confirmed as the patient's identity at the hospital.
func TestRecordsAttacks(t *testing.T) {
	hospital, clinic := client(t, "HospitalMSP"), client(t, "ClinicMSP")
	patient := patientCert(t, "HospitalMSP", "patient-app")
	fixture := func(t *testing.T) *world {
		w := newWorld("providers")
		_, err := register(t, w, hospital, entry(patientA, "Observation", "o1", 1, digest1))
		mustOK(t, err)
		mustOK(t, registerIdentity(w, hospital, patientA, patient))
		mustOK(t, confirmIdentity(w, patient, patientA))
		return w
	}
	r := newRecords(testConfig)
	reg := func(a actor, e RecordEntry) func(t *testing.T, w *world) error {
		return func(t *testing.T, w *world) error { _, err := register(t, w, a, e); return err }
	}
	erase := func(a actor) func(t *testing.T, w *world) error {
		return func(t *testing.T, w *world) error {
			return do(w, a, r, func(ctx contractapi.TransactionContextInterface) (*Erasure, error) {
				return r.RecordErasure(ctx, patientA)
			})
		}
	}
	fresh := entry(patientA, "Observation", "o2", 1, digest1)
	runAttacks(t, fixture, []attack{
		{name: "peer identity registers a bundle", move: reg(peerOf(t, "HospitalMSP"), fresh), code: CodeForbidden, msg: "may not submit"},
		{name: "orderer identity registers a bundle", move: reg(newActor(t, "HospitalMSP", "orderer", "o1"), fresh), code: CodeForbidden, msg: "may not submit"},
		{name: "identity without a role registers a bundle", move: reg(newActor(t, "HospitalMSP", "", "x"), fresh), code: CodeForbidden, msg: "may not submit"},
		{name: "insurer registers records", move: reg(client(t, "InsurerMSP"), fresh), code: CodeForbidden, msg: "only provider orgs"},
		{name: "org outside the consortium registers records", move: reg(client(t, "NowhereMSP"), fresh), code: CodeForbidden, msg: "only provider orgs"},
		{name: "another custodian adds a version to a held resource", move: reg(clinic, entry(patientA, "Observation", "o1", 2, digest2)), code: CodeForbidden, msg: "held by HospitalMSP"},
		{name: "another custodian re-registers a held version with its digest", move: reg(clinic, entry(patientA, "Observation", "o1", 1, digest2)), code: CodeForbidden, msg: "held by HospitalMSP"},
		{name: "custodian moves a resource to another patient", move: reg(hospital, entry(patientB, "Observation", "o1", 2, digest2)), code: CodeInvalid, msg: "another patient"},
		{name: "the patient's certificate registers records in its org's name", move: reg(patient, fresh), code: CodeForbidden, msg: "patient's own identity"},
		{name: "peer identity records an erasure", move: erase(peerOf(t, "HospitalMSP")), code: CodeForbidden, msg: "may not submit"},
		{name: "insurer records an erasure", move: erase(client(t, "InsurerMSP")), code: CodeForbidden, msg: "only provider orgs"},
		{name: "org without the records records an erasure", move: erase(clinic), code: CodeForbidden, msg: "holds no records"},
		{name: "the patient's certificate records an erasure in its org's name", move: erase(patient), code: CodeForbidden, msg: "patient's own identity"},
	})
}

func TestRecordsDirectoryRecords(t *testing.T) {
	w := newWorld("providers")
	hospital, clinic := client(t, "HospitalMSP"), client(t, "ClinicMSP")
	r := newRecords(testConfig)

	// One bundle, one transaction: a patient's encounter with the practitioner and location it references.
	n, err := register(t, w, hospital,
		entry(patientA, "Encounter", "e1", 1, digest1),
		dirEntry("Practitioner", "pr1", 1, digest1),
		dirEntry("Location", "ward-3", 1, digest2))
	mustOK(t, err)
	if n != 3 {
		t.Fatalf("registered %d", n)
	}
	var ev registeredEvent
	mustOK(t, json.Unmarshal(lastEvent(t, w).Payload, &ev))
	if len(ev.Entries) != 3 || !ev.Entries[1].Directory || ev.Entries[1].Patient != "" {
		t.Fatalf("event %+v", ev)
	}

	got, err := call(w, clinic, r, nil, func(ctx contractapi.TransactionContextInterface) (*Record, error) {
		return r.Get(ctx, ref("Practitioner/pr1"), 0)
	})
	mustOK(t, err)
	if !got.Directory || got.Patient != "" || got.Custodian != "HospitalMSP" || got.ResourceType != "Practitioner" {
		t.Fatalf("directory record %+v", got)
	}
	dir, err := call(w, clinic, r, nil, func(ctx contractapi.TransactionContextInterface) (*RecordPage, error) {
		return r.DirectoryIndex(ctx, "HospitalMSP", 10, "")
	})
	mustOK(t, err)
	if len(dir.Records) != 2 {
		t.Fatalf("directory index %+v", dir.Records)
	}
	idx, err := call(w, clinic, r, nil, func(ctx contractapi.TransactionContextInterface) (*RecordPage, error) {
		return r.PatientIndex(ctx, patientA, 10, "")
	})
	mustOK(t, err)
	if len(idx.Records) != 1 || idx.Records[0].ResourceType != "Encounter" {
		t.Fatalf("patient index %+v", idx.Records)
	}

	// Versions: only the registering custodian; a directory record stays one, of its type.
	_, err = register(t, w, clinic, dirEntry("Practitioner", "pr1", 2, digest2))
	refused(t, w, err, CodeForbidden, "held by HospitalMSP")
	_, err = register(t, w, hospital, entry(patientA, "Practitioner", "pr1", 2, digest2))
	refused(t, w, err, CodeInvalid, "between a directory record and a patient's record")
	same := dirEntry("Device", "d1", 1, digest2)
	same.ResourceKey = ref("Encounter/e1")
	_, err = register(t, w, hospital, entry(patientA, "Encounter", "e1", 1, digest1), same)
	refused(t, w, err, CodeInvalid, "twice")
	e := dirEntry("Location", "ward-3", 2, digest2)
	e.ResourceKey = ref("Practitioner/pr1")
	_, err = register(t, w, hospital, e)
	refused(t, w, err, CodeInvalid, "is a Practitioner, not a Location")
	_, err = register(t, w, hospital, dirEntry("Practitioner", "pr1", 2, digest2))
	mustOK(t, err)
	hist, err := call(w, clinic, r, nil, func(ctx contractapi.TransactionContextInterface) ([]Record, error) {
		return r.History(ctx, ref("Practitioner/pr1"))
	})
	mustOK(t, err)
	if len(hist) != 2 || hist[1].Digest != digest2 {
		t.Fatalf("history %+v", hist)
	}

	// A directory-only bundle makes nobody a custodian of anyone.
	w2 := newWorld("providers")
	_, err = register(t, w2, clinic, dirEntry("Organization", "clinic", 1, digest1))
	mustOK(t, err)
	for k := range w2.state {
		if strings.Contains(k, keyCustodian+"\x00") {
			t.Fatalf("a directory record noted a custodianship: %q", k)
		}
	}
}

func TestRecordsPatientLinks(t *testing.T) {
	w := newWorld("providers")
	hospital, clinic := client(t, "HospitalMSP"), client(t, "ClinicMSP")
	local, consortium, other := patientB, patientA, strings.Repeat("c3", 32)
	r := newRecords(testConfig)
	link := func(a actor, l, c string) (*PatientLink, error) {
		return call(w, a, r, nil, func(ctx contractapi.TransactionContextInterface) (*PatientLink, error) {
			return r.LinkPatient(ctx, l, c)
		})
	}
	unlink := func(a actor, l, c string) (*PatientLink, error) {
		return call(w, a, r, nil, func(ctx contractapi.TransactionContextInterface) (*PatientLink, error) {
			return r.UnlinkPatient(ctx, l, c)
		})
	}
	custodians := func() []Custodianship {
		t.Helper()
		cs, err := call(w, clinic, r, nil, func(ctx contractapi.TransactionContextInterface) ([]Custodianship, error) {
			return r.Custodians(ctx, consortium)
		})
		mustOK(t, err)
		return cs
	}
	_, err := register(t, w, hospital, entry(local, "Patient", "p-local", 1, digest1), entry(local, "Observation", "o1", 1, digest1))
	mustOK(t, err)
	_, err = register(t, w, clinic, entry(consortium, "Patient", "p-c", 1, digest1))
	mustOK(t, err)

	_, err = access(t, w, hospital, accessReq(consortium, "ClinicMSP", Everything, "TREAT"))
	refused(t, w, err, CodeForbidden, "holds no records")

	l, err := link(hospital, local, consortium)
	mustOK(t, err)
	if l.Status != "linked" || l.Custodian != "HospitalMSP" || l.Local != local {
		t.Fatalf("link %+v", l)
	}
	if ev := lastEvent(t, w); ev.Name != "Records.PatientLinked" {
		t.Fatalf("event %s", ev.Name)
	}
	_, err = link(hospital, local, consortium) // a retry
	mustOK(t, err)
	wroteNothing(t, w)
	_, err = link(hospital, local, other)
	refused(t, w, err, CodeConflict, "unlink it first")
	_, err = link(hospital, local, local)
	refused(t, w, err, CodeInvalid, "not linked to itself")
	_, err = link(hospital, other, local) // the consortium pseudonym of a new link is itself linked
	refused(t, w, err, CodeForbidden, "registered no records")

	cs := custodians()
	if len(cs) != 2 || cs[0].Custodian != "ClinicMSP" || cs[0].LocalPseudonym != "" ||
		cs[1].Custodian != "HospitalMSP" || cs[1].LocalPseudonym != local {
		t.Fatalf("custodians %+v", cs)
	}
	// Linked, the hospital answers for the consortium pseudonym: it logs accesses and records consents for it.
	e, err := access(t, w, hospital, accessReq(consortium, "ClinicMSP", Everything, "TREAT"))
	mustOK(t, err)
	if e.Decision != "deny" || e.Custodian != "HospitalMSP" {
		t.Fatalf("access %+v", e)
	}
	g := grant("c-linked", "ClinicMSP", []string{"*"}, "TREAT", "2026-03-01T00:00:00Z", "")
	g.Patient = consortium
	_, err = doGrant(t, w, hospital, g)
	mustOK(t, err)
	if e, _ = access(t, w, hospital, accessReq(consortium, "ClinicMSP", Everything, "TREAT")); e.Decision != "permit" {
		t.Fatalf("access after the grant %+v", e)
	}

	_, err = unlink(clinic, local, consortium)
	refused(t, w, err, CodeNotFound, "no link")
	_, err = unlink(hospital, local, other)
	refused(t, w, err, CodeNotFound, "no link")
	l, err = unlink(hospital, local, consortium)
	mustOK(t, err)
	if l.Status != "unlinked" || l.UnlinkedAt == "" {
		t.Fatalf("unlinked %+v", l)
	}
	if cs := custodians(); len(cs) != 1 {
		t.Fatalf("custodians after unlink %+v", cs)
	}
	_, err = access(t, w, hospital, accessReq(consortium, "ClinicMSP", Everything, "TREAT"))
	refused(t, w, err, CodeForbidden, "holds no records")
	links, err := call(w, clinic, r, nil, func(ctx contractapi.TransactionContextInterface) ([]PatientLink, error) {
		return r.Links(ctx, consortium)
	})
	mustOK(t, err)
	if len(links) != 1 || links[0].Status != "unlinked" {
		t.Fatalf("links %+v", links)
	}
	_, err = link(hospital, local, other) // after unlinking, the local pseudonym may be linked anew
	mustOK(t, err)
}

// TestRecordsLinkAttacks: HospitalMSP holds records under its local pseudonym (patientB) of a patient the consortium
// knows as patientA; ClinicMSP holds records under patientA. Local pseudonyms are visible on chain.
func TestRecordsLinkAttacks(t *testing.T) {
	hospital, clinic := client(t, "HospitalMSP"), client(t, "ClinicMSP")
	patient := patientCert(t, "HospitalMSP", "patient-app")
	local, consortium, victim := patientB, patientA, strings.Repeat("c3", 32)
	r := newRecords(testConfig)
	fixture := func(t *testing.T) *world {
		w := newWorld("providers")
		_, err := register(t, w, hospital, entry(local, "Patient", "p-local", 1, digest1))
		mustOK(t, err)
		_, err = register(t, w, hospital, entry(consortium, "Observation", "o-own", 1, digest1))
		mustOK(t, err)
		mustOK(t, registerIdentity(w, hospital, consortium, patient))
		mustOK(t, confirmIdentity(w, patient, consortium))
		_, err = register(t, w, clinic, entry(consortium, "Patient", "p-c", 1, digest1))
		mustOK(t, err)
		return w
	}
	link := func(a actor, l, c string) func(t *testing.T, w *world) error {
		return func(t *testing.T, w *world) error {
			return do(w, a, r, func(ctx contractapi.TransactionContextInterface) (*PatientLink, error) {
				return r.LinkPatient(ctx, l, c)
			})
		}
	}
	unlink := func(a actor, l, c string) func(t *testing.T, w *world) error {
		return func(t *testing.T, w *world) error {
			return do(w, a, r, func(ctx contractapi.TransactionContextInterface) (*PatientLink, error) {
				return r.UnlinkPatient(ctx, l, c)
			})
		}
	}
	hospitalNotLinked := func(t *testing.T, w *world) {
		t.Helper()
		cs, err := call(w, clinic, r, nil, func(ctx contractapi.TransactionContextInterface) ([]Custodianship, error) {
			return r.Custodians(ctx, victim)
		})
		mustOK(t, err)
		for _, c := range cs {
			if c.Custodian == "HospitalMSP" {
				t.Fatalf("the hospital's records were linked to the victim: %+v", cs)
			}
		}
		_, err = access(t, w, hospital, accessReq(victim, "ClinicMSP", Everything, "TREAT"))
		wantErr(t, err, CodeForbidden, "holds no records")
	}
	runAttacks(t, fixture, []attack{
		{name: "an org links another org's local pseudonym", move: link(clinic, local, victim), code: CodeForbidden, msg: "registered no records under this local pseudonym",
			then: hospitalNotLinked},
		{
			name: "an org registers a dummy record under another org's local pseudonym and links it",
			prep: func(t *testing.T, w *world) {
				_, err := register(t, w, clinic, entry(local, "Observation", "dummy", 1, digest2))
				mustOK(t, err)
			},
			move: link(clinic, local, victim),
			then: hospitalNotLinked, // the link covers the clinic's own dummy record only
		},
		{name: "an org unlinks another org's link", prep: func(t *testing.T, w *world) { mustOK(t, link(hospital, local, victim)(t, w)) },
			move: unlink(clinic, local, victim), code: CodeNotFound, msg: "ClinicMSP has no link"},
		{name: "a custodian relinks a linked local pseudonym to another patient", prep: func(t *testing.T, w *world) { mustOK(t, link(hospital, local, consortium)(t, w)) },
			move: link(hospital, local, victim), code: CodeConflict, msg: "unlink it first"},
		{name: "peer identity links", move: link(peerOf(t, "HospitalMSP"), local, victim), code: CodeForbidden, msg: "may not submit"},
		{name: "insurer links", move: link(client(t, "InsurerMSP"), local, victim), code: CodeForbidden, msg: "only provider orgs"},
		{name: "the patient's certificate links in its org's name", move: link(patient, local, victim), code: CodeForbidden, msg: "patient's own identity"},
		{name: "a local pseudonym is linked to a client id", move: link(hospital, local, "MRN-0042"), code: CodeInvalid, msg: "pseudonym"},
	})
}
