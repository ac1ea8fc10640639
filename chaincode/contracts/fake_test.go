package contracts

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hyperledger/fabric-chaincode-go/v2/pkg/cid"
	"github.com/hyperledger/fabric-chaincode-go/v2/shim"
	"github.com/hyperledger/fabric-contract-api-go/v2/contractapi"
	"github.com/hyperledger/fabric-protos-go-apiv2/ledger/queryresult"
	"github.com/hyperledger/fabric-protos-go-apiv2/peer"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// world is an in-memory channel ledger for contract unit tests. Like Fabric, a transaction reads committed state
// only (no read-your-writes) and its writes and events take effect only when it succeeds. Every call's write set is
// kept in calls, committed or not, so that a test can see what a refused call tried to write (it must be nothing).
type world struct {
	channel string
	now     time.Time
	state   map[string][]byte
	private map[string]map[string][]byte // collection -> key -> value
	purged  []string                     // "collection/key" of purged private keys
	events  []fakeEvent                  // events of committed transactions
	calls   []*fakeStub                  // every call, committed or not, in order
	txs     int
	served  bool // calls through the contract API go to the chaincode as served (Served), not the checking one
}

type fakeEvent struct {
	Name    string
	Payload []byte
}

var testConfig = Config{
	OrgKinds: map[string]string{
		"HospitalMSP": KindProvider, "ClinicMSP": KindProvider, "InsurerMSP": KindInsurer, "PharmaMSP": KindManufacturer,
		"Insurer2MSP": KindInsurer, "Pharma2MSP": KindManufacturer,
	},
	Channels: map[string][]string{
		"providers": {"Records", "Consent", "Audit", "Trials"},
		"claims":    {"Claims"},
		"pharma":    {"Supply"},
	},
	Members: map[string][]string{
		"providers": {"HospitalMSP", "ClinicMSP"},
		"claims":    {"HospitalMSP", "ClinicMSP", "InsurerMSP", "Insurer2MSP"},
		"pharma":    {"PharmaMSP", "HospitalMSP", "ClinicMSP", "Pharma2MSP"},
	},
}

func newWorld(channel string) *world {
	return &world{
		channel: channel,
		now:     time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC),
		state:   map[string][]byte{},
		private: map[string]map[string][]byte{},
	}
}

// actor is a caller: an org, a role from the certificate's OU, and the certificate itself.
type actor struct {
	msp  string
	cert *x509.Certificate
}

var testKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)

func newActor(t *testing.T, msp, role, name string) actor {
	t.Helper()
	return newActorOUs(t, msp, name, role)
}

// newActorOUs is an actor whose certificate's subject carries exactly these OUs, in this order.
func newActorOUs(t *testing.T, msp, name string, ous ...string) actor {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name, OrganizationalUnit: ous},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &testKey.PublicKey, testKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return actor{msp: msp, cert: cert}
}

func client(t *testing.T, msp string) actor { return newActor(t, msp, "client", "User1@"+msp) }

func admin(t *testing.T, msp string) actor { return newActor(t, msp, "admin", "Admin@"+msp) }

func peerOf(t *testing.T, msp string) actor { return newActor(t, msp, "peer", "peer0."+msp) }

// patientCert is a patient's own certificate as the org's CA issues it: a client marked with OU patient.
func patientCert(t *testing.T, msp, name string) actor {
	return newActorOUs(t, msp, name, "client", PatientOU)
}

func (a actor) fingerprint() string {
	sum := sha256.Sum256(a.cert.Raw)
	return hex.EncodeToString(sum[:])
}

func (a actor) pem() string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.cert.Raw}))
}

// call runs one transaction of a contract as the actor, through the contract's BeforeTransaction hook like the
// contract API does, and commits its writes and events if it succeeds.
func call[T any](w *world, a actor, c contractapi.ContractInterface, transient map[string][]byte,
	fn func(contractapi.TransactionContextInterface) (T, error)) (T, error) {
	w.txs++
	stub := &fakeStub{w: w, txID: fmt.Sprintf("tx%d", w.txs), transient: transient,
		writes: map[string][]byte{}, pwrites: map[string]map[string][]byte{}}
	w.calls = append(w.calls, stub)
	ctx := &contractapi.TransactionContext{}
	ctx.SetStub(stub)
	ctx.SetClientIdentity(fakeIdentity{msp: a.msp, cert: a.cert})
	var zero T
	if hook, ok := c.GetBeforeTransaction().(func(contractapi.TransactionContextInterface) error); ok {
		if err := hook(ctx); err != nil {
			return zero, err
		}
	}
	out, err := fn(ctx)
	if err != nil {
		return out, err
	}
	stub.commit()
	stub.committed = true
	return out, nil
}

