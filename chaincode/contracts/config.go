package contracts

import (
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
)

// Org kinds, as the consortium definition names them.
const (
	KindProvider     = "provider"
	KindInsurer      = "insurer"
	KindManufacturer = "manufacturer"
)

// contractNames are the contracts a channel may be assigned (Probe runs everywhere and is never listed).
var contractNames = map[string]bool{
	"Records": true, "Consent": true, "Audit": true, "Trials": true, "Claims": true, "Supply": true,
}

var channelPattern = regexp.MustCompile(`^[a-z][a-z0-9.-]{0,248}$`) // Fabric channel names

// Config is the consortium knowledge the contracts need: what kind of member each MSP is, which contracts serve
// on which channel, and which orgs are members of which channel. The network tooling passes it to the chaincode
// server (CARELEDGER_CHAINCODE_CONFIG) and folds it into the chaincode version, so changing it is a chaincode
// upgrade that the member orgs approve.
type Config struct {
	OrgKinds map[string]string   `json:"orgKinds"`
	Channels map[string][]string `json:"channels"`          // channel -> contract names
	Members  map[string][]string `json:"members,omitempty"` // channel -> member MSP ids
}

// ParseConfig reads and checks the JSON form of Config. `members` may be absent (a config written before it
// existed still parses); the checks that need channel membership then refuse, because membership is unknown.
func ParseConfig(raw []byte) (Config, error) {
	var cfg Config
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return cfg, fmt.Errorf("chaincode config: %w", err)
	}
	for msp, kind := range cfg.OrgKinds {
		if !mspPattern.MatchString(msp) {
			return cfg, fmt.Errorf("chaincode config: %q is not an MSP id", msp)
		}
		switch kind {
		case KindProvider, KindInsurer, KindManufacturer:
		default:
			return cfg, fmt.Errorf("chaincode config: %s has unknown kind %q", msp, kind)
		}
	}
	for channel, names := range cfg.Channels {
		if !channelPattern.MatchString(channel) {
			return cfg, fmt.Errorf("chaincode config: %q is not a channel name", channel)
		}
		for _, name := range names {
			if !contractNames[name] {
				return cfg, fmt.Errorf("chaincode config: channel %s names unknown contract %q", channel, name)
			}
		}
	}
	for channel, msps := range cfg.Members {
		if !channelPattern.MatchString(channel) {
			return cfg, fmt.Errorf("chaincode config: %q is not a channel name", channel)
		}
		seen := map[string]bool{}
		for _, msp := range msps {
			if _, known := cfg.OrgKinds[msp]; !known {
				return cfg, fmt.Errorf("chaincode config: member %q of channel %s is not in orgKinds", msp, channel)
			}
			if seen[msp] {
				return cfg, fmt.Errorf("chaincode config: %s is listed twice as a member of channel %s", msp, channel)
			}
			seen[msp] = true
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

// isMember says whether msp is a member of the channel; known is false when the config lists no members of it, and
// then a check that needs membership must refuse rather than pass.
func (c Config) isMember(channel, msp string) (member, known bool) {
	msps, known := c.Members[channel]
	for _, m := range msps {
		if m == msp {
			return true, true
		}
	}
	return false, known
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
