package config

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// parseFamilies is ParseWith with the IPv6 gate given, for the logic that
// stays closed to users until the reconcile loop carries IPv6.
func parseFamilies(t *testing.T, data []byte, fam families) (*Config, error) {
	t.Helper()
	cfg, err := decode(data)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	cfg.SetDefaults(testEnv("", ""))
	return cfg, cfg.validate(fam)
}

const dualStack = `
nodeName: c1-n2
cluster:
  id: c1
  podCIDRs: [10.1.0.0/16, fd00:1::/56]
  serviceCIDRs: [10.101.0.0/16, fd00:101::/112]
  gateway: c1-n1
  nodes:
    - {name: c1-n1, ip: 192.168.10.11, ip6: fd00:10::11}
    - {name: c1-n2, ip: 192.168.10.12, ip6: fd00:10::12}
remotes:
  - id: c2
    podCIDRs: [10.2.0.0/16, fd00:2::/56]
    serviceCIDRs: [fd00:102::/112]
    gatewayIP: 192.168.20.11
`

func TestDualStackParsed(t *testing.T) {
	cfg, err := parseFamilies(t, []byte(dualStack), families{ipv6: true})
	if err != nil {
		t.Fatalf("validate: %v", err)
	}
	mp := netip.MustParsePrefix
	ma := netip.MustParseAddr
	want := Parsed{
		NodeIP:       ma("192.168.10.12"),
		NodeIP6:      ma("fd00:10::12"),
		PodCIDRs:     []netip.Prefix{mp("10.1.0.0/16"), mp("fd00:1::/56")},
		ServiceCIDRs: []netip.Prefix{mp("10.101.0.0/16"), mp("fd00:101::/112")},
		Nodes: []ParsedNode{
			{Name: "c1-n1", IP: ma("192.168.10.11"), IP6: ma("fd00:10::11")},
			{Name: "c1-n2", IP: ma("192.168.10.12"), IP6: ma("fd00:10::12")},
		},
		Remotes: []ParsedRemote{{
			ID: "c2", PodCIDRs: []netip.Prefix{mp("10.2.0.0/16"), mp("fd00:2::/56")},
			ServiceCIDRs: []netip.Prefix{mp("fd00:102::/112")}, GatewayIP: ma("192.168.20.11"),
		}},
		VTEPCIDR: mp("240.0.0.0/8"), CableCIDR: mp("241.0.0.0/8"),
		VTEPCIDR6: mp("fd57:6566:7400::/96"), CableCIDR6: mp("fd57:6566:7400:1::/96"),
	}
	if !reflect.DeepEqual(cfg.Parsed, want) {
		t.Errorf("Parsed =\n%+v\nwant\n%+v", cfg.Parsed, want)
	}

	// The same file with the gate closed (what users get today) is
	// refused on every IPv6 field, each naming the family and why.
	_, err = parseFamilies(t, []byte(dualStack), families{})
	ve, ok := err.(*ValidationError)
	if !ok {
		t.Fatalf("gate closed: err = %v, want a *ValidationError", err)
	}
	var paths []string
	for _, e := range ve.Errors {
		paths = append(paths, e.Path)
		if !strings.Contains(e.Reason, "IPv6") || !strings.Contains(e.Reason, "bypass weft") {
			t.Errorf("%s: reason %q does not name the family and the reason", e.Path, e.Reason)
		}
	}
	wantPaths := []string{"cluster.podCIDRs[1]", "cluster.serviceCIDRs[1]", "cluster.nodes[0].ip6", "cluster.nodes[1].ip6", "remotes[0].podCIDRs[1]", "remotes[0].serviceCIDRs[0]"}
	if !reflect.DeepEqual(paths, wantPaths) {
		t.Errorf("gate closed: paths %v, want %v", paths, wantPaths)
	}
}

