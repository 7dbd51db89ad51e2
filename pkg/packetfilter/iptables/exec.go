package iptbackend

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
)

// Runner runs one external command. It is the only way the backend reaches
// the iptables binaries, so a unit test can record what would be executed.
// The real Runner execs in the calling OS thread's network namespace, which
// is what makes the backend usable inside ns.Do.
type Runner interface {
	// Run executes name with args, feeding stdin (nil for none), and returns
	// its standard output. A failed command yields an *ExecError.
	Run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error)
}

// ExecError is a command that could not run or exited non-zero.
type ExecError struct {
	Cmd      string // name and arguments
	ExitCode int    // -1 when the command did not run to completion
	Stderr   string
	Err      error
}

func (e *ExecError) Error() string {
	msg := fmt.Sprintf("%s: %v", e.Cmd, e.Err)
	if e.Stderr != "" {
		msg += ": " + e.Stderr
	}
	return msg
}

func (e *ExecError) Unwrap() []error {
	errs := []error{e.Err}
	// Exit status 3 (VERSION_PROBLEM) with iptables-nft 1.8.9 is a rule it
	// cannot parse, e.g. `iptables-nft -D FORWARD ...` over a native
	// `ct state` rule: "Error: cmp sreg undef ... Parsing nftables rule
	// failed" (the kube-router/Netbird crash). Legacy uses the same code
	// when the kernel lacks the table, which is unavailability instead.
	if unavailable(e) {
		errs = append(errs, ErrUnavailable)
	} else if e.ExitCode == 3 || strings.Contains(e.Stderr, "is incompatible") ||
		strings.Contains(e.Stderr, "Parsing nftables rule failed") {
		errs = append(errs, ErrIncompatibleTable)
	}
	return errs
}

func unavailable(e *ExecError) bool {
	if errors.Is(e.Err, exec.ErrNotFound) {
		return true
	}
	for _, s := range []string{
		"do you need to insmod", // legacy: ip_tables / iptable_* missing
		"Protocol not supported",
		"Could not fetch rule set generation id", // nft: nf_tables missing
		"Permission denied (you must be root)",
	} {
		if strings.Contains(e.Stderr, s) {
			return true
		}
	}
	return false
}

// OSRunner runs commands with os/exec.
type OSRunner struct{}

// Run implements Runner.
func (OSRunner) Run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		code := -1
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		}
		return stdout.Bytes(), &ExecError{
			Cmd:      strings.TrimSpace(name + " " + strings.Join(args, " ")),
			ExitCode: code,
			Stderr:   strings.TrimSpace(stderr.String()),
			Err:      err,
		}
	}
	return stdout.Bytes(), nil
}
