package contracts

import (
	"encoding/json"
	"fmt"
	"sort"
)

// Org kinds, as the consortium definition names them.
const (
	KindProvider     = "provider"
	KindInsurer      = "insurer"
	KindManufacturer = "manufacturer"
)

// Config is the consortium knowledge the contracts need: what kind of member each MSP is, and which contracts
// serve on which channel. The network tooling passes it to the chaincode server (CARELEDGER_CHAINCODE_CONFIG) and
// folds it into the chaincode version, so changing it is a chaincode upgrade that the member orgs approve.
type Config struct {
	OrgKinds map[string]string   `json:"orgKinds"`
	Channels map[string][]string `json:"channels"` // channel -> contract names
}

// ParseConfig reads and checks the JSON form of Config.
func ParseConfig(raw []byte) (Config, error) {
	var cfg Config
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return cfg, fmt.Errorf("chaincode config: %w", err)
	}
	for msp, kind := range cfg.OrgKinds {
		switch kind {
		case KindProvider, KindInsurer, KindManufacturer:
		default:
			return cfg, fmt.Errorf("chaincode config: %s has unknown kind %q", msp, kind)
		}
	}
	return cfg, nil
}

func (c Config) kindOf(msp string) string { return c.OrgKinds[msp] }

// servesOn reports whether the named contract may run on the channel.
func (c Config) servesOn(contract, channel string) bool {
	for _, name := range c.Channels[channel] {
		if name == contract {
			return true
		}
	}
	return false
}

// mspsOfKind lists the MSP ids of one kind, sorted, so that callers iterate deterministically.
func (c Config) mspsOfKind(kind string) []string {
	var out []string
	for msp, k := range c.OrgKinds {
		if k == kind {
			out = append(out, msp)
		}
	}
	sort.Strings(out)
	return out
}
