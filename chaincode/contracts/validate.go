package contracts

import (
	"encoding/json"
	"regexp"
	"strings"
	"time"
)

var (
	hex64Pattern    = regexp.MustCompile(`^[0-9a-f]{64}$`)
	idPattern       = regexp.MustCompile(`^[A-Za-z0-9\-.]{1,64}$`) // FHIR id
	resourcePattern = regexp.MustCompile(`^[A-Z][A-Za-z]{1,63}$`)  // FHIR resource type name
	mspPattern      = regexp.MustCompile(`^[A-Za-z0-9]{1,60}MSP$`)
	codePattern     = regexp.MustCompile(`^[A-Za-z0-9._\-]{1,32}$`)
	refPattern      = regexp.MustCompile(`^[A-Za-z0-9._:/|\-]{1,128}$`)
)

// pseudonym checks a patient pseudonym: the hex HMAC-SHA-256 the gateway derives from a consortium-wide identifier.
// Anything else (a name, an MRN) is refused, which keeps identifiers from reaching the ledger by mistake.
func pseudonym(field, v string) error {
	if !hex64Pattern.MatchString(v) {
		return invalid("%s must be a patient pseudonym (64 lower-case hex characters)", field)
	}
	return nil
}

// opaqueKey checks an id that names something on chain in place of a client-chosen id (a FHIR id, a claim number):
// the gateway's keyed hash of that id, 64 lower-case hex characters. A client id, which can be a medical record
// number, is refused.
func opaqueKey(field, v string) error {
	if !hex64Pattern.MatchString(v) {
		return invalid("%s must be an opaque key (64 lower-case hex characters), not a client id", field)
	}
	return nil
}

func digestField(field, v string) error {
	if !hex64Pattern.MatchString(v) {
		return invalid("%s must be a SHA-256/HMAC digest (64 lower-case hex characters)", field)
	}
	return nil
}

func matches(p *regexp.Regexp, field, v, what string) error {
	if !p.MatchString(v) {
		return invalid("%s %q is not %s", field, v, what)
	}
	return nil
}

func instant(field, v string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return t, invalid("%s %q is not an RFC 3339 date-time with zone", field, v)
	}
	return t.UTC(), nil
}

func date(field, v string) (time.Time, error) {
	t, err := time.Parse(time.DateOnly, v)
	if err != nil {
		return t, invalid("%s %q is not a date (YYYY-MM-DD)", field, v)
	}
	return t, nil
}

// decode parses a JSON argument strictly: unknown fields are an error, so a misspelled field is never ignored.
func decode(field, raw string, v any) error {
	dec := json.NewDecoder(strings.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return invalid("%s is not valid JSON of the expected shape: %v", field, err)
	}
	if dec.More() {
		return invalid("%s has trailing data after the JSON value", field)
	}
	return nil
}
