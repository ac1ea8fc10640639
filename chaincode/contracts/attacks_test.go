package contracts

import (
	"bytes"
	"testing"

	"github.com/hyperledger/fabric-contract-api-go/v2/contractapi"
)

// attack replays one move of an attacker (or of a well-meaning caller doing what it may not) against a world that a
// contract's fixture built. A refused move must be refused with its code and write nothing; a move the contract
// accepts on purpose (it only harms the attacker's own data) is followed by checks that it achieved nothing.
type attack struct {
	name string
	prep func(t *testing.T, w *world) // the attacker's earlier, accepted moves
	move func(t *testing.T, w *world) error
	code string // the refusal's code; "" when the move is accepted
	msg  string // part of the refusal's message
	then func(t *testing.T, w *world)
}

func runAttacks(t *testing.T, fixture func(t *testing.T) *world, attacks []attack) {
	t.Helper()
	for _, a := range attacks {
		t.Run(a.name, func(t *testing.T) {
			w := fixture(t)
			if a.prep != nil {
				a.prep(t, w)
			}
			before := snapshot(w)
			err := a.move(t, w)
			if a.code != "" {
				refused(t, w, err, a.code, a.msg)
				if !sameState(before, snapshot(w)) {
					t.Fatal("the committed state changed after a refusal")
				}
			} else {
				mustOK(t, err)
			}
			if a.then != nil {
				a.then(t, w)
			}
		})
	}
}

func snapshot(w *world) map[string][]byte {
	out := map[string][]byte{}
	for k, v := range w.state {
		out[k] = v
	}
	for coll, kvs := range w.private {
		for k, v := range kvs {
			out["private/"+coll+"/"+k] = v
		}
	}
	return out
}

func sameState(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !bytes.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

// do runs one call of a contract as the actor and returns only its error.
func do[T any](w *world, a actor, c contractapi.ContractInterface, fn func(ctx contractapi.TransactionContextInterface) (T, error)) error {
	_, err := call(w, a, c, nil, fn)
	return err
}
