package weftd

import (
	"errors"
	"log/slog"
	"net/netip"
	"testing"

	"github.com/weft-net/weft/pkg/config"
	nftbackend "github.com/weft-net/weft/pkg/packetfilter/nftables"
)

func TestProbeVerdict(t *testing.T) {
	only6 := &nftbackend.ProbeError{Missing: []string{"nat"}, Families: []string{"ip6"}, Errs: []error{errors.New("EOPNOTSUPP")}}
	both := &nftbackend.ProbeError{Missing: []string{"nat", "nat"}, Families: []string{"ip", "ip6"}, Errs: []error{errors.New("x"), errors.New("y")}}
	other := errors.New("netlink: permission denied")
	tests := []struct {
		name   string
		err    error
		ipv6   bool
		usable bool
	}{
		{"probe passed", nil, false, true},
		{"only ip6 missing, IPv4-only cluster", only6, false, true},
		{"only ip6 missing, IPv6 cluster", only6, true, false},
		{"ip missing too", both, false, false},
		{"not a probe error", other, false, false},
	}
	for _, tt := range tests {
		if got := probeVerdict(tt.err, tt.ipv6, slog.New(slog.DiscardHandler)); (got == nil) != tt.usable {
			t.Errorf("%s: verdict %v, want usable=%t", tt.name, got, tt.usable)
		}
	}
}

func TestNeedsIPv6(t *testing.T) {
	cfg := &config.Config{}
	cfg.Parsed.PodCIDRs = []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}
	if needsIPv6(cfg) {
		t.Error("IPv4 cluster needs IPv6")
	}
	cfg.Parsed.ServiceCIDRs = []netip.Prefix{netip.MustParsePrefix("fd01:101::/108")}
	if !needsIPv6(cfg) {
		t.Error("cluster with an IPv6 service CIDR does not need IPv6")
	}
}
