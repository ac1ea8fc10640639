package contracts

import (
	"errors"
	"fmt"
)

// Error codes lead every error message ("FORBIDDEN: ..."), so clients map them to meaning without parsing prose.
const (
	CodeInvalid   = "INVALID_ARGUMENT" // the input is malformed or out of range
	CodeForbidden = "FORBIDDEN"        // the caller's org, role or identity may not do this
	CodeNotFound  = "NOT_FOUND"        // the thing named does not exist
	CodeConflict  = "CONFLICT"         // it exists already, or its state does not allow this step
)

// ContractError is an error a contract returns on purpose, with its code.
type ContractError struct {
	Code    string
	Message string
}

func (e *ContractError) Error() string { return e.Code + ": " + e.Message }

func invalid(format string, a ...any) error {
	return &ContractError{CodeInvalid, fmt.Sprintf(format, a...)}
}

func forbidden(format string, a ...any) error {
	return &ContractError{CodeForbidden, fmt.Sprintf(format, a...)}
}

func notFound(format string, a ...any) error {
	return &ContractError{CodeNotFound, fmt.Sprintf(format, a...)}
}

func conflict(format string, a ...any) error {
	return &ContractError{CodeConflict, fmt.Sprintf(format, a...)}
}

func sprintf(format string, a ...any) string { return fmt.Sprintf(format, a...) }

func asContractError(err error, target **ContractError) bool { return errors.As(err, target) }
