package config

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

// testEnv is a fixed environment so results do not depend on the machine.
func testEnv(nodeName, hostname string) Env {
	return Env{
		Getenv: func(k string) string {
			if k == "NODE_NAME" {
				return nodeName
			}
			return ""
		},
		Hostname: func() (string, error) {
			if hostname == "" {
				return "", errors.New("no hostname")
			}
			return hostname, nil
		},
	}
}

func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseValidFullExample(t *testing.T) {
	cfg, err := ParseWith(readTestdata(t, "valid.yaml"), testEnv("ignored", "ignored"))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if cfg.NodeName != "c1-n2" {
		t.Errorf("NodeName = %q, want c1-n2 (file wins over env)", cfg.NodeName)
	}
	want := Parsed{
		NodeIP:       netip.MustParseAddr("192.168.10.12"),
		PodCIDRs:     []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")},
		ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("10.101.0.0/16")},
		Nodes: []ParsedNode{
			{Name: "c1-n1", IP: netip.MustParseAddr("192.168.10.11")},
			{Name: "c1-n2", IP: netip.MustParseAddr("192.168.10.12")},
		},
		Remotes: []ParsedRemote{{
			ID:           "c2",
			PodCIDRs:     []netip.Prefix{netip.MustParsePrefix("10.2.0.0/16")},
			ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("10.102.0.0/16")},
			GatewayIP:    netip.MustParseAddr("192.168.20.11"),
		}},
		VTEPCIDR:   netip.MustParsePrefix("240.0.0.0/8"),
		CableCIDR:  netip.MustParsePrefix("241.0.0.0/8"),
		VTEPCIDR6:  netip.MustParsePrefix("fd57:6566:7400::/96"),
		CableCIDR6: netip.MustParsePrefix("fd57:6566:7400:1::/96"),
	}
	if !reflect.DeepEqual(cfg.Parsed, want) {
		t.Errorf("Parsed =\n%+v\nwant\n%+v", cfg.Parsed, want)
	}
	if cfg.IsGateway() {
		t.Error("c1-n2 must not be the gateway")
	}
}

func TestDefaults(t *testing.T) {
	cfg, err := ParseWith(readTestdata(t, "minimal.yaml"), testEnv("c1-n2", "host-a"))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	metrics := "127.0.0.1:9469"
	on := true
	want := Config{
		NodeName: "c1-n2",
		Cluster:  cfg.Cluster,
		Remotes:  cfg.Remotes,
		Cable:    "vxlan",
		VXLAN:    VXLAN{Name: "vx-weft", VNI: 100, Port: 4800, VTEPCIDR: "240.0.0.0/8", VTEPCIDR6: "fd57:6566:7400::/96"},
		CableVXLAN: VXLAN{
			Name: "vx-weft-cable", VNI: 101, Port: 4801, VTEPCIDR: "241.0.0.0/8", VTEPCIDR6: "fd57:6566:7400:1::/96",
		},
		PacketFilter:   "auto",
		MSS:            MSS{Mode: "pmtu"},
		RouteTable:     240,
		RulePriority:   240,
		Socket:         "/run/weft/weft.sock",
		SpoolDir:       "/run/weft/spool",
		StateDir:       "/run/weft",
		MetricsAddress: &metrics,
		ResyncInterval: Duration{30 * time.Second},
		HealthCheck:    HealthCheck{Enabled: &on, Protocol: HealthCheckICMP, Port: 4803, Interval: Duration{400 * time.Millisecond}, FastInterval: Duration{50 * time.Millisecond}, LossThreshold: 3},
		Topology:       "file",
		Kubernetes: Kubernetes{
			Endpoints: "submariner", Namespace: "submariner-operator", GatewayLabel: "weft.dev/gateway",
			Lease: Lease{Duration{6 * time.Second}, Duration{4 * time.Second}, Duration{time.Second}},
		},
		Broker: Broker{Namespace: "weft-broker"},
		Parsed: cfg.Parsed,
	}
	if !reflect.DeepEqual(*cfg, want) {
		t.Errorf("defaults =\n%+v\nwant\n%+v", *cfg, want)
	}
	// nodeIP is taken from cluster.nodes when this node is listed.
	if got := cfg.Parsed.NodeIP; got != netip.MustParseAddr("192.168.10.12") {
		t.Errorf("Parsed.NodeIP = %v, want 192.168.10.12 from cluster.nodes", got)
	}
	if cfg.Metrics() != "127.0.0.1:9469" {
		t.Errorf("Metrics() = %q", cfg.Metrics())
	}
}

