package contracts

import (
	"strings"
	"testing"
)

func TestParseConfig(t *testing.T) {
	kinds := `"orgKinds":{"HospitalMSP":"provider","InsurerMSP":"insurer","PharmaMSP":"manufacturer"}`
	channels := `"channels":{"providers":["Records","Consent","Audit","Trials"],"claims":["Claims"],"pharma":["Supply"]}`
	cases := []struct {
		name, raw, err string
	}{
		{"with members", `{` + kinds + `,` + channels + `,"members":{"pharma":["PharmaMSP","HospitalMSP"]}}`, ""},
		{"without members (a config written before them)", `{` + kinds + `,` + channels + `}`, ""},
		{"member not in orgKinds", `{` + kinds + `,` + channels + `,"members":{"pharma":["PharmaMSP","ClinicMSP"]}}`, `member "ClinicMSP" of channel pharma is not in orgKinds`},
		{"member listed twice", `{` + kinds + `,` + channels + `,"members":{"pharma":["PharmaMSP","PharmaMSP"]}}`, "listed twice"},
		{"bad channel in members", `{` + kinds + `,` + channels + `,"members":{"Pharma Channel":["PharmaMSP"]}}`, "not a channel name"},
		{"unknown kind", `{"orgKinds":{"HospitalMSP":"hospital"},` + channels + `}`, "unknown kind"},
		{"bad MSP id", `{"orgKinds":{"Hospital":"provider"},` + channels + `}`, "not an MSP id"},
		{"unknown contract", `{` + kinds + `,"channels":{"claims":["Claim"]}}`, `unknown contract "Claim"`},
		{"not JSON", `{`, "chaincode config"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := ParseConfig([]byte(tc.raw))
			if tc.err == "" {
				mustOK(t, err)
				if cfg.kindOf("PharmaMSP") != KindManufacturer || !cfg.servesOn("Supply", "pharma") {
					t.Fatalf("config %+v", cfg)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("want error containing %q, got %v", tc.err, err)
			}
		})
	}
	cfg, err := ParseConfig([]byte(`{` + kinds + `,` + channels + `,"members":{"pharma":["PharmaMSP","HospitalMSP"]}}`))
	mustOK(t, err)
	for _, tc := range []struct {
		channel, msp  string
		member, known bool
	}{
		{"pharma", "HospitalMSP", true, true},
		{"pharma", "InsurerMSP", false, true},
		{"claims", "InsurerMSP", false, false},
	} {
		if m, k := cfg.isMember(tc.channel, tc.msp); m != tc.member || k != tc.known {
			t.Errorf("isMember(%s, %s) = %v, %v", tc.channel, tc.msp, m, k)
		}
	}
}
