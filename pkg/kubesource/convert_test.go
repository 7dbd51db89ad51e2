package kubesource

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weft-net/weft/pkg/toposource"
)

func node(name string, addrs ...corev1.NodeAddress) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: corev1.NodeStatus{Addresses: addrs}}
}

func internal(ip string) corev1.NodeAddress {
	return corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: ip}
}

var t0 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

func ep(name, cluster, host, private string, created time.Duration, subnets ...string) *Endpoint {
	return &Endpoint{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "submariner-operator", CreationTimestamp: metav1.NewTime(t0.Add(created))},
		Spec:       EndpointSpec{ClusterID: cluster, Hostname: host, PrivateIP: private, Subnets: subnets, CableName: "submariner-cable-" + cluster},
	}
}

func TestStripNodeKeepsNameAndFirstInternalIPOfEachFamily(t *testing.T) {
	full := node("c1-n2",
		corev1.NodeAddress{Type: corev1.NodeHostName, Address: "c1-n2"},
		internal("fe80::12"),
		internal("fd00::12"),
		internal("fd00::99"),
		corev1.NodeAddress{Type: corev1.NodeExternalIP, Address: "203.0.113.5"},
		internal("192.168.10.12"),
		internal("192.168.10.99"),
	)
	full.ResourceVersion = "42"
	full.Labels = map[string]string{"kubernetes.io/hostname": "c1-n2", "zone": "a"}
	full.Annotations = map[string]string{"node.alpha.kubernetes.io/ttl": "0"}
	full.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubelet"}}
	full.Status.Images = []corev1.ContainerImage{{Names: []string{"registry.k8s.io/pause:3.10"}, SizeBytes: 1 << 20}}
	full.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}
	full.Spec.PodCIDR = "10.1.2.0/24"

	got, err := stripNode(full)
	if err != nil {
		t.Fatal(err)
	}
	want := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "c1-n2", ResourceVersion: "42"},
		Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{internal("192.168.10.12"), internal("fd00::12")}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("stripNode = %+v\nwant %+v", got, want)
	}
	// A tombstone passes through untouched.
	tomb := struct{ Key string }{"c1-n9"}
	if got, _ := stripNode(tomb); got != tomb {
		t.Errorf("tombstone changed: %v", got)
	}
}

func TestBuildNodes(t *testing.T) {
	top := build("c1", []*corev1.Node{
		node("c1-n2", internal("192.168.10.12")),
		node("c1-n1", internal("fd00::11"), internal("192.168.10.11")),
		node("c1-v6", internal("fd00::1")),
		node("c1-none", corev1.NodeAddress{Type: corev1.NodeHostName, Address: "c1-none"}),
	}, nil)
	// An IPv6-only Node is a node: whether the cluster's underlay lets it
	// be a member is toposource.Apply's decision (it knows the pod CIDRs).
	want := []toposource.Node{
		{Name: "c1-n1", IP: netip.MustParseAddr("192.168.10.11"), IP6: netip.MustParseAddr("fd00::11"), From: "Node/c1-n1"},
		{Name: "c1-n2", IP: netip.MustParseAddr("192.168.10.12"), From: "Node/c1-n2"},
		{Name: "c1-v6", IP6: netip.MustParseAddr("fd00::1"), From: "Node/c1-v6"},
	}
	if !reflect.DeepEqual(top.Nodes, want) {
		t.Errorf("nodes = %+v, want %+v", top.Nodes, want)
	}
	if len(top.Problems) != 1 || !strings.Contains(top.Problems[0], "Node c1-none has no usable InternalIP (IPv4, or global IPv6)") {
		t.Errorf("problems = %q", top.Problems)
	}
}