func TestDefaultNodeName(t *testing.T) {
	data := readTestdata(t, "minimal.yaml")
	tests := []struct {
		name     string
		env      Env
		wantName string
		wantIP   netip.Addr // invalid = resolved at run time
		wantErr  string
	}{
		{"env wins over hostname", testEnv("c1-n1", "host-a"), "c1-n1", netip.MustParseAddr("192.168.10.11"), ""},
		{"hostname when env empty", testEnv("", "c1-n2"), "c1-n2", netip.MustParseAddr("192.168.10.12"), ""},
		{"not listed leaves nodeIP to run time", testEnv("", "other"), "other", netip.Addr{}, ""},
		{"neither env nor hostname", testEnv("", ""), "", netip.Addr{}, "nodeName"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := ParseWith(data, tc.env)
			if tc.wantErr != "" {
				assertPaths(t, err, []string{tc.wantErr})
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.NodeName != tc.wantName || cfg.Parsed.NodeIP != tc.wantIP {
				t.Errorf("got (%q, %v), want (%q, %v)", cfg.NodeName, cfg.Parsed.NodeIP, tc.wantName, tc.wantIP)
			}
		})
	}
}

func TestExplicitNodeIPWins(t *testing.T) {
	doc := loadDoc(t, "minimal.yaml")
	set(t, doc, "nodeName", "c1-n2")
	set(t, doc, "nodeIP", "192.168.10.99")
	cfg, err := ParseWith(render(t, doc), testEnv("", ""))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Parsed.NodeIP != netip.MustParseAddr("192.168.10.99") {
		t.Errorf("Parsed.NodeIP = %v", cfg.Parsed.NodeIP)
	}
}

func TestMetricsAddress(t *testing.T) {
	tests := []struct {
		value any // nil = key absent
		want  string
	}{
		{nil, "127.0.0.1:9469"},
		{"", ""},
		{"0.0.0.0:9000", "0.0.0.0:9000"},
	}
	for _, tc := range tests {
		doc := loadDoc(t, "minimal.yaml")
		if tc.value != nil {
			set(t, doc, "metricsAddress", tc.value)
		}
		cfg, err := ParseWith(render(t, doc), testEnv("c1-n1", ""))
		if err != nil {
			t.Fatalf("%v: %v", tc.value, err)
		}
		if cfg.Metrics() != tc.want {
			t.Errorf("metricsAddress %v: Metrics() = %q, want %q", tc.value, cfg.Metrics(), tc.want)
		}
	}
	// An explicit null is the same as absent.
	cfg, err := ParseWith(append(readTestdata(t, "minimal.yaml"), "metricsAddress: null\n"...), testEnv("c1-n1", ""))
	if err != nil || cfg.Metrics() != DefaultMetricsAddress {
		t.Errorf("metricsAddress: null → %v, %v", cfg, err)
	}
}

func TestJSONAccepted(t *testing.T) {
	// Tab indentation is invalid YAML but common in JSON.
	data := []byte("{\n\t\"nodeName\": \"c1-n1\",\n\t\"cluster\": {\n\t\t\"id\": \"c1\",\n\t\t\"podCIDRs\": [\"10.1.0.0/16\"],\n\t\t\"gateway\": \"c1-n1\",\n\t\t\"nodes\": [{\"name\": \"c1-n1\", \"ip\": \"192.168.10.11\"}]\n\t},\n\t\"cable\": \"none\",\n\t\"remotes\": [{\"id\": \"c2\", \"podCIDRs\": [\"10.2.0.0/16\"]}],\n\t\"resyncInterval\": \"5s\"\n}\n")
	cfg, err := ParseWith(data, testEnv("", ""))
	if err != nil {
		t.Fatalf("Parse JSON: %v", err)
	}
	if cfg.NodeName != "c1-n1" || cfg.Cable != "none" || cfg.ResyncInterval.Duration != 5*time.Second || len(cfg.Parsed.Remotes) != 1 {
		t.Errorf("unexpected config %+v", cfg)
	}
	if cfg.Parsed.Remotes[0].GatewayIP.IsValid() {
		t.Error("gatewayIP should stay unset with cable none")
	}

	// JSON is strict about types: no YAML-style coercion of numbers.
	_, err = ParseWith([]byte(`{"nodeName": 5}`), testEnv("", ""))
	assertPathsContain(t, err, "nodeName")
}

