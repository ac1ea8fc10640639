// Command ccaasbuilder is CareLedger's external chaincode builder for chaincode-as-a-service packages.
//
// The peer runs an external builder as three programs, bin/detect, bin/build and bin/release. This one binary
// is installed under all three names and acts on the name it was invoked as:
//
//	detect  SOURCE METADATA          exit 0 when METADATA/metadata.json has type "ccaas"
//	build   SOURCE METADATA OUTPUT   copy SOURCE/connection.json (and META-INF, if any) into OUTPUT
//	release BUILD RELEASE            place BUILD/connection.json at RELEASE/chaincode/server/connection.json
//
// The peer then dials the address in connection.json instead of launching a process.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

const connectionFile = "connection.json"

func main() {
	name := filepath.Base(os.Args[0])
	var err error
	switch name {
	case "detect":
		err = withArgs(2, detect)
	case "build":
		err = withArgs(3, build)
	case "release":
		err = withArgs(2, release)
	default:
		err = fmt.Errorf("invoked as %q; expected detect, build or release", name)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "ccaasbuilder %s: %v\n", name, err)
		os.Exit(1)
	}
}

func withArgs(n int, f func(args []string) error) error {
	if len(os.Args)-1 != n {
		return fmt.Errorf("want %d arguments, got %d", n, len(os.Args)-1)
	}
	return f(os.Args[1:])
}

func detect(args []string) error {
	raw, err := os.ReadFile(filepath.Join(args[1], "metadata.json"))
	if err != nil {
		return err
	}
	var md struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(raw, &md); err != nil {
		return fmt.Errorf("metadata.json: %w", err)
	}
	if !strings.EqualFold(md.Type, "ccaas") {
		return fmt.Errorf("package type %q is not ccaas", md.Type)
	}
	return nil
}

func build(args []string) error {
	src, out := args[0], args[2]
	conn := filepath.Join(src, connectionFile)
	if err := validateConnection(conn); err != nil {
		return err
	}
	if err := copyFile(conn, filepath.Join(out, connectionFile)); err != nil {
		return err
	}
	return copyTreeIfPresent(filepath.Join(src, "META-INF"), filepath.Join(out, "META-INF"))
}

func release(args []string) error {
	buildDir, rel := args[0], args[1]
	if err := copyTreeIfPresent(filepath.Join(buildDir, "META-INF", "statedb"), filepath.Join(rel, "statedb")); err != nil {
		return err
	}
	return copyFile(filepath.Join(buildDir, connectionFile), filepath.Join(rel, "chaincode", "server", connectionFile))
}

// validateConnection fails the build early, with a readable message, when connection.json cannot work.
func validateConnection(path string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var c struct {
		Address string `json:"address"`
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		return fmt.Errorf("%s: %w", connectionFile, err)
	}
	if c.Address == "" {
		return errors.New(connectionFile + " has no address")
	}
	return nil
}

// copyFile copies one file; connection.json carries the client key peers present to the chaincode server, so every
// copy is readable by its owner only (0600 in 0700 folders), like the package it comes from.
func copyFile(from, to string) error {
	if err := os.MkdirAll(filepath.Dir(to), 0o700); err != nil {
		return err
	}
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func copyTreeIfPresent(from, to string) error {
	if _, err := os.Stat(from); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return filepath.WalkDir(from, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(from, path)
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), 0o700)
		}
		return copyFile(path, filepath.Join(to, rel))
	})
}
