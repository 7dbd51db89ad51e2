package cniplugin

import (
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
)

func TestParseConfigDefaultsAndValues(t *testing.T) {
	tests := []struct {
		name  string
		stdin string
		want  func(c *Config) bool
	}{
		{"defaults", `{"cniVersion":"1.0.0","name":"n","type":"weft"}`, func(c *Config) bool {
			return c.Socket == DefaultSocket && c.SpoolDir == DefaultSpoolDir && c.FailPolicy == FailOpen &&
				c.Timeout == DefaultTimeout && c.LogFile == "" && c.SpoolLimit == DefaultSpoolLimit && c.Prev == nil && c.PrevResult == nil
		}},
		{"nulls are defaults", `{"cniVersion":"1.0.0","name":"n","socket":null,"timeout":null,"spoolLimit":null,"failPolicy":""}`, func(c *Config) bool {
			return c.Socket == DefaultSocket && c.Timeout == DefaultTimeout && c.SpoolLimit == DefaultSpoolLimit && c.FailPolicy == FailOpen
		}},
		{"all keys", `{"cniVersion":"1.1.0","name":"n","socket":"/s/w.sock","spoolDir":"/s/spool","failPolicy":"closed","timeout":"60s","logFile":"/var/log/weft.log","spoolLimit":7}`, func(c *Config) bool {
			return c.Socket == "/s/w.sock" && c.SpoolDir == "/s/spool" && c.FailPolicy == FailClosed &&
				c.Timeout == 60*time.Second && c.LogFile == "/var/log/weft.log" && c.SpoolLimit == 7
		}},
		{"sub-second timeout", `{"cniVersion":"1.0.0","name":"n","timeout":"250ms"}`, func(c *Config) bool { return c.Timeout == 250*time.Millisecond }},
		{"prevResult 0.3.1 converted", `{"cniVersion":"0.3.1","name":"n","prevResult":{"cniVersion":"0.3.1","interfaces":[{"name":"cni0"},{"name":"eth0","sandbox":"/x"}],"ips":[{"version":"4","interface":1,"address":"10.1.2.5/24","gateway":"10.1.2.1"}]}}`, func(c *Config) bool {
			return c.PrevResult != nil && c.Prev != nil && len(c.Prev.IPs) == 1 && c.Prev.IPs[0].Gateway.String() == "10.1.2.1" && c.Prev.Interfaces[1].Sandbox == "/x"
		}},
		{"attachments merged", `{"cniVersion":"1.1.0","name":"n","cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}],"cni.dev/attachments":[{"containerID":"a","ifname":"eth0"},{"containerID":"b","ifname":"eth0"}]}`, func(c *Config) bool {
			return reflect.DeepEqual(c.Attachments, []types.GCAttachment{{ContainerID: "a", IfName: "eth0"}, {ContainerID: "b", IfName: "eth0"}})
		}},
		{"unknown keys ignored", `{"cniVersion":"1.0.0","name":"n","runtimeConfig":{"x":1},"whatever":[1]}`, func(c *Config) bool { return c.Name == "n" }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseConfig([]byte(tc.stdin))
			if err != nil {
				t.Fatalf("ParseConfig: %v", err)
			}
			if !tc.want(c) {
				t.Errorf("unexpected config %+v", c)
			}
		})
	}
}