func TestYAMLScalarsCoercedToStrings(t *testing.T) {
	doc := loadDoc(t, "minimal.yaml")
	data := strings.Replace(string(render(t, doc)), "id: c1", "id: 1", 1)
	cfg, err := ParseWith([]byte(data), testEnv("c1-n1", ""))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if cfg.Cluster.ID != "1" {
		t.Errorf("cluster.id = %q, want \"1\"", cfg.Cluster.ID)
	}
}

func TestUnknownFieldsRejected(t *testing.T) {
	tests := []struct {
		name  string
		extra string
		want  []string
	}{
		{"top level", "nodename: x\n", []string{"nodename"}},
		{"wrong case", "NodeName: x\n", []string{"NodeName"}},
		{"nested", "mss: {mode: pmtu, clamp: true}\n", []string{"mss.clamp"}},
		{"in list", "remotes:\n  - {id: c2, podCIDRs: [10.2.0.0/16], gatewayIP: 1.2.3.4, gateway: x}\n", []string{"remotes[0].gateway"}},
		{"several", "foo: 1\nvxlan: {bar: 2}\n", []string{"foo", "vxlan.bar"}},
	}
	base := readTestdata(t, "minimal.yaml")
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data := string(base)
			if strings.HasPrefix(tc.extra, "remotes:") {
				data = data[:strings.Index(data, "remotes:")]
			}
			_, err := ParseWith([]byte(data+tc.extra), testEnv("c1-n1", ""))
			assertPaths(t, err, tc.want)
			if !strings.Contains(err.Error(), tc.want[0]+": unknown field") {
				t.Errorf("error %q does not say %q: unknown field", err, tc.want[0])
			}
		})
	}
}

func TestSyntaxErrors(t *testing.T) {
	for _, data := range []string{"", "   \n", "cluster: [", "- a\n- b\n", "cluster: {id: a}\ncluster: {id: b}\n", "null\n", "42"} {
		if _, err := ParseWith([]byte(data), testEnv("n", "")); err == nil {
			t.Errorf("%q: no error", data)
		}
	}
}

func TestDuration(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{`"30s"`, 30 * time.Second, false},
		{`"1m30s"`, 90 * time.Second, false},
		{`"250ms"`, 250 * time.Millisecond, false},
		{`null`, 0, false},
		{`30`, 0, true},
		{`"30"`, 0, true},
		{`"soon"`, 0, true},
		{`true`, 0, true},
		{`{}`, 0, true},
	}
	for _, tc := range tests {
		var d Duration
		err := d.UnmarshalJSON([]byte(tc.in))
		if (err != nil) != tc.wantErr || d.Duration != tc.want {
			t.Errorf("%s: got (%v, %v), want (%v, err=%v)", tc.in, d.Duration, err, tc.want, tc.wantErr)
		}
	}
	b, err := Duration{90 * time.Second}.MarshalJSON()
	if err != nil || string(b) != `"1m30s"` {
		t.Errorf("MarshalJSON = %s, %v", b, err)
	}
	// Through the file, the error names the field.
	for _, v := range []string{"30", "soon", "0.5s"} {
		doc := loadDoc(t, "minimal.yaml")
		data := string(render(t, doc)) + "resyncInterval: " + v + "\n"
		_, err := ParseWith([]byte(data), testEnv("c1-n1", ""))
		assertPaths(t, err, []string{"resyncInterval"})
	}
}