// fakeStub is one transaction's view of the world. It embeds the stub interface so that calling a method the fake
// does not implement panics loudly instead of silently doing nothing.
type fakeStub struct {
	shim.ChaincodeStubInterface
	w         *world
	txID      string
	transient map[string][]byte
	writes    map[string][]byte            // nil value: delete
	pwrites   map[string]map[string][]byte // collection -> key -> value
	purges    []string
	events    []fakeEvent
	committed bool
	fn        string   // through the contract API (invoke): "Contract:Function"
	args      []string // and its arguments
	creator   []byte   // serialized identity of the caller
}

func (s *fakeStub) GetFunctionAndParameters() (string, []string) { return s.fn, s.args }
func (s *fakeStub) GetCreator() ([]byte, error)                  { return s.creator, nil }

// wrote says what the call tried to write (state, private data, purges, events), or "" when nothing.
func (s *fakeStub) wrote() string {
	var parts []string
	for k := range s.writes {
		parts = append(parts, fmt.Sprintf("state %q", k))
	}
	for coll, kvs := range s.pwrites {
		for k := range kvs {
			parts = append(parts, fmt.Sprintf("private %s %q", coll, k))
		}
	}
	for _, p := range s.purges {
		parts = append(parts, "purge "+p)
	}
	for _, e := range s.events {
		parts = append(parts, "event "+e.Name)
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

func (s *fakeStub) commit() {
	for k, v := range s.writes {
		if v == nil {
			delete(s.w.state, k)
		} else {
			s.w.state[k] = v
		}
	}
	for coll, kvs := range s.pwrites {
		if s.w.private[coll] == nil {
			s.w.private[coll] = map[string][]byte{}
		}
		for k, v := range kvs {
			s.w.private[coll][k] = v
		}
	}
	for _, p := range s.purges {
		coll, k, _ := strings.Cut(p, "/")
		delete(s.w.private[coll], k)
		s.w.purged = append(s.w.purged, p)
	}
	s.w.events = append(s.w.events, s.events...)
}

func (s *fakeStub) GetTxID() string      { return s.txID }
func (s *fakeStub) GetChannelID() string { return s.w.channel }

func (s *fakeStub) GetTxTimestamp() (*timestamppb.Timestamp, error) {
	return timestamppb.New(s.w.now), nil
}

func (s *fakeStub) GetTransient() (map[string][]byte, error) { return s.transient, nil }

func (s *fakeStub) GetState(key string) ([]byte, error) { return s.w.state[key], nil }

func (s *fakeStub) GetMultipleStates(keys ...string) ([][]byte, error) {
	out := make([][]byte, len(keys))
	for i, k := range keys {
		out[i] = s.w.state[k]
	}
	return out, nil
}

// Writes are buffered until commit anyway; a write batch changes nothing a contract can observe.
func (s *fakeStub) StartWriteBatch()        {}
func (s *fakeStub) FinishWriteBatch() error { return nil }

func (s *fakeStub) PutState(key string, value []byte) error {
	if value == nil {
		value = []byte{}
	}
	s.writes[key] = append([]byte(nil), value...)
	return nil
}

func (s *fakeStub) DelState(key string) error {
	s.writes[key] = nil
	return nil
}

func (s *fakeStub) SetEvent(name string, payload []byte) error {
	// Fabric keeps one event per transaction: the last one set.
	s.events = []fakeEvent{{name, append([]byte(nil), payload...)}}
	return nil
}

func (s *fakeStub) GetPrivateData(collection, key string) ([]byte, error) {
	return s.w.private[collection][key], nil
}

func (s *fakeStub) PutPrivateData(collection, key string, value []byte) error {
	if s.pwrites[collection] == nil {
		s.pwrites[collection] = map[string][]byte{}
	}
	s.pwrites[collection][key] = append([]byte(nil), value...)
	return nil
}

func (s *fakeStub) PurgePrivateData(collection, key string) error {
	s.purges = append(s.purges, collection+"/"+key)
	return nil
}

func (s *fakeStub) CreateCompositeKey(objectType string, attributes []string) (string, error) {
	return shim.CreateCompositeKey(objectType, attributes)
}

func (s *fakeStub) SplitCompositeKey(key string) (string, []string, error) {
	return (&shim.ChaincodeStub{}).SplitCompositeKey(key)
}

func (s *fakeStub) sortedKeys(match func(string) bool) []string {
	var keys []string
	for k := range s.w.state {
		if match(k) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

func (s *fakeStub) iterator(keys []string) *fakeIterator {
	it := &fakeIterator{}
	for _, k := range keys {
		it.kvs = append(it.kvs, &queryresult.KV{Key: k, Value: s.w.state[k]})
	}
	return it
}

func (s *fakeStub) GetStateByPartialCompositeKey(objectType string, keys []string) (shim.StateQueryIteratorInterface, error) {
	prefix, err := shim.CreateCompositeKey(objectType, keys)
	if err != nil {
		return nil, err
	}
	return s.iterator(s.sortedKeys(func(k string) bool { return strings.HasPrefix(k, prefix) })), nil
}

// page cuts a sorted key list at the bookmark (the first key of the page) and the page size, like the peer does.
func page(keys []string, pageSize int32, bookmark string) ([]string, *peer.QueryResponseMetadata) {
	start := 0
	if bookmark != "" {
		start = sort.SearchStrings(keys, bookmark)
	}
	keys = keys[start:]
	next := ""
	if int32(len(keys)) > pageSize {
		next = keys[pageSize]
		keys = keys[:pageSize]
	}
	return keys, &peer.QueryResponseMetadata{FetchedRecordsCount: int32(len(keys)), Bookmark: next}
}

func (s *fakeStub) GetStateByPartialCompositeKeyWithPagination(objectType string, keys []string, pageSize int32, bookmark string) (shim.StateQueryIteratorInterface, *peer.QueryResponseMetadata, error) {
	prefix, err := shim.CreateCompositeKey(objectType, keys)
	if err != nil {
		return nil, nil, err
	}
	all := s.sortedKeys(func(k string) bool { return strings.HasPrefix(k, prefix) })
	got, meta := page(all, pageSize, bookmark)
	return s.iterator(got), meta, nil
}

func (s *fakeStub) GetStateByRangeWithPagination(startKey, endKey string, pageSize int32, bookmark string) (shim.StateQueryIteratorInterface, *peer.QueryResponseMetadata, error) {
	all := s.sortedKeys(func(k string) bool { return !strings.HasPrefix(k, "\x00") && k >= startKey && k < endKey })
	got, meta := page(all, pageSize, bookmark)
	return s.iterator(got), meta, nil
}

type fakeIterator struct {
	kvs []*queryresult.KV
	i   int
}

func (it *fakeIterator) HasNext() bool { return it.i < len(it.kvs) }
func (it *fakeIterator) Close() error  { return nil }
func (it *fakeIterator) Next() (*queryresult.KV, error) {
	it.i++
	return it.kvs[it.i-1], nil
}

// fakeIdentity is the caller as the contract sees it through cid.ClientIdentity.
type fakeIdentity struct {
	cid.ClientIdentity
	msp  string
	cert *x509.Certificate
}

func (f fakeIdentity) GetMSPID() (string, error)                      { return f.msp, nil }
func (f fakeIdentity) GetX509Certificate() (*x509.Certificate, error) { return f.cert, nil }

// --- helpers for assertions --------------------------------------------------------------------------------------

func wantErr(t *testing.T, err error, code, contains string) {
	t.Helper()
	if err == nil {
		t.Fatalf("want %s error containing %q, got success", code, contains)
	}
	var ce *ContractError
	if !asContractError(err, &ce) || ce.Code != code || !strings.Contains(ce.Message, contains) {
		t.Fatalf("want %s error containing %q, got %v", code, contains, err)
	}
}

func mustOK(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("unexpected error: %v", err)
	}
}

// wroteNothing fails the test unless the world's last call wrote nothing at all: no state, no private data, no
// purge, no event, whether or not it was committed. After a refusal it shows that the refused call was refused
// before it changed anything, which the committed state alone cannot show (refused calls are never committed).
func wroteNothing(t *testing.T, w *world) {
	t.Helper()
	if len(w.calls) == 0 {
		t.Fatal("no call was made")
	}
	last := w.calls[len(w.calls)-1]
	if got := last.wrote(); got != "" {
		t.Fatalf("call %s (committed=%v) wrote: %s", last.txID, last.committed, got)
	}
}

// refused checks a refusal: the error's code and message, and that the refused call wrote nothing.
func refused(t *testing.T, w *world, err error, code, contains string) {
	t.Helper()
	wantErr(t, err, code, contains)
	wroteNothing(t, w)
}

func lastEvent(t *testing.T, w *world) fakeEvent {
	t.Helper()
	if len(w.events) == 0 {
		t.Fatal("no event was emitted")
	}
	return w.events[len(w.events)-1]
}