func TestBuildEndpoints(t *testing.T) {
	tests := []struct {
		name     string
		eps      []*Endpoint
		gateway  toposource.Gateway
		remotes  []toposource.Remote
		problems []string
	}{
		{
			name: "local names the gateway, others are remotes",
			eps: []*Endpoint{
				ep("c1-submariner-cable-c1-192-168-10-11", "c1", "c1-n1", "192.168.10.11", 0, "10.1.0.0/16", "10.101.0.0/16"),
				ep("c2-submariner-cable-c2-192-168-20-11", "c2", "c2-n1", "192.168.20.11", 0, "10.2.0.0/16", "10.102.0.0/16"),
			},
			gateway: toposource.Gateway{Name: "c1-n1", IP: netip.MustParseAddr("192.168.10.11"), From: "Endpoint submariner-operator/c1-submariner-cable-c1-192-168-10-11"},
			remotes: []toposource.Remote{{
				ID: "c2", CIDRs: []netip.Prefix{netip.MustParsePrefix("10.2.0.0/16"), netip.MustParsePrefix("10.102.0.0/16")},
				GatewayIP: netip.MustParseAddr("192.168.20.11"), From: "Endpoint submariner-operator/c2-submariner-cable-c2-192-168-20-11",
			}},
		},
		{
			name: "failover: the newest Endpoint of a cluster wins, whatever the order",
			eps: []*Endpoint{
				ep("c2-new", "c2", "c2-n2", "192.168.20.12", time.Minute, "10.2.0.0/16"),
				ep("c1-old", "c1", "c1-n1", "192.168.10.11", 0, "10.1.0.0/16"),
				ep("c2-old", "c2", "c2-n1", "192.168.20.11", 0, "10.2.0.0/16"),
				ep("c1-new", "c1", "c1-n3", "192.168.10.13", time.Minute, "10.1.0.0/16"),
			},
			gateway: toposource.Gateway{Name: "c1-n3", IP: netip.MustParseAddr("192.168.10.13"), From: "Endpoint submariner-operator/c1-new"},
			remotes: []toposource.Remote{{ID: "c2", CIDRs: []netip.Prefix{netip.MustParsePrefix("10.2.0.0/16")}, GatewayIP: netip.MustParseAddr("192.168.20.12"), From: "Endpoint submariner-operator/c2-new"}},
		},
		{
			name: "NAT: nat_enabled on the remote selects public_ip",
			eps: func() []*Endpoint {
				e := ep("c2", "c2", "c2-n1", "192.168.20.11", 0, "10.2.0.0/16")
				e.Spec.NATEnabled, e.Spec.PublicIP = true, "203.0.113.20"
				return []*Endpoint{e}
			}(),
			remotes: []toposource.Remote{{ID: "c2", CIDRs: []netip.Prefix{netip.MustParsePrefix("10.2.0.0/16")}, GatewayIP: netip.MustParseAddr("203.0.113.20"), From: "Endpoint submariner-operator/c2 (public_ip)"}},
		},
		{
			name: "public_ip without nat_enabled is not used",
			eps: func() []*Endpoint {
				e := ep("c2", "c2", "c2-n1", "192.168.20.11", 0, "10.2.0.0/16")
				e.Spec.PublicIP = "203.0.113.20"
				return []*Endpoint{e}
			}(),
			remotes: []toposource.Remote{{ID: "c2", CIDRs: []netip.Prefix{netip.MustParsePrefix("10.2.0.0/16")}, GatewayIP: netip.MustParseAddr("192.168.20.11"), From: "Endpoint submariner-operator/c2"}},
		},
		{
			name:     "bad subnets are skipped and named; IPv6 ones are kept (routed or named by the desired state)",
			eps:      []*Endpoint{ep("c2", "c2", "c2-n1", "192.168.20.11", 0, "10.2.0.0/16", "fd02::/64", "ten-two")},
			remotes:  []toposource.Remote{{ID: "c2", CIDRs: []netip.Prefix{netip.MustParsePrefix("10.2.0.0/16"), netip.MustParsePrefix("fd02::/64")}, GatewayIP: netip.MustParseAddr("192.168.20.11"), From: "Endpoint submariner-operator/c2"}},
			problems: []string{`Endpoint submariner-operator/c2: spec.subnets[2] "ten-two" is not a CIDR: skipped`},
		},
		{
			name:     "a remote without subnets is ignored",
			eps:      []*Endpoint{ep("c3", "c3", "c3-n1", "192.168.30.11", 0)},
			problems: []string{`Endpoint submariner-operator/c3: no subnets: remote "c3" ignored`},
		},
		{
			name:     "a remote with a bad private_ip keeps its routes, without a cable peer",
			eps:      []*Endpoint{ep("c2", "c2", "c2-n1", "gw", 0, "10.2.0.0/16")},
			remotes:  []toposource.Remote{{ID: "c2", CIDRs: []netip.Prefix{netip.MustParsePrefix("10.2.0.0/16")}, From: "Endpoint submariner-operator/c2"}},
			problems: []string{`Endpoint submariner-operator/c2: spec.private_ip "gw" is not an IP address: the cable cannot reach remote "c2"`},
		},
		{
			name: "healthCheckIP is the whole-path probe's target",
			eps: func() []*Endpoint {
				e := ep("c2", "c2", "c2-n1", "192.168.20.11", 0, "10.2.0.0/16")
				e.Spec.HealthCheckIP = "10.2.1.1"
				bad := ep("c3", "c3", "c3-n1", "192.168.30.11", 0, "10.3.0.0/16")
				bad.Spec.HealthCheckIP = "n1"
				return []*Endpoint{e, bad}
			}(),
			remotes: []toposource.Remote{
				{ID: "c2", CIDRs: []netip.Prefix{netip.MustParsePrefix("10.2.0.0/16")}, GatewayIP: netip.MustParseAddr("192.168.20.11"), HealthCheckIP: netip.MustParseAddr("10.2.1.1"), From: "Endpoint submariner-operator/c2"},
				{ID: "c3", CIDRs: []netip.Prefix{netip.MustParsePrefix("10.3.0.0/16")}, GatewayIP: netip.MustParseAddr("192.168.30.11"), From: "Endpoint submariner-operator/c3"},
			},
			problems: []string{`Endpoint submariner-operator/c3: spec.healthCheckIP "n1" is not an IP address: the path to "c3" is not probed`},
		},
		{
			name: "IPv6-only: the dual-stack lists give the IPv6 gateway, cable address, subnets and health-check IP",
			eps: func() []*Endpoint {
				l := ep("c1", "c1", "c1-n1", "", 0, "fd00:1::/56", "fd00:101::/112")
				l.Spec.PrivateIPs = []string{"fd00:10::11"}
				r := ep("c2", "c2", "c2-n1", "", 0, "fd00:2::/56", "fd00:102::/112")
				r.Spec.PrivateIPs, r.Spec.HealthCheckIPs = []string{"fd00:20::11"}, []string{"fd00:2:0:1::1"}
				return []*Endpoint{l, r}
			}(),
			gateway: toposource.Gateway{Name: "c1-n1", IP6: netip.MustParseAddr("fd00:10::11"), From: "Endpoint submariner-operator/c1"},
			remotes: []toposource.Remote{{
				ID: "c2", CIDRs: []netip.Prefix{netip.MustParsePrefix("fd00:2::/56"), netip.MustParsePrefix("fd00:102::/112")},
				GatewayIP6: netip.MustParseAddr("fd00:20::11"), HealthCheckIP6: netip.MustParseAddr("fd00:2:0:1::1"), From: "Endpoint submariner-operator/c2",
			}},
		},
		{
			name: "dual stack: one address per family from the list, IPv4 from the list before the single field",
			eps: func() []*Endpoint {
				r := ep("c2", "c2", "c2-n1", "192.168.20.99", 0, "10.2.0.0/16", "fd00:2::/56")
				r.Spec.PrivateIPs = []string{"fd00:20::11", "192.168.20.11"}
				r.Spec.HealthCheckIP, r.Spec.HealthCheckIPs = "10.2.1.1", []string{"fd00:2:0:1::1"}
				return []*Endpoint{r}
			}(),
			remotes: []toposource.Remote{{
				ID: "c2", CIDRs: []netip.Prefix{netip.MustParsePrefix("10.2.0.0/16"), netip.MustParsePrefix("fd00:2::/56")},
				GatewayIP: netip.MustParseAddr("192.168.20.11"), GatewayIP6: netip.MustParseAddr("fd00:20::11"),
				HealthCheckIP: netip.MustParseAddr("10.2.1.1"), HealthCheckIP6: netip.MustParseAddr("fd00:2:0:1::1"), From: "Endpoint submariner-operator/c2",
			}},
		},
		{
			name: "NAT: publicIPs per family",
			eps: func() []*Endpoint {
				r := ep("c2", "c2", "c2-n1", "192.168.20.11", 0, "fd00:2::/56")
				r.Spec.NATEnabled, r.Spec.PrivateIPs, r.Spec.PublicIPs = true, []string{"fd00:20::11"}, []string{"2001:db8::20"}
				return []*Endpoint{r}
			}(),
			remotes: []toposource.Remote{{ID: "c2", CIDRs: []netip.Prefix{netip.MustParsePrefix("fd00:2::/56")}, GatewayIP6: netip.MustParseAddr("2001:db8::20"), From: "Endpoint submariner-operator/c2 (public_ip)"}},
		},
		{
			name: "a malformed list entry is named, the other family still used",
			eps: func() []*Endpoint {
				r := ep("c2", "c2", "c2-n1", "", 0, "fd00:2::/56")
				r.Spec.PrivateIPs, r.Spec.HealthCheckIPs = []string{"gw6", "fd00:20::11"}, []string{"fe80::1%eth0"}
				return []*Endpoint{r}
			}(),
			remotes: []toposource.Remote{{ID: "c2", CIDRs: []netip.Prefix{netip.MustParsePrefix("fd00:2::/56")}, GatewayIP6: netip.MustParseAddr("fd00:20::11"), From: "Endpoint submariner-operator/c2"}},
			problems: []string{
				`Endpoint submariner-operator/c2: spec.healthCheckIPs[0] "fe80::1%eth0" is not a global unicast address: the path to "c2" is not probed`,
				`Endpoint submariner-operator/c2: spec.privateIPs[0] "gw6" is not an IP address`,
			},
		},
		{
			name:     "a remote without any private address has no cable peer",
			eps:      []*Endpoint{ep("c2", "c2", "c2-n1", "", 0, "10.2.0.0/16")},
			remotes:  []toposource.Remote{{ID: "c2", CIDRs: []netip.Prefix{netip.MustParsePrefix("10.2.0.0/16")}, From: "Endpoint submariner-operator/c2"}},
			problems: []string{`Endpoint submariner-operator/c2: no address in spec.privateIPs and spec.private_ip: the cable cannot reach remote "c2"`},
		},
		{
			name:     "local Endpoint without hostname names no gateway",
			eps:      []*Endpoint{ep("c1", "c1", "", "192.168.10.11", 0, "10.1.0.0/16")},
			problems: []string{"Endpoint submariner-operator/c1 has no spec.hostname: no gateway"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			top := build("c1", nil, tt.eps)
			if top.Gateway != tt.gateway {
				t.Errorf("gateway = %+v, want %+v", top.Gateway, tt.gateway)
			}
			if !reflect.DeepEqual(top.Remotes, tt.remotes) {
				t.Errorf("remotes = %+v\nwant %+v", top.Remotes, tt.remotes)
			}
			if !reflect.DeepEqual(top.Problems, tt.problems) {
				t.Errorf("problems = %q\nwant %q", top.Problems, tt.problems)
			}
		})
	}
}

