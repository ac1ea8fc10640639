package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestDetect(t *testing.T) {
	cases := []struct {
		name, metadata, wantErr string
	}{
		{"ccaas", `{"type":"ccaas","label":"x"}`, ""},
		{"upper case type", `{"type":"CCAAS"}`, ""},
		{"golang package", `{"type":"golang"}`, "is not ccaas"},
		{"broken json", `{"type":`, "metadata.json"},
		{"missing file", "", "no such file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.metadata != "" {
				write(t, filepath.Join(dir, "metadata.json"), tc.metadata)
			}
			err := detect([]string{t.TempDir(), dir})
			if tc.wantErr == "" && err != nil {
				t.Fatalf("unexpected error %v", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("want error containing %q, got %v", tc.wantErr, err)
			}
		})
	}
}

func TestBuildThenRelease(t *testing.T) {
	cases := []struct {
		name, connection, wantErr string
		withIndex                 bool
	}{
		{"plain", `{"address":"127.0.0.1:7052"}`, "", false},
		{"with couchdb index", `{"address":"127.0.0.1:7052"}`, "", true},
		{"no address", `{"dial_timeout":"10s"}`, "has no address", false},
		{"not json", `address=1`, "connection.json", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src, out, rel := t.TempDir(), t.TempDir(), t.TempDir()
			write(t, filepath.Join(src, "connection.json"), tc.connection)
			if tc.withIndex {
				write(t, filepath.Join(src, "META-INF", "statedb", "couchdb", "indexes", "i.json"), `{}`)
			}
			err := build([]string{src, t.TempDir(), out})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("want error containing %q, got %v", tc.wantErr, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := release([]string{out, rel}); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(filepath.Join(rel, "chaincode", "server", "connection.json"))
			if err != nil || string(got) != tc.connection {
				t.Fatalf("released connection.json = %q, %v", got, err)
			}
			// connection.json holds the chaincode server's client key: owner only, at every step.
			for _, path := range []string{
				filepath.Join(out, "connection.json"),
				filepath.Join(rel, "chaincode", "server", "connection.json"),
				filepath.Join(rel, "chaincode", "server"),
			} {
				info, err := os.Stat(path)
				if err != nil {
					t.Fatal(err)
				}
				if info.Mode().Perm()&0o077 != 0 {
					t.Fatalf("%s has mode %v; want no access for group or others", path, info.Mode().Perm())
				}
			}
			_, err = os.Stat(filepath.Join(rel, "statedb", "couchdb", "indexes", "i.json"))
			if tc.withIndex != (err == nil) {
				t.Fatalf("state database index released = %v, want %v", err == nil, tc.withIndex)
			}
		})
	}
}
