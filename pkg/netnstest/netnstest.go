// Package netnstest creates throwaway network namespaces for kernel tests.
// Every namespace it makes has a unique weft-t-* name, no link to the root
// namespace, and is removed when the test ends, pass or fail.
package netnstest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
)

// NS is a named network namespace created for one test.
type NS struct {
	Name string
	Path string
	ns.NetNS
}

// RequireRoot skips t unless the test runs as root (namespaces, netlink and
// nftables need CAP_NET_ADMIN and CAP_SYS_ADMIN).
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces (run `make test` as root)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs the ip command (iproute2)")
	}
}

// UniqueName returns a fresh namespace name with the given prefix.
func UniqueName(prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%s-%s", prefix, hex.EncodeToString(b))
}

// New creates a namespace named weft-t-<random>, brings its loopback up and
// removes it in t.Cleanup.
func New(t testing.TB) *NS {
	t.Helper()
	RequireRoot(t)
	n, err := Create(UniqueName("weft-t"))
	if err != nil {
		t.Fatalf("create netns: %v", err)
	}
	t.Cleanup(func() { n.Delete() })
	return n
}

// Create makes a named namespace with loopback up. The caller must Delete it.
func Create(name string) (*NS, error) {
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ip netns add %s: %v: %s", name, err, strings.TrimSpace(string(out)))
	}
	path := "/var/run/netns/" + name
	h, err := ns.GetNS(path)
	if err != nil {
		_ = exec.Command("ip", "netns", "del", name).Run()
		return nil, fmt.Errorf("open netns %s: %w", path, err)
	}
	n := &NS{Name: name, Path: path, NetNS: h}
	if _, err := n.Exec("ip", "link", "set", "lo", "up"); err != nil {
		n.Delete()
		return nil, err
	}
	return n, nil
}

// Delete removes the namespace. Safe to call twice.
func (n *NS) Delete() {
	if n.NetNS != nil {
		_ = n.NetNS.Close()
		n.NetNS = nil
	}
	_ = exec.Command("ip", "netns", "del", n.Name).Run()
}

// Exec runs a command inside the namespace and returns its combined output.
func (n *NS) Exec(name string, args ...string) (string, error) {
	argv := append([]string{"netns", "exec", n.Name, name}, args...)
	out, err := exec.Command("ip", argv...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("in netns %s: %s %s: %v: %s", n.Name, name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// MustExec is Exec that fails the test on error.
func (n *NS) MustExec(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := n.Exec(name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
