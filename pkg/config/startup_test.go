package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// LoadStartup always gives weftd somewhere to serve from: the file's own
// usable keys when it decodes at all, else the flags (Env), else DESIGN.md's
// defaults.
func TestLoadStartup(t *testing.T) {
	flags := testEnv("env-node", "host")
	flags.Socket, flags.SpoolDir, flags.StateDir = "/flag/weft.sock", "/flag/spool", "/flag"
	none := ""
	flags.MetricsAddress = &none
	cases := []struct {
		name    string
		content *string
		env     Env
		want    Startup
		valid   bool
	}{
		{"missing, no flags", nil, testEnv("env-node", "host"),
			Startup{NodeName: "env-node", Socket: DefaultSocket, SpoolDir: DefaultSpoolDir, StateDir: DefaultStateDir, MetricsAddress: DefaultMetricsAddress}, false},
		{"missing, flags", nil, flags,
			Startup{NodeName: "env-node", Socket: "/flag/weft.sock", SpoolDir: "/flag/spool", StateDir: "/flag", MetricsAddress: ""}, false},
		{"unparsable", ptr("socket: /x.sock\ncluster: [\n"), flags,
			Startup{NodeName: "env-node", Socket: "/flag/weft.sock", SpoolDir: "/flag/spool", StateDir: "/flag", MetricsAddress: ""}, false},
		{"invalid, usable keys salvaged", ptr("nodeName: n1\ncluster: {id: c9, podCIDRs: [10.0.0.0/33]}\nsocket: /file/weft.sock\nspoolDir: relative/spool\nmetricsAddress: 127.0.0.1:9999\nbogus: 1\n"), flags,
			Startup{NodeName: "n1", ClusterID: "c9", Socket: "/file/weft.sock", SpoolDir: "/flag/spool", StateDir: "/flag", MetricsAddress: "127.0.0.1:9999"}, false},
		{"invalid, metrics garbage not salvaged", ptr("cluster: {id: c9}\nmetricsAddress: metrics\n"), flags,
			Startup{NodeName: "env-node", ClusterID: "c9", Socket: "/flag/weft.sock", SpoolDir: "/flag/spool", StateDir: "/flag", MetricsAddress: ""}, false},
		{"valid: flags are defaults for keys the file leaves out", ptr(string(readTestdata(t, "minimal.yaml")) + "stateDir: /file/state\n"), flags,
			Startup{NodeName: "env-node", ClusterID: "c1", Socket: "/flag/weft.sock", SpoolDir: "/flag/spool", StateDir: "/file/state", MetricsAddress: ""}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "weft.yaml")
			if tc.content != nil {
				if err := os.WriteFile(p, []byte(*tc.content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			cfg, st, err := LoadStartup(p, tc.env)
			if (err == nil) != tc.valid || (cfg != nil) != tc.valid {
				t.Fatalf("cfg=%v err=%v, want valid=%v", cfg != nil, err, tc.valid)
			}
			if st != tc.want {
				t.Fatalf("startup = %+v\nwant      %+v", st, tc.want)
			}
			if tc.valid && len(st.Differences(cfg)) != 0 {
				t.Fatalf("a valid file's startup differs from it: %v", st.Differences(cfg))
			}
		})
	}
}

func ptr(s string) *string { return &s }

// Every problem names the field, the value found there and what to write.
func TestExplain(t *testing.T) {
	dir := t.TempDir()
	load := func(content string) error {
		p := filepath.Join(dir, "weft.yaml")
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := LoadWith(p, testEnv("c1-n1", ""))
		return err
	}
	base := string(readTestdata(t, "minimal.yaml"))
	cases := []struct {
		name    string
		err     func() error
		want    Problem // Fix: a substring
		problem int
	}{
		{"bad CIDR", func() error {
			return load(strings.Replace(base, "podCIDRs: [10.2.0.0/16]", "podCIDRs: [10.2.0.0/16, 10.3.0.0/33]", 1))
		}, Problem{Field: "remotes[0].podCIDRs[1]", Value: `"10.3.0.0/33"`, Reason: `"10.3.0.0/33" is not a CIDR`, Fix: "set remotes[0].podCIDRs[1] in " + dir + "/weft.yaml to an IPv4 or IPv6 CIDR"}, 0},
		{"number out of range", func() error { return load(base + "routeTable: 254\n") },
			Problem{Field: "routeTable", Value: "254", Reason: "254 is the kernel's main table", Fix: "other than 253, 254 and 255"}, 0},
		{"required and absent", func() error { return load(strings.Replace(base, "gateway: c1-n1", "", 1)) },
			Problem{Field: "cluster.gateway", Value: NotSet, Reason: "required", Fix: "one of cluster.nodes[].name"}, 0},
		{"unknown key", func() error { return load(base + "vxlan: {vnii: 7}\n") },
			Problem{Field: "vxlan.vnii", Value: "7", Reason: "unknown field", Fix: "known keys here: mtu, name, port, vni, vtepCIDR"}, 0},
		{"syntax", func() error { return load("nodeName: a\ncluster: {id: [\n") },
			Problem{Field: "line 2", Value: "cluster: {id: [", Fix: "correct the YAML syntax at line 2"}, 0},
		{"empty", func() error { return load("\n") },
			Problem{Field: "(file)", Reason: "configuration is empty", Fix: "write a YAML or JSON mapping"}, 0},
		{"unreadable", func() error { _, err := LoadWith(filepath.Join(dir, "nope.yaml"), testEnv("", "")); return err },
			Problem{Field: "--config", Value: filepath.Join(dir, "nope.yaml"), Fix: "create " + filepath.Join(dir, "nope.yaml")}, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ps := Explain(tc.err())
			if len(ps) <= tc.problem {
				t.Fatalf("problems = %+v", ps)
			}
			p := ps[tc.problem]
			if p.Field != tc.want.Field || p.Value != tc.want.Value || (tc.want.Reason != "" && !strings.Contains(p.Reason, tc.want.Reason)) || !strings.Contains(p.Fix, tc.want.Fix) {
				t.Fatalf("problem = %+v\nwant      %+v", p, tc.want)
			}
		})
	}
	if got := Explain(nil); got != nil {
		t.Fatalf("Explain(nil) = %v", got)
	}
}

func TestStartupDifferences(t *testing.T) {
	cfg, err := ParseWith(readTestdata(t, "minimal.yaml"), testEnv("c1-n1", ""))
	if err != nil {
		t.Fatal(err)
	}
	s := StartupOf(cfg)
	if d := s.Differences(cfg); len(d) != 0 {
		t.Fatalf("differences with itself: %v", d)
	}
	c2 := *cfg
	c2.Socket, c2.StateDir = "/elsewhere.sock", "/elsewhere"
	off := ""
	c2.MetricsAddress = &off
	c2.RouteTable = 250 // live: not a difference
	if d := s.Differences(&c2); !reflect.DeepEqual(d, []string{"socket", "stateDir", "metricsAddress"}) {
		t.Fatalf("differences = %v", d)
	}
}
