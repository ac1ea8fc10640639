// Command careledger-chaincode serves CareLedger's contracts as a chaincode-as-a-service gRPC server.
//
// Peers dial it at the address in the package's connection.json. One process serves every peer on every channel.
// Configuration (set by the network tooling):
//
//	CHAINCODE_ID              the package id; must equal what the peers installed
//	CHAINCODE_SERVER_ADDRESS  host:port to listen on
//	CHAINCODE_TLS_CERT, CHAINCODE_TLS_KEY   server certificate and key (PEM files)
//	CHAINCODE_TLS_CLIENT_CA   CA that signs the peers' client certificate; makes TLS mutual
//	CARELEDGER_CHAINCODE_CONFIG  JSON: each member MSP's kind, each channel's contracts and members (contracts.Config)
package main

import (
	"fmt"
	"log"
	"os"

	"careledger/chaincode/contracts"

	"github.com/hyperledger/fabric-chaincode-go/v2/shim"
	"github.com/hyperledger/fabric-contract-api-go/v2/contractapi"
)

func main() {
	if err := run(); err != nil {
		log.Fatalf("careledger-chaincode: %v", err)
	}
}

func run() error {
	cfg, err := contracts.ParseConfig([]byte(mustEnv("CARELEDGER_CHAINCODE_CONFIG")))
	if err != nil {
		return err
	}
	cc, err := contractapi.NewChaincode(contracts.All(cfg)...)
	if err != nil {
		return fmt.Errorf("building chaincode: %w", err)
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