func TestInvalid(t *testing.T) {
	tests := []struct {
		name   string
		muts   []mutation
		want   []string // exact field paths, in order
		reason string   // substring of the first error's text
	}{
		{"cluster id missing", []mutation{{"cluster.id", ""}}, []string{"cluster.id"}, "required"},
		{"no pod CIDRs", []mutation{{"cluster.podCIDRs", []any{}}}, []string{"cluster.podCIDRs"}, "at least one"},
		{"pod CIDR bad length", []mutation{{"cluster.podCIDRs", []any{"10.1.0.0/33"}}}, []string{"cluster.podCIDRs[0]"}, `cluster.podCIDRs[0]: "10.1.0.0/33" is not a CIDR`},
		{"pod CIDR IPv4-mapped", []mutation{{"cluster.podCIDRs", []any{"::ffff:10.1.0.0/112"}}}, []string{"cluster.podCIDRs[0]"}, "IPv4-mapped IPv6 CIDR (write the IPv4 CIDR 10.1.0.0/16)"},
		{"node IPv6 in ip", []mutation{{"cluster.nodes[0].ip", "fd00:10::11"}}, []string{"cluster.nodes[0].ip"}, "not an IPv4 address (an IPv6 address goes in cluster.nodes[0].ip6)"},
		{"node no address", []mutation{{"cluster.nodes[0].ip", ""}}, []string{"cluster.nodes[0].ip"}, "required (ip6 instead"},
		{"nodeIP6 IPv4", []mutation{{"nodeIP6", "192.168.10.12"}}, []string{"nodeIP6"}, "not an IPv6 address (an IPv4 address goes in nodeIP)"},
		{"vtepCIDR6 IPv4", []mutation{{"vxlan.vtepCIDR6", "242.0.0.0/8"}}, []string{"vxlan.vtepCIDR6"}, "not an IPv6 CIDR (the IPv4 range is vxlan.vtepCIDR)"},
		{"vtepCIDR6 too many host bits", []mutation{{"cableVxlan.vtepCIDR6", "fd57::/64"}}, []string{"cableVxlan.vtepCIDR6"}, "not /96../126"},
		{"vtepCIDR6 overlap", []mutation{{"cableVxlan.vtepCIDR6", "fd57:6566:7400::/112"}}, []string{"cableVxlan.vtepCIDR6"}, "overlaps vxlan.vtepCIDR6"},
		{"vtepCIDR IPv6", []mutation{{"vxlan.vtepCIDR", "fd57::/96"}}, []string{"vxlan.vtepCIDR"}, "not an IPv4 CIDR (an IPv6 range goes in vxlan.vtepCIDR6)"},
		{"pod CIDR host bits", []mutation{{"cluster.podCIDRs", []any{"10.1.0.5/16"}}}, []string{"cluster.podCIDRs[0]"}, "host bits"},
		{"service CIDR garbage", []mutation{{"cluster.serviceCIDRs", []any{"10.101.0.0/16", "services"}}}, []string{"cluster.serviceCIDRs[1]"}, `"services" is not a CIDR`},
		{"remote CIDR bad", []mutation{{"remotes[0].podCIDRs", []any{"10.2.0.0/16", "10.2.0.0/33"}}}, []string{"remotes[0].podCIDRs[1]"}, `remotes[0].podCIDRs[1]: "10.2.0.0/33" is not a CIDR`},
		{"remote no pod CIDRs", []mutation{{"remotes[0].podCIDRs", []any{}}}, []string{"remotes[0].podCIDRs"}, "at least one"},
		{"remote id missing", []mutation{{"remotes[0].id", ""}}, []string{"remotes[0].id"}, "required"},
		{"remote id is local", []mutation{{"remotes[0].id", "c1"}}, []string{"remotes[0].id"}, "local cluster.id"},
		{"remote id duplicate", []mutation{{"remotes[1].id", "c2"}}, []string{"remotes[1].id"}, "remotes[0].id"},
		{"remote overlaps local", []mutation{{"remotes[0].podCIDRs", []any{"10.1.128.0/17"}}}, []string{"remotes[0].podCIDRs[0]"}, "overlaps cluster.podCIDRs[0]"},
		{"remotes overlap each other", []mutation{{"remotes[1].serviceCIDRs", []any{"10.102.5.0/24"}}}, []string{"remotes[1].serviceCIDRs[0]"}, "overlaps remotes[0].serviceCIDRs[0]"},
		{"gatewayIP missing with cable vxlan", []mutation{{"remotes[0].gatewayIP", ""}}, []string{"remotes[0].gatewayIP"}, "required with cable: vxlan"},
		{"gatewayIP IPv6", []mutation{{"remotes[0].gatewayIP", "fe80::1"}}, []string{"remotes[0].gatewayIP"}, "link-local"},
		{"gatewayIP garbage with cable none", []mutation{{"cable", "none"}, {"remotes[0].gatewayIP", "gw"}}, []string{"remotes[0].gatewayIP"}, "not an IP"},
		{"gateway missing", []mutation{{"cluster.gateway", ""}}, []string{"cluster.gateway"}, "required"},
		{"gateway unknown", []mutation{{"cluster.gateway", "c1-n9"}}, []string{"cluster.gateway"}, "not the name of any of cluster.nodes"},
		{"no nodes", []mutation{{"cluster.nodes", []any{}}}, []string{"cluster.nodes"}, "at least one"},
		{"node name duplicate", []mutation{{"cluster.nodes[1].name", "c1-n1"}}, []string{"cluster.nodes[1].name"}, "cluster.nodes[0].name"},
		{"node name missing", []mutation{{"cluster.nodes[1].name", ""}}, []string{"cluster.nodes[1].name"}, "required"},
		{"node IP duplicate", []mutation{{"cluster.nodes[1].ip", "192.168.10.11"}}, []string{"cluster.nodes[1].ip"}, "cluster.nodes[0].ip"},
		{"node IP garbage", []mutation{{"cluster.nodes[0].ip", "300.1.1.1"}}, []string{"cluster.nodes[0].ip"}, "not an IP"},
		{"node IP multicast", []mutation{{"cluster.nodes[0].ip", "224.0.0.1"}}, []string{"cluster.nodes[0].ip"}, "unicast"},
		{"nodeIP garbage", []mutation{{"nodeIP", "node"}}, []string{"nodeIP"}, "not an IP"},
		{"cable unknown", []mutation{{"cable", "wireguard"}}, []string{"cable"}, "not one of vxlan, none"},
		{"packetFilter unknown", []mutation{{"packetFilter", "ebpf"}}, []string{"packetFilter"}, "not one of"},
		{"iptablesMode unknown", []mutation{{"iptablesMode", "auto"}}, []string{"iptablesMode"}, "not one of"},
		{"mss mode unknown", []mutation{{"mss.mode", "clamp"}}, []string{"mss.mode"}, "not one of pmtu, fixed"},
		{"mss fixed too small", []mutation{{"mss.mode", "fixed"}, {"mss.value", 100}}, []string{"mss.value"}, "outside 536..65495"},
		{"mss fixed without value", []mutation{{"mss.mode", "fixed"}, {"mss.value", 0}}, []string{"mss.value"}, "outside"},
		{"mss value with pmtu", []mutation{{"mss.value", 1400}}, []string{"mss.value"}, "mode is pmtu"},
		{"vni too large", []mutation{{"vxlan.vni", 16777216}}, []string{"vxlan.vni"}, "outside 1..16777215"},
		{"vni not a number", []mutation{{"vxlan.vni", "one"}}, []string{"vxlan.vni"}, "expected an integer"},
		{"port out of range", []mutation{{"vxlan.port", 70000}}, []string{"vxlan.port"}, "out of range"},
		{"port negative", []mutation{{"cableVxlan.port", -1}}, []string{"cableVxlan.port"}, "out of range"},
		{"ifname too long", []mutation{{"vxlan.name", "vx-weft-too-long"}}, []string{"vxlan.name"}, "longer than 15"},
		{"ifname slash", []mutation{{"vxlan.name", "vx/weft"}}, []string{"vxlan.name"}, "not a valid interface name"},
		{"ifname space", []mutation{{"cableVxlan.name", "vx cable"}}, []string{"cableVxlan.name"}, "not a valid interface name"},
		{"cniInterface bad", []mutation{{"cniInterface", "a:b"}}, []string{"cniInterface"}, "not a valid interface name"},
		{"same device names", []mutation{{"cableVxlan.name", "vx-weft"}}, []string{"cableVxlan.name"}, "also vxlan.name"},
		{"same VNIs", []mutation{{"cableVxlan.vni", 100}}, []string{"cableVxlan.vni"}, "also vxlan.vni"},
		{"same ports", []mutation{{"cableVxlan.port", 4800}}, []string{"cableVxlan.port"}, "also vxlan.port"},
		{"same VTEP CIDRs", []mutation{{"cableVxlan.vtepCIDR", "240.0.0.0/8"}}, []string{"cableVxlan.vtepCIDR"}, "overlaps vxlan.vtepCIDR"},
		{"VTEP CIDR overlaps pods", []mutation{{"vxlan.vtepCIDR", "10.0.0.0/8"}}, []string{"vxlan.vtepCIDR"}, "overlaps cluster.podCIDRs[0]"},
		{"VTEP CIDR not a CIDR", []mutation{{"vxlan.vtepCIDR", "240.0.0.0"}}, []string{"vxlan.vtepCIDR"}, "not a CIDR"},
		{"VTEP CIDR too small", []mutation{{"vxlan.vtepCIDR", "240.0.0.0/31"}}, []string{"vxlan.vtepCIDR"}, "too few host bits"},
		{"mtu too small", []mutation{{"vxlan.mtu", 50}}, []string{"vxlan.mtu"}, "outside 68..65535"},
		{"mtu too large", []mutation{{"cableVxlan.mtu", 70000}}, []string{"cableVxlan.mtu"}, "outside"},
		{"routeTable main", []mutation{{"routeTable", 254}}, []string{"routeTable"}, "main table"},
		{"routeTable local", []mutation{{"routeTable", 255}}, []string{"routeTable"}, "local table"},
		{"routeTable default", []mutation{{"routeTable", 253}}, []string{"routeTable"}, "default table"},
		{"routeTable negative", []mutation{{"routeTable", -1}}, []string{"routeTable"}, "outside"},
		{"routeTable too large", []mutation{{"routeTable", int64(1) << 32}}, []string{"routeTable"}, "outside"},
		{"rulePriority main", []mutation{{"rulePriority", 32766}}, []string{"rulePriority"}, "outside 1..32765"},
		{"rulePriority negative", []mutation{{"rulePriority", -3}}, []string{"rulePriority"}, "outside"},
		{"resync too short", []mutation{{"resyncInterval", "500ms"}}, []string{"resyncInterval"}, "shorter than 1s"},
		{"resync number", []mutation{{"resyncInterval", 30}}, []string{"resyncInterval"}, "not a duration"},
		{"socket relative", []mutation{{"socket", "weft.sock"}}, []string{"socket"}, "absolute"},
		{"metrics address garbage", []mutation{{"metricsAddress", "metrics"}}, []string{"metricsAddress"}, "host:port"},
		{"healthCheckIP garbage", []mutation{{"remotes[0].healthCheckIP", "gw"}}, []string{"remotes[0].healthCheckIP"}, "not an IP"},
		{"healthCheckIP outside the remote", []mutation{{"remotes[0].healthCheckIP", "10.3.0.1"}}, []string{"remotes[0].healthCheckIP"}, "not inside any of remotes[0].podCIDRs"},
		{"healthCheck port is the VXLAN port", []mutation{{"healthCheck.port", 4800}}, []string{"healthCheck.port"}, "also vxlan.port"},
		{"healthCheck port out of range", []mutation{{"healthCheck.port", 70000}}, []string{"healthCheck.port"}, "out of range"},
		{"healthCheck interval too short", []mutation{{"healthCheck.interval", "1ms"}}, []string{"healthCheck.interval"}, "outside 10ms..1m"},
		{"healthCheck interval number", []mutation{{"healthCheck.interval", 100}}, []string{"healthCheck.interval"}, "not a duration"},
		{"healthCheck lossThreshold negative", []mutation{{"healthCheck.lossThreshold", -1}}, []string{"healthCheck.lossThreshold"}, "outside 1..100"},
		{"healthCheck protocol unknown", []mutation{{"healthCheck.protocol", "tcp"}}, []string{"healthCheck.protocol"}, `"tcp" is not one of icmp, udp`},
		{"healthCheck fastInterval above interval", []mutation{{"healthCheck.fastInterval", "1s"}}, []string{"healthCheck.fastInterval"}, "outside 10ms..healthCheck.interval (400ms)"},
		{"healthCheck fastInterval too short", []mutation{{"healthCheck.fastInterval", "1ms"}}, []string{"healthCheck.fastInterval"}, "outside 10ms..healthCheck.interval"},
		{"healthCheck enabled not a bool", []mutation{{"healthCheck.enabled", "yes please"}}, []string{"healthCheck.enabled"}, "expected true or false"},
		{"list where mapping", []mutation{{"cluster", []any{"c1"}}}, []string{"cluster"}, "expected a mapping"},
		{"string where list", []mutation{{"cluster.podCIDRs", "10.1.0.0/16"}}, []string{"cluster.podCIDRs"}, "expected a list"},
		{"every problem at once", []mutation{
			{"cluster.id", ""},
			{"remotes[0].podCIDRs", []any{"10.2.0.0/33"}},
			{"cable", "x"},
			{"routeTable", 254},
		}, []string{"cluster.id", "cable", "remotes[0].podCIDRs[0]", "routeTable"}, "cluster.id: required"},
	}
	if len(tests) < 25 {
		t.Fatal("keep at least 25 invalid cases")
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			doc := loadDoc(t, "valid.yaml")
			// A second remote so duplicate/overlap cases have a partner.
			set(t, doc, "remotes", append(doc["remotes"].([]any), map[string]any{
				"id": "c3", "podCIDRs": []any{"10.3.0.0/16"}, "serviceCIDRs": []any{"10.103.0.0/16"}, "gatewayIP": "192.168.30.11",
			}))
			if _, err := ParseWith(render(t, doc), testEnv("", "")); err != nil {
				t.Fatalf("base config invalid: %v", err)
			}
			ve := refused(t, doc, tc.muts, tc.want)
			if ve != nil && !strings.Contains(ve.Errors[0].Error(), tc.reason) {
				t.Errorf("first error %q does not contain %q", ve.Errors[0].Error(), tc.reason)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "weft.yaml")
	if err := os.WriteFile(p, readTestdata(t, "valid.yaml"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadWith(p, testEnv("", ""))
	if err != nil || cfg.Cluster.ID != "c1" {
		t.Fatalf("Load = %v, %v", cfg, err)
	}
	if _, err := LoadWith(filepath.Join(dir, "missing.yaml"), testEnv("", "")); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("cluster: {id: \"\"}\n"), 0o600)
	_, err = LoadWith(bad, testEnv("n", ""))
	var ve *ValidationError
	if !errors.As(err, &ve) || !strings.Contains(err.Error(), bad) {
		t.Errorf("invalid file: %v (want a ValidationError naming the file)", err)
	}
}

// assertPaths checks that err is a *ValidationError with exactly these paths.
func assertPaths(t *testing.T, err error, want []string) {
	t.Helper()
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("error = %v (%T), want a *ValidationError with paths %v", err, err, want)
	}
	if got := ve.Paths(); !reflect.DeepEqual(got, want) {
		t.Fatalf("paths = %q, want %q\nerror:\n%v", got, want, err)
	}
}

func assertPathsContain(t *testing.T, err error, path string) {
	t.Helper()
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("error = %v, want a *ValidationError", err)
	}
	for _, p := range ve.Paths() {
		if p == path {
			return
		}
	}
	t.Fatalf("paths %q lack %q", ve.Paths(), path)
}

