// Command gogateway drives the same small write as bench/gateway_client.py through the official Fabric Gateway
// client for Go, so both clients are measured against one network in one run. It prints one JSON line:
// {"committed":N,"failed":N,"seconds":S,"latencies_ms":[...]}.
package main

import (
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"crypto/tls"
	"github.com/hyperledger/fabric-gateway/pkg/client"
	"github.com/hyperledger/fabric-gateway/pkg/hash"
	"github.com/hyperledger/fabric-gateway/pkg/identity"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

func main() {
	peer := flag.String("peer", "", "peer gateway address host:port")
	tlsCA := flag.String("tls-ca", "", "PEM of the CA that signed the peer's TLS certificate")
	clientCert := flag.String("client-cert", "", "TLS client certificate (PEM)")
	clientKey := flag.String("client-key", "", "TLS client key (PEM)")
	mspDir := flag.String("msp", "", "MSP folder of the signing user (signcerts/, keystore/)")
	mspID := flag.String("msp-id", "", "MSP id")
	channel := flag.String("channel", "claims", "channel")
	chaincode := flag.String("chaincode", "careledger", "chaincode name")
	prefix := flag.String("prefix", "go", "key prefix")
	count := flag.Int("count", 100, "transactions to submit")
	concurrency := flag.Int("concurrency", 1, "transactions in flight")
	flag.Parse()

	conn, err := dial(*peer, *tlsCA, *clientCert, *clientKey)
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	id, sign, err := loadMSP(*mspDir, *mspID)
	if err != nil {
		log.Fatal(err)
	}
	gw, err := client.Connect(id, client.WithSign(sign), client.WithHash(hash.SHA256), client.WithClientConnection(conn),
		client.WithEndorseTimeout(30*time.Second), client.WithCommitStatusTimeout(60*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	defer gw.Close()
	contract := gw.GetNetwork(*channel).GetContract(*chaincode)

	latencies := make([]float64, *count)
	failed := make([]bool, *count)
	next := make(chan int)
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < *concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				t0 := time.Now()
				_, err := contract.SubmitTransaction("Probe:Write", fmt.Sprintf("%s-%d", *prefix, i), "v")
				latencies[i] = float64(time.Since(t0).Microseconds()) / 1000
				failed[i] = err != nil
			}
		}()
	}
	for i := 0; i < *count; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	nFailed := 0
	for _, f := range failed {
		if f {
			nFailed++
		}
	}
	out, _ := json.Marshal(map[string]any{
		"committed": *count - nFailed, "failed": nFailed, "seconds": elapsed, "latencies_ms": latencies,
		"peak_rss_kib": peakRSS(),
	})
	fmt.Println(string(out))
}

// peakRSS is this process's resident-memory high-water mark (VmHWM), read from /proc.
func peakRSS() int {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			var kib int
			fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(line, "VmHWM:")), "%d", &kib)
			return kib
		}
	}
	return 0
}

func dial(address, caFile, certFile, keyFile string) (*grpc.ClientConn, error) {
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("no certificate in %s", caFile)
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	creds := credentials.NewTLS(&tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12})
	return grpc.NewClient(address, grpc.WithTransportCredentials(creds))
}

func loadMSP(dir, mspID string) (*identity.X509Identity, identity.Sign, error) {
	certs, _ := filepath.Glob(filepath.Join(dir, "signcerts", "*.pem"))
	keys, _ := filepath.Glob(filepath.Join(dir, "keystore", "*"))
	if len(certs) != 1 || len(keys) != 1 {
		return nil, nil, fmt.Errorf("%s: want one certificate and one key", dir)
	}
	certPEM, err := os.ReadFile(certs[0])
	if err != nil {
		return nil, nil, err
	}
	cert, err := identity.CertificateFromPEM(certPEM)
	if err != nil {
		return nil, nil, err
	}
	id, err := identity.NewX509Identity(mspID, cert)
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err := os.ReadFile(keys[0])
	if err != nil {
		return nil, nil, err
	}
	key, err := identity.PrivateKeyFromPEM(keyPEM)
	if err != nil {
		return nil, nil, err
	}
	sign, err := identity.NewPrivateKeySign(key)
	return id, sign, err
}
