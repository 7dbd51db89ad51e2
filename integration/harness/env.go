// Package harness builds simulated Kubernetes clusters out of network
// namespaces for weft's integration tests and demo: an underlay bridge,
// nodes, pods attached through a real CNI chain (cnitool and libcni), weftd
// processes, and small in-process TCP/UDP probes.
//
// Nothing here touches the root network namespace: every link is created
// inside a namespace the harness made, and every object is removed by
// Env.Close (or t.Cleanup when the Env came from NewTestEnv), even when a
// test fails half-way through building.
package harness

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/weft-net/weft/pkg/netnstest"
)

// Env collects everything the harness creates so that one Close removes it,
// in reverse order of creation.
type Env struct {
	// BinDir holds weft and weftd (bin/ of the module).
	BinDir string
	// ToolsDir holds cnitool and the reference plugins (.tools/bin).
	ToolsDir string
	// Log receives progress and cleanup failures.
	Log *slog.Logger

	mu       sync.Mutex
	cleanups []cleanup
	closed   bool
	nsNames  []string
}

type cleanup struct {
	what string
	fn   func() error
}

// NewEnv returns an Env for use without a testing.TB (the demo). The caller
// must call Close. It fails when not root or when the binaries' directories
// cannot be found.
func NewEnv(log *slog.Logger) (*Env, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("harness needs root: it creates network namespaces")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	bin, tools, err := findDirs()
	if err != nil {
		return nil, err
	}
	return &Env{BinDir: bin, ToolsDir: tools, Log: log}, nil
}

// NewTestEnv returns an Env whose Close runs in t.Cleanup. It skips t when
// not root and fails it when the tool directories are missing.
func NewTestEnv(t testing.TB) *Env {
	t.Helper()
	netnstest.RequireRoot(t)
	env, err := NewEnv(slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})))
	if err != nil {
		t.Fatalf("harness env: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Close(); err != nil {
			t.Errorf("harness cleanup: %v", err)
		}
	})
	return env
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// Defer registers fn to run at Close. Cleanups run last-in first-out.
func (e *Env) Defer(what string, fn func() error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.cleanups = append(e.cleanups, cleanup{what: what, fn: fn})
}

// Close runs every cleanup, newest first, and returns all their errors
// joined. It is safe to call more than once.
func (e *Env) Close() error {
	e.mu.Lock()
	cs := e.cleanups
	e.cleanups = nil
	e.closed = true
	e.mu.Unlock()
	var errs []error
	for i := len(cs) - 1; i >= 0; i-- {
		if err := cs[i].fn(); err != nil {
			e.Log.Warn("cleanup failed", "what", cs[i].what, "err", err)
			errs = append(errs, fmt.Errorf("cleanup %s: %w", cs[i].what, err))
		}
	}
	return errors.Join(errs...)
}

// Namespaces lists the names of every namespace this Env created (removed
// ones included), so tests can assert they are gone after Close.
func (e *Env) Namespaces() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.nsNames...)
}

// NewNS creates a uniquely named namespace (prefix-<random>) with loopback up
// and registers its removal.
func (e *Env) NewNS(prefix string) (*netnstest.NS, error) {
	e.mu.Lock()
	closed := e.closed
	e.mu.Unlock()
	if closed {
		return nil, errors.New("harness env is closed")
	}
	n, err := netnstest.Create(netnstest.UniqueName(prefix))
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	e.nsNames = append(e.nsNames, n.Name)
	e.mu.Unlock()
	e.Defer("netns "+n.Name, func() error {
		n.Delete()
		if _, err := os.Stat("/var/run/netns/" + n.Name); err == nil {
			return fmt.Errorf("netns %s still present", n.Name)
		}
		return nil
	})
	return n, nil
}

// TempDir creates a directory removed at Close.
func (e *Env) TempDir(pattern string) (string, error) {
	d, err := os.MkdirTemp("", pattern)
	if err != nil {
		return "", fmt.Errorf("create temp dir: %w", err)
	}
	e.Defer("dir "+d, func() error { return os.RemoveAll(d) })
	return d, nil
}

// Tool returns the path of a binary in ToolsDir.
func (e *Env) Tool(name string) string { return filepath.Join(e.ToolsDir, name) }

// Bin returns the path of a binary in BinDir.
func (e *Env) Bin(name string) string { return filepath.Join(e.BinDir, name) }

// HasBin reports whether BinDir holds an executable name (weft, weftd):
// tests that need the weft binaries can skip when they are not built.
func (e *Env) HasBin(name string) bool {
	st, err := os.Stat(e.Bin(name))
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

// CNIPath is the plugin search path: weft first, then the reference plugins.
func (e *Env) CNIPath() []string { return []string{e.BinDir, e.ToolsDir} }

// findDirs resolves WEFT_BIN_DIR and WEFT_TOOLS_DIR (exported by the
// Makefile), falling back to bin/ and .tools/bin/ under the module root so
// that a plain `go test` works after `make build tools`.
func findDirs() (bin, tools string, err error) {
	bin, tools = os.Getenv("WEFT_BIN_DIR"), os.Getenv("WEFT_TOOLS_DIR")
	if bin == "" || tools == "" {
		root, rerr := moduleRoot()
		if rerr != nil {
			return "", "", rerr
		}
		if bin == "" {
			bin = filepath.Join(root, "bin")
		}
		if tools == "" {
			tools = filepath.Join(root, ".tools", "bin")
		}
	}
	if bin, err = filepath.Abs(bin); err != nil {
		return "", "", err
	}
	if tools, err = filepath.Abs(tools); err != nil {
		return "", "", err
	}
	if _, err := exec.LookPath(filepath.Join(tools, "cnitool")); err != nil {
		return "", "", fmt.Errorf("cnitool not found in %s (run `make tools`): %w", tools, err)
	}
	return bin, tools, nil
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("module root (go.mod) not found above the working directory; set WEFT_BIN_DIR and WEFT_TOOLS_DIR")
		}
		dir = parent
	}
}
