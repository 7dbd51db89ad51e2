package kubesource

import (
	"net/netip"
	"regexp"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func ce(name string, spec ClusterEndpointSpec) *ClusterEndpoint {
	return &ClusterEndpoint{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "weft-system"}, Spec: spec}
}

func TestBuildWeft(t *testing.T) {
	nodes := []*corev1.Node{{ObjectMeta: metav1.ObjectMeta{Name: "c1-n2"}, Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.168.10.12"}}}}}
	tests := []struct {
		name      string
		ces       []*ClusterEndpoint
		gateway   string
		remotes   []string
		problemRe string
	}{
		{"none", nil, "", nil, ""},
		{"local and remote", []*ClusterEndpoint{
			ce("c1", ClusterEndpointSpec{ClusterID: "c1", PodCIDRs: []string{"10.1.0.0/16"}, GatewayNode: "c1-n2", GatewayIP: "192.168.10.12", Cable: "vxlan"}),
			ce("c2", ClusterEndpointSpec{ClusterID: "c2", PodCIDRs: []string{"10.2.0.0/16"}, ServiceCIDRs: []string{"10.102.0.0/16"}, GatewayNode: "c2-n3", GatewayIP: "192.168.20.13", Cable: "vxlan"}),
		}, "c1-n2", []string{"c2 [10.2.0.0/16 10.102.0.0/16] 192.168.20.13"}, ""},
		{"remote with a health-check IP", []*ClusterEndpoint{
			ce("c2", ClusterEndpointSpec{ClusterID: "c2", PodCIDRs: []string{"10.2.0.0/16"}, GatewayNode: "c2-n3", GatewayIP: "192.168.20.13", Cable: "vxlan", HealthCheckIP: "10.2.3.1"}),
		}, "", []string{"c2 [10.2.0.0/16] 192.168.20.13 hc 10.2.3.1"}, ""},
		{"remote with a bad health-check IP", []*ClusterEndpoint{
			ce("c2", ClusterEndpointSpec{ClusterID: "c2", PodCIDRs: []string{"10.2.0.0/16"}, GatewayNode: "c2-n3", GatewayIP: "192.168.20.13", Cable: "vxlan", HealthCheckIP: "::1"}),
		}, "", []string{"c2 [10.2.0.0/16] 192.168.20.13"}, `spec.healthCheckIP "::1" is not a global unicast IP address`},
		{"IPv6-only remote: gatewayIP and healthCheckIP hold IPv6", []*ClusterEndpoint{
			ce("c2", ClusterEndpointSpec{ClusterID: "c2", PodCIDRs: []string{"fd00:2::/56"}, GatewayNode: "c2-n3", GatewayIP: "fd00:20::13", Cable: "vxlan", HealthCheckIP: "fd00:2:0:3::1"}),
		}, "", []string{"c2 [fd00:2::/56] gw6 fd00:20::13 hc6 fd00:2:0:3::1"}, ""},
		{"dual-stack remote: the IPv6 companions", []*ClusterEndpoint{
			ce("c2", ClusterEndpointSpec{ClusterID: "c2", PodCIDRs: []string{"10.2.0.0/16", "fd00:2::/56"}, GatewayNode: "c2-n3", GatewayIP: "192.168.20.13", GatewayIP6: "fd00:20::13", Cable: "vxlan",
				HealthCheckIP: "10.2.3.1", HealthCheckIP6: "fd00:2:0:3::1"}),
		}, "", []string{"c2 [10.2.0.0/16 fd00:2::/56] 192.168.20.13 gw6 fd00:20::13 hc 10.2.3.1 hc6 fd00:2:0:3::1"}, ""},
		{"two IPv6 gateway addresses", []*ClusterEndpoint{
			ce("c2", ClusterEndpointSpec{ClusterID: "c2", PodCIDRs: []string{"fd00:2::/56"}, GatewayNode: "c2-n3", GatewayIP: "fd00:20::13", GatewayIP6: "fd00:20::14", Cable: "vxlan"}),
		}, "", nil, `spec.gatewayIP6 "fd00:20::14" is a second IPv6 address`},
		{"an IPv4 address in gatewayIP6", []*ClusterEndpoint{
			ce("c2", ClusterEndpointSpec{ClusterID: "c2", PodCIDRs: []string{"10.2.0.0/16"}, GatewayNode: "c2-n3", GatewayIP: "192.168.20.13", GatewayIP6: "192.168.20.14", Cable: "vxlan"}),
		}, "", nil, `spec.gatewayIP6 "192.168.20.14" is not a global unicast IPv6 address`},
		{"IPv6-only local gateway", []*ClusterEndpoint{
			ce("c1", ClusterEndpointSpec{ClusterID: "c1", PodCIDRs: []string{"fd00:1::/56"}, GatewayNode: "c1-v6", GatewayIP: "fd00:10::12", Cable: "vxlan"}),
		}, "c1-v6", nil, ""},
		{"remote with a bad CIDR", []*ClusterEndpoint{
			ce("c3", ClusterEndpointSpec{ClusterID: "c3", PodCIDRs: []string{"10.3.0.0"}, GatewayNode: "c3-n1", GatewayIP: "192.168.30.11"}),
		}, "", nil, `ClusterEndpoint weft-system/c3: unusable .*10.3.0.0`},
		{"local without address", []*ClusterEndpoint{
			ce("c1", ClusterEndpointSpec{ClusterID: "c1", PodCIDRs: []string{"10.1.0.0/16"}, GatewayNode: "c1-n2"}),
		}, "", nil, `ClusterEndpoint weft-system/c1: gateway`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			top := buildWeft("c1", nodes, tt.ces)
			if top.Gateway.Name != tt.gateway {
				t.Errorf("gateway %+v, want %q", top.Gateway, tt.gateway)
			}
			if tt.gateway == "c1-v6" && (top.Gateway.IP.IsValid() || top.Gateway.IP6 != netip.MustParseAddr("fd00:10::12")) {
				t.Errorf("gateway %+v, want its IPv6 address only", top.Gateway)
			} else if tt.gateway == "c1-n2" && (top.Gateway.IP != netip.MustParseAddr("192.168.10.12") || top.Gateway.From != "ClusterEndpoint weft-system/c1") {
				t.Errorf("gateway %+v", top.Gateway)
			}
			var got []string
			for _, r := range top.Remotes {
				var cs []string
				for _, c := range r.CIDRs {
					cs = append(cs, c.String())
				}
				line := r.ID + " [" + strings.Join(cs, " ") + "]"
				for _, f := range []struct {
					label string
					a     netip.Addr
				}{{"", r.GatewayIP}, {"gw6 ", r.GatewayIP6}, {"hc ", r.HealthCheckIP}, {"hc6 ", r.HealthCheckIP6}} {
					if f.a.IsValid() {
						line += " " + f.label + f.a.String()
					}
				}
				got = append(got, line)
			}
			if strings.Join(got, ";") != strings.Join(tt.remotes, ";") {
				t.Errorf("remotes %q, want %q", got, tt.remotes)
			}
			if tt.problemRe == "" && len(top.Problems) > 0 || tt.problemRe != "" && !matches(tt.problemRe, top.Problems) {
				t.Errorf("problems %q, want %q", top.Problems, tt.problemRe)
			}
		})
	}
}

func matches(re string, ps []string) bool {
	r := regexp.MustCompile(re)
	for _, p := range ps {
		if r.MatchString(p) {
			return true
		}
	}
	return false
}