func TestParseConfigErrors(t *testing.T) {
	long := "/" + strings.Repeat("s", 120)
	tests := []struct {
		name     string
		stdin    string
		wantCode uint
		wantKey  string
	}{
		{"syntax", `{"name":`, types.ErrDecodingFailure, ""},
		{"failPolicy", `{"name":"n","failPolicy":"half"}`, types.ErrInvalidNetworkConfig, "failPolicy"},
		{"failPolicy type", `{"name":"n","failPolicy":1}`, types.ErrInvalidNetworkConfig, "failPolicy"},
		{"timeout", `{"name":"n","timeout":"2"}`, types.ErrInvalidNetworkConfig, "timeout"},
		{"timeout too long", `{"name":"n","timeout":"1m0.001s"}`, types.ErrInvalidNetworkConfig, "timeout"},
		{"socket relative", `{"name":"n","socket":"run/weft.sock"}`, types.ErrInvalidNetworkConfig, "socket"},
		{"socket too long", `{"name":"n","socket":"` + long + `"}`, types.ErrInvalidNetworkConfig, "socket"},
		{"socket type", `{"name":"n","socket":{}}`, types.ErrInvalidNetworkConfig, "socket"},
		{"spoolDir", `{"name":"n","spoolDir":"x"}`, types.ErrInvalidNetworkConfig, "spoolDir"},
		{"logFile", `{"name":"n","logFile":"x.log"}`, types.ErrInvalidNetworkConfig, "logFile"},
		{"spoolLimit negative", `{"name":"n","spoolLimit":-1}`, types.ErrInvalidNetworkConfig, "spoolLimit"},
		{"spoolLimit float", `{"name":"n","spoolLimit":1.5}`, types.ErrInvalidNetworkConfig, "spoolLimit"},
		{"spoolLimit huge", `{"name":"n","spoolLimit":99999999999}`, types.ErrInvalidNetworkConfig, "spoolLimit"},
		{"attachments type", `{"name":"n","cni.dev/attachments":"a"}`, types.ErrInvalidNetworkConfig, "cni.dev/attachments"},
		{"prevResult type", `{"cniVersion":"1.0.0","name":"n","prevResult":[]}`, types.ErrInvalidNetworkConfig, "prevResult"},
		{"prevResult address", `{"cniVersion":"1.0.0","name":"n","prevResult":{"ips":[{"address":"nope"}]}}`, types.ErrDecodingFailure, "prevResult"},
		{"prevResult unknown version", `{"cniVersion":"7.0.0","name":"n","prevResult":{}}`, types.ErrDecodingFailure, "prevResult"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseConfig([]byte(tc.stdin))
			var e *types.Error
			if !errors.As(err, &e) {
				t.Fatalf("ParseConfig = %+v, %v; want a *types.Error", c, err)
			}
			if e.Code != tc.wantCode || !strings.Contains(e.Msg, tc.wantKey) {
				t.Errorf("error %d %q, want code %d naming %q", e.Code, e.Msg, tc.wantCode, tc.wantKey)
			}
		})
	}
}

func TestPodFromArgs(t *testing.T) {
	tests := []struct {
		args, ns, name string
		wantErr        bool
	}{
		{"", "", "", false},
		{"IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;K8S_POD_UID=u", "shop", "web-0", false},
		{"K8S_POD_NAME=web-0;FOO=bar", "", "web-0", false}, // unknown keys ignored even without IgnoreUnknown
		{"K8S_POD_NAMESPACE=a;garbage", "", "", true},
		{"K8S_POD_NAME=a=b", "", "", true},
	}
	for _, tc := range tests {
		ns, name, err := PodFromArgs(tc.args)
		if ns != tc.ns || name != tc.name || (err != nil) != tc.wantErr {
			t.Errorf("PodFromArgs(%q) = %q, %q, %v", tc.args, ns, name, err)
		}
	}
}

// FuzzParseConfig: whatever stdin holds, ParseConfig never panics and either
// returns a CNI error with a configuration code, or a config that satisfies
// every documented bound.
func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{
		`{"cniVersion":"1.0.0","name":"n","type":"weft"}`,
		`{"cniVersion":"0.3.1","name":"n","failPolicy":"closed","timeout":"500ms","prevResult":{"interfaces":[{"name":"cni0"}],"ips":[{"version":"4","interface":0,"address":"10.1.2.5/24","gateway":"10.1.2.1"}]}}`,
		`{"cniVersion":"1.1.0","name":"n","cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data)
		if err != nil {
			var e *types.Error
			if !errors.As(err, &e) || (e.Code != types.ErrDecodingFailure && e.Code != types.ErrInvalidNetworkConfig) {
				t.Fatalf("error %v is not a code 6/7 CNI error", err)
			}
			if c != nil {
				t.Fatalf("config returned with error")
			}
			return
		}
		switch {
		case !filepath.IsAbs(c.Socket) || len(c.Socket) > maxSocketPath:
			t.Fatalf("socket %q", c.Socket)
		case !filepath.IsAbs(c.SpoolDir):
			t.Fatalf("spoolDir %q", c.SpoolDir)
		case c.LogFile != "" && !filepath.IsAbs(c.LogFile):
			t.Fatalf("logFile %q", c.LogFile)
		case c.FailPolicy != FailOpen && c.FailPolicy != FailClosed:
			t.Fatalf("failPolicy %q", c.FailPolicy)
		case c.Timeout <= 0 || c.Timeout > MaxTimeout:
			t.Fatalf("timeout %v", c.Timeout)
		case c.SpoolLimit < 1 || c.SpoolLimit > MaxSpoolLimit:
			t.Fatalf("spoolLimit %d", c.SpoolLimit)
		case (c.PrevResult == nil) != (c.Prev == nil):
			t.Fatalf("PrevResult %v but Prev %v", c.PrevResult, c.Prev)
		}
		if c.Prev != nil {
			// What ADD does with it must not panic either.
			fromResult(c.Prev)
			if err := c.PrevResult.PrintTo(discard{}); err != nil {
				t.Logf("print: %v", err)
			}
		}
	})
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
