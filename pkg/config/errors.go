package config

import (
	"fmt"
	"strings"
)

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

// maxWarningsShown bounds WarningSummary: a file with thousands of
// duplicates must not make status unreadable (or too large to fetch).
const maxWarningsShown = 5

// WarningSummary is one line for status: how many CIDRs were merged, the
// first few warnings in file order and how many more there are. "" when
// the configuration has no warnings.
func (c *Config) WarningSummary() string {
	ws := c.Parsed.Warnings
	if len(ws) == 0 {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d CIDRs merged into others of the same cluster (nested or duplicate): ", len(ws))
	for i, w := range ws[:min(len(ws), maxWarningsShown)] {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(w.Error())
	}
	if len(ws) > maxWarningsShown {
		fmt.Fprintf(&b, "; and %d more", len(ws)-maxWarningsShown)
	}
	return b.String()
}