// An older Endpoint's removal leaves the newer one's view: the view is a
// function of the set, not of the event order.
func TestOlderEndpointRemovalKeepsNewer(t *testing.T) {
	old := ep("c2-old", "c2", "c2-n1", "192.168.20.11", 0, "10.2.0.0/16")
	cur := ep("c2-new", "c2", "c2-n2", "192.168.20.12", time.Second, "10.2.0.0/16")
	both := build("c1", nil, []*Endpoint{cur, old})
	after := build("c1", nil, []*Endpoint{cur})
	if !reflect.DeepEqual(both.Remotes, after.Remotes) || after.Remotes[0].GatewayIP != netip.MustParseAddr("192.168.20.12") {
		t.Errorf("with both %+v, after the old one's removal %+v", both.Remotes, after.Remotes)
	}
	// Same creation time: the name decides, identically on every node.
	a := ep("c2-a", "c2", "c2-n1", "192.168.20.11", 0, "10.2.0.0/16")
	b := ep("c2-b", "c2", "c2-n2", "192.168.20.12", 0, "10.2.0.0/16")
	if x, y := newest([]*Endpoint{a, b})["c2"], newest([]*Endpoint{b, a})["c2"]; x != b || y != b {
		t.Errorf("tie broken differently by order: %s vs %s", x.Name, y.Name)
	}
}

func TestStripEndpoint(t *testing.T) {
	e := ep("c2", "c2", "c2-n1", "192.168.20.11", 0, "10.2.0.0/16")
	e.Labels = map[string]string{"submariner-io/clusterID": "c2"}
	e.Annotations = map[string]string{"kubectl.kubernetes.io/last-applied-configuration": strings.Repeat("x", 2048)}
	e.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "submariner-gateway"}}
	got, _ := stripEndpoint(e)
	g := got.(*Endpoint)
	if g.Labels != nil || g.Annotations != nil || g.ManagedFields != nil {
		t.Errorf("metadata kept: %+v", g.ObjectMeta)
	}
	if g.Name != "c2" || !g.CreationTimestamp.Equal(&e.CreationTimestamp) || !reflect.DeepEqual(g.Spec, e.Spec) {
		t.Errorf("stripped too much: %+v", g)
	}
}
