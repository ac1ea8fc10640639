// Command careledger-chaincode serves CareLedger's contracts as a chaincode-as-a-service gRPC server.
//
// Peers dial it at the address in the package's connection.json. Each member org runs its own server for its own
// peer (one process serves every channel). Configuration (set by the network tooling):
//
//	CHAINCODE_ID              the package id; must equal what the peers installed
//	CHAINCODE_SERVER_ADDRESS  host:port to listen on
//	CHAINCODE_TLS_CERT, CHAINCODE_TLS_KEY   server certificate and key (PEM files)
//	CHAINCODE_TLS_CLIENT_CA   CA that signs the peers' client certificate; makes TLS mutual
//	CARELEDGER_CHAINCODE_CONFIG_FILE  a file holding the JSON config (contracts.Config): each member MSP's kind, each
//	                          channel's contracts and members. Read at start and again on SIGHUP, so membership
//	                          changes need no restart; after each load the server writes <file>.loaded holding
//	                          the SHA-256 (hex) of the content it serves.
//	CARELEDGER_CHAINCODE_CONFIG  the JSON config itself, when there is no file (never reloaded)
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"careledger/chaincode/contracts"

	"github.com/hyperledger/fabric-chaincode-go/v2/shim"
	"github.com/hyperledger/fabric-contract-api-go/v2/contractapi"
	"github.com/hyperledger/fabric-protos-go-apiv2/peer"
)

func main() {
	if err := run(); err != nil {
		log.Fatalf("careledger-chaincode: %v", err)
	}
}

// reloadable is the chaincode the server serves: the contracts built from the current config, swapped whole when
// the config is reloaded. A transaction runs entirely on the contracts it started with.
type reloadable struct {
	mu sync.RWMutex
	cc *contractapi.ContractChaincode
}

func (r *reloadable) current() *contractapi.ContractChaincode {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.cc
}

func (r *reloadable) Init(stub shim.ChaincodeStubInterface) *peer.Response {
	return r.current().Init(stub)
}

func (r *reloadable) Invoke(stub shim.ChaincodeStubInterface) *peer.Response {
	return r.current().Invoke(stub)
}

// load builds the contracts from the config's JSON.
func (r *reloadable) load(raw []byte) error {
	cfg, err := contracts.ParseConfig(raw)
	if err != nil {
		return err
	}
	cc, err := contracts.Served(cfg)
	if err != nil {
		return fmt.Errorf("building chaincode: %w", err)
	}
	r.mu.Lock()
	r.cc = cc
	r.mu.Unlock()
	return nil
}

// loadFile loads the config file and records what it loaded in <file>.loaded.
func (r *reloadable) loadFile(path string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := r.load(raw); err != nil {
		return err
	}
	sum := sha256.Sum256(raw)
	return os.WriteFile(path+".loaded", []byte(hex.EncodeToString(sum[:])+"\n"), 0o600)
}

func run() error {
	cc := &reloadable{}
	if path := os.Getenv("CARELEDGER_CHAINCODE_CONFIG_FILE"); path != "" {
		if err := cc.loadFile(path); err != nil {
			return err
		}
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		go func() {
			for range hup {
				if err := cc.loadFile(path); err != nil {
					log.Printf("config not reloaded, still serving the previous one: %v", err)
					continue
				}
				log.Printf("config reloaded from %s", path)
			}
		}()
	} else if err := cc.load([]byte(mustEnv("CARELEDGER_CHAINCODE_CONFIG"))); err != nil {
		return err
	}
	tlsProps, err := tlsFromEnv()
	if err != nil {
		return err
	}
	server := &shim.ChaincodeServer{
		CCID:     mustEnv("CHAINCODE_ID"),
		Address:  mustEnv("CHAINCODE_SERVER_ADDRESS"),
		CC:       cc,
		TLSProps: tlsProps,
	}
	log.Printf("serving %s on %s (tls=%v)", server.CCID, server.Address, !tlsProps.Disabled)
	return server.Start()
}

func tlsFromEnv() (shim.TLSProperties, error) {
	certFile := os.Getenv("CHAINCODE_TLS_CERT")
	if certFile == "" {
		return shim.TLSProperties{Disabled: true}, nil
	}
	var props shim.TLSProperties
	var err error
	if props.Cert, err = os.ReadFile(certFile); err != nil {
		return props, err
	}
	if props.Key, err = os.ReadFile(mustEnv("CHAINCODE_TLS_KEY")); err != nil {
		return props, err
	}
	if ca := os.Getenv("CHAINCODE_TLS_CLIENT_CA"); ca != "" {
		if props.ClientCACerts, err = os.ReadFile(ca); err != nil {
			return props, err
		}
	}
	return props, nil
}

func mustEnv(name string) string {
	v := os.Getenv(name)
	if v == "" {
		log.Fatalf("careledger-chaincode: %s is not set", name)
	}
	return v
}