// loadDoc reads a testdata file as a generic document to mutate.
func loadDoc(t *testing.T, name string) map[string]any {
	t.Helper()
	var doc map[string]any
	if err := yaml.Unmarshal(readTestdata(t, name), &doc); err != nil {
		t.Fatal(err)
	}
	return doc
}

func render(t *testing.T, doc map[string]any) []byte {
	t.Helper()
	b, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// set assigns value at a path such as "remotes[0].podCIDRs", creating
// intermediate mappings.
func set(t *testing.T, doc map[string]any, path string, value any) {
	t.Helper()
	var cur any = doc
	parts := strings.Split(path, ".")
	for i, part := range parts {
		key, idx := part, -1
		if open := strings.Index(part, "["); open >= 0 {
			key = part[:open]
			n, err := strconv.Atoi(strings.TrimSuffix(part[open+1:], "]"))
			if err != nil {
				t.Fatalf("bad path %q", path)
			}
			idx = n
		}
		m, ok := cur.(map[string]any)
		if !ok {
			t.Fatalf("path %q: %q is not a mapping", path, key)
		}
		last := i == len(parts)-1
		if idx < 0 {
			if last {
				m[key] = value
				return
			}
			if _, ok := m[key]; !ok {
				m[key] = map[string]any{}
			}
			cur = m[key]
			continue
		}
		l, ok := m[key].([]any)
		if !ok || idx >= len(l) {
			t.Fatalf("path %q: no element %d", path, idx)
		}
		if last {
			l[idx] = value
			return
		}
		cur = l[idx]
	}
}
