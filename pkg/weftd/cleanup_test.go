package weftd

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/weft-net/weft/pkg/netnstest"
)

// An image without the iptables binaries (weft's own OCI image, nftables
// nodes) must still uninstall: cleanup removes what it can reach and names
// what it could not check, instead of failing and crash-looping the
// uninstall DaemonSet.
func TestCleanupWithoutIptablesBinaries(t *testing.T) {
	n := netnstest.New(t)
	n.MustExec(t, "ip", "link", "add", "vx-weft", "type", "vxlan", "id", "100", "dstport", "4800")
	cfg := filepath.Join(t.TempDir(), "weft.yaml")
	if err := os.WriteFile(cfg, []byte(`nodeName: n1
nodeIP: 192.168.10.11
cluster:
  id: c1
  podCIDRs: [10.1.0.0/16]
  serviceCIDRs: [10.101.0.0/16]
  gateway: n1
  nodes: [{name: n1, ip: 192.168.10.11}]
`), 0o600); err != nil {
		t.Fatal(err)
	}
	// No iptables-*-save anywhere on PATH.
	path := os.Getenv("PATH")
	t.Setenv("PATH", t.TempDir())

	var unchecked []error
	err := n.Do(func(ns.NetNS) error {
		var err error
		unchecked, err = Cleanup(context.Background(), cfg, slog.New(slog.DiscardHandler))
		return err
	})
	if err != nil {
		t.Fatalf("Cleanup without iptables binaries failed: %v", err)
	}
	if len(unchecked) == 0 {
		t.Fatal("Cleanup reported nothing unchecked although no iptables binary exists")
	}
	var msgs []string
	for _, u := range unchecked {
		msgs = append(msgs, u.Error())
	}
	if all := strings.Join(msgs, "\n"); !strings.Contains(all, "iptables-nft not checked") || !strings.Contains(all, "iptables-legacy not checked") {
		t.Errorf("unchecked = %q, want both iptables modes named", all)
	}
	t.Setenv("PATH", path)
	if out, err := n.Exec("ip", "link", "show", "vx-weft"); err == nil {
		t.Errorf("vx-weft still present after Cleanup:\n%s", out)
	}
}
