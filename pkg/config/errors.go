package config

import "strings"

// FieldError is one problem with one field of the configuration. Path is
// written the way an operator finds the field in the file:
// "remotes[0].podCIDRs[1]".
type FieldError struct {
	Path   string
	Reason string
}

func (e FieldError) Error() string {
	if e.Path == "" {
		return e.Reason
	}
	return e.Path + ": " + e.Reason
}

// ValidationError lists every problem found in one configuration, so an
// operator can fix them all in one edit instead of one per restart.
type ValidationError struct {
	Errors []FieldError
}

func (e *ValidationError) Error() string {
	lines := make([]string, len(e.Errors))
	for i, fe := range e.Errors {
		lines[i] = fe.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap exposes each FieldError to errors.Is/As.
func (e *ValidationError) Unwrap() []error {
	out := make([]error, len(e.Errors))
	for i, fe := range e.Errors {
		out[i] = fe
	}
	return out
}

// Paths returns the field paths of every problem, in order.
func (e *ValidationError) Paths() []string {
	out := make([]string, len(e.Errors))
	for i, fe := range e.Errors {
		out[i] = fe.Path
	}
	return out
}

// errorList collects field errors while walking a configuration.
type errorList []FieldError

func (l *errorList) add(path, reason string) {
	*l = append(*l, FieldError{Path: path, Reason: reason})
}

func (l errorList) err() error {
	if len(l) == 0 {
		return nil
	}
	return &ValidationError{Errors: l}
}

func joinPath(parent, key string) string {
	if parent == "" {
		return key
	}
	return parent + "." + key
}