func TestDualStackValidation(t *testing.T) {
	tests := []struct {
		name   string
		muts   []mutation
		want   []string // exact error paths; none = valid
		reason string   // substring of the first error, or of the first warning when valid
		check  func(t *testing.T, p Parsed)
	}{
		{name: "IPv6 remote overlaps local IPv6",
			muts: []mutation{{"remotes[0].podCIDRs", []any{"fd00:1:0:80::/64"}}},
			want: []string{"remotes[0].podCIDRs[0]"}, reason: `"fd00:1:0:80::/64" overlaps cluster.podCIDRs[1] "fd00:1::/56"`},
		{name: "IPv6 remotes overlap each other",
			muts: []mutation{{"remotes[1]", map[string]any{"id": "c3", "podCIDRs": []any{"fd00:2:0:1::/64"}, "gatewayIP": "192.168.30.11"}}},
			want: []string{"remotes[1].podCIDRs[0]"}, reason: `overlaps remotes[0].podCIDRs[1] "fd00:2::/56"`},
		{name: "IPv6 nested in one owner is merged",
			muts:   []mutation{{"cluster.podCIDRs", []any{"10.1.0.0/16", "fd00:1::/56", "fd00:1:0:5::/64"}}},
			reason: `cluster.podCIDRs[2]: "fd00:1:0:5::/64" is inside cluster.podCIDRs[1] "fd00:1::/56" of the same local cluster: merged`,
			check: func(t *testing.T, p Parsed) {
				if want := []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("fd00:1::/56")}; !reflect.DeepEqual(p.PodCIDRs, want) {
					t.Errorf("PodCIDRs = %v, want %v", p.PodCIDRs, want)
				}
			}},
		{name: "the families never overlap",
			// ::/3 holds the IPv4-mapped range (::ffff:0:0/96), yet
			// contains none of the IPv4 CIDRs.
			muts: []mutation{{"remotes[0].podCIDRs", []any{"::/3"}}, {"remotes[0].serviceCIDRs", []any{"11.0.0.0/8"}},
				{"cluster.podCIDRs", []any{"10.1.0.0/16", "2000::/3"}}}},
		{name: "IPv6 VTEP range overlaps a pod CIDR",
			muts: []mutation{{"cluster.podCIDRs", []any{"10.1.0.0/16", "fd57:6566:7400::/64"}}},
			want: []string{"vxlan.vtepCIDR6"}, reason: "a VTEP range must not overlap"},
		{name: "IPv4 pods over an IPv6 underlay",
			muts: []mutation{{"cluster.nodes", []any{
				map[string]any{"name": "c1-n1", "ip6": "fd00:10::11"}, map[string]any{"name": "c1-n2", "ip6": "fd00:10::12"}}},
				{"remotes[0].gatewayIP", "fd00:20::11"}},
			want: []string{"cluster.nodes[0].ip"}, reason: "cluster.podCIDRs[0] 10.1.0.0/16 is IPv4, and IPv4 pods need an IPv4 underlay"},
		{name: "IPv6-only cluster has an IPv6 underlay",
			muts: []mutation{{"cluster.podCIDRs", []any{"fd00:1::/56"}}, {"cluster.serviceCIDRs", []any{"fd00:101::/112"}},
				{"remotes[0].podCIDRs", []any{"fd00:2::/56"}},
				{"cluster.nodes", []any{
					map[string]any{"name": "c1-n1", "ip6": "fd00:10::11"}, map[string]any{"name": "c1-n2", "ip6": "fd00:10::12"}}},
				{"remotes[0].gatewayIP", "fd00:20::11"}},
			check: func(t *testing.T, p Parsed) {
				if !p.Underlay6 || !p.Cable6 || p.NodeIP.IsValid() || p.NodeIP6 != netip.MustParseAddr("fd00:10::12") {
					t.Errorf("Underlay6 %v Cable6 %v NodeIP %v NodeIP6 %v, want true true invalid fd00:10::12", p.Underlay6, p.Cable6, p.NodeIP, p.NodeIP6)
				}
			}},
		{name: "nodes sharing no family",
			muts: []mutation{{"cluster.nodes", []any{
				map[string]any{"name": "c1-n1", "ip6": "fd00:10::11"}, map[string]any{"name": "c1-n2", "ip": "192.168.10.12"}}}},
			want: []string{"cluster.nodes[1].ip6"}, reason: "cluster.nodes[0] has no ip, so the VXLAN underlay must be IPv6"},
		{name: "IPv6 node address duplicate",
			muts: []mutation{{"cluster.nodes[1].ip6", "fd00:10::11"}},
			want: []string{"cluster.nodes[1].ip6"}, reason: "already used by cluster.nodes[0].ip6"},
		{name: "link-local node address",
			muts: []mutation{{"cluster.nodes[1].ip6", "fe80::12"}},
			want: []string{"cluster.nodes[1].ip6"}, reason: "link-local"},
		{name: "remote gateways of two families",
			muts: []mutation{{"remotes[1]", map[string]any{"id": "c3", "podCIDRs": []any{"10.3.0.0/16"}, "gatewayIP": "fd00:30::11"}}},
			want: []string{"remotes[1].gatewayIP"}, reason: "fd00:30::11 is IPv6 but remotes[0].gatewayIP is IPv4"},
		{name: "IPv6 healthCheckIP of an IPv6-only remote",
			muts: []mutation{{"remotes[0].healthCheckIP", "fd00:2:0:1::1"}},
			check: func(t *testing.T, p Parsed) {
				if r := p.Remotes[0]; r.HealthCheckIP.IsValid() || r.HealthCheckIP6 != netip.MustParseAddr("fd00:2:0:1::1") {
					t.Errorf("health checks %v / %v, want none / fd00:2:0:1::1", r.HealthCheckIP, r.HealthCheckIP6)
				}
			}},
		{name: "one health-check IP per family",
			muts: []mutation{{"remotes[0].healthCheckIP", "10.2.1.1"}, {"remotes[0].healthCheckIP6", "fd00:2:0:1::1"}},
			check: func(t *testing.T, p Parsed) {
				if r := p.Remotes[0]; r.HealthCheckIP != netip.MustParseAddr("10.2.1.1") || r.HealthCheckIP6 != netip.MustParseAddr("fd00:2:0:1::1") {
					t.Errorf("health checks %v / %v, want 10.2.1.1 / fd00:2:0:1::1", r.HealthCheckIP, r.HealthCheckIP6)
				}
			}},
		{name: "two IPv6 health-check IPs",
			muts: []mutation{{"remotes[0].healthCheckIP", "fd00:2::5"}, {"remotes[0].healthCheckIP6", "fd00:2:0:1::1"}},
			want: []string{"remotes[0].healthCheckIP6"}, reason: "fd00:2:0:1::1 is a second IPv6 health-check address (remotes[0].healthCheckIP is one)"},
		{name: "healthCheckIP6 takes IPv6 only",
			muts: []mutation{{"remotes[0].healthCheckIP6", "10.2.1.1"}},
			want: []string{"remotes[0].healthCheckIP6"}, reason: `"10.2.1.1" is not an IPv6 address (an IPv4 address goes in remotes[0].healthCheckIP)`},
		{name: "IPv6 healthCheckIP outside the remote's IPv6 CIDRs",
			muts: []mutation{{"remotes[0].healthCheckIP", "fd00:3::1"}},
			want: []string{"remotes[0].healthCheckIP"}, reason: "fd00:3::1 is not inside any of remotes[0].podCIDRs or remotes[0].serviceCIDRs (IPv6)"},
		{name: "IPv6 CIDR with host bits",
			muts: []mutation{{"cluster.podCIDRs", []any{"10.1.0.0/16", "fd00:1::1/56"}}},
			want: []string{"cluster.podCIDRs[1]"}, reason: "host bits set (the network is fd00:1::/56)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var doc map[string]any
			if err := yaml.Unmarshal([]byte(dualStack), &doc); err != nil {
				t.Fatal(err)
			}
			for _, m := range tc.muts {
				if strings.HasPrefix(m.path, "remotes[1]") {
					doc["remotes"] = append(doc["remotes"].([]any), m.value)
					continue
				}
				set(t, doc, m.path, m.value)
			}
			cfg, err := parseFamilies(t, render(t, doc), families{ipv6: true})
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("validate: %v", err)
				}
				if tc.reason != "" && (len(cfg.Parsed.Warnings) == 0 || !strings.Contains(cfg.Parsed.Warnings[0].Error(), tc.reason)) {
					t.Errorf("warnings %v, want the first to contain %q", cfg.Parsed.Warnings, tc.reason)
				}
				if tc.check != nil {
					tc.check(t, cfg.Parsed)
				}
				return
			}
			ve, ok := err.(*ValidationError)
			if !ok {
				t.Fatalf("err = %v, want a *ValidationError at %v", err, tc.want)
			}
			var paths []string
			for _, e := range ve.Errors {
				paths = append(paths, e.Path)
			}
			if !reflect.DeepEqual(paths, tc.want) {
				t.Errorf("paths %v, want %v (%v)", paths, tc.want, err)
			}
			if !strings.Contains(ve.Errors[0].Error(), tc.reason) {
				t.Errorf("first error %q does not contain %q", ve.Errors[0].Error(), tc.reason)
			}
		})
	}
}
