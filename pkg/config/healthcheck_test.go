package config

import (
	"cmp"
	"net/netip"
	"testing"
	"time"
)

func TestHealthCheckParsed(t *testing.T) {
	tests := []struct {
		name     string
		muts     map[string]any
		on       bool
		interval time.Duration
		hcIP     string
		// protocol, fast, threshold: "" and 0 = the defaults
		protocol  string
		fast      time.Duration
		threshold int
	}{
		{"defaults", nil, true, 400 * time.Millisecond, "", "", 0, 0},
		{"disabled", map[string]any{"healthCheck.enabled": false}, false, 400 * time.Millisecond, "", "", 0, 0},
		{"tuned", map[string]any{"healthCheck.interval": "1s", "healthCheck.lossThreshold": 5, "healthCheck.port": 4900}, true, time.Second, "", "", 0, 5},
		{"udp", map[string]any{"healthCheck.protocol": "udp", "healthCheck.fastInterval": "100ms"}, true, 400 * time.Millisecond, "", "udp", 100 * time.Millisecond, 0},
		// The retry is never slower than the steady pace.
		{"short interval", map[string]any{"healthCheck.interval": "20ms"}, true, 20 * time.Millisecond, "", "", 20 * time.Millisecond, 0},
		{"remote health-check IP", map[string]any{"remotes[0].healthCheckIP": "10.2.0.1"}, true, 400 * time.Millisecond, "10.2.0.1", "", 0, 0},
		{"service-CIDR health-check IP", map[string]any{"remotes[0].healthCheckIP": "10.102.0.9"}, true, 400 * time.Millisecond, "10.102.0.9", "", 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			doc := loadDoc(t, "valid.yaml")
			for k, v := range tc.muts {
				set(t, doc, k, v)
			}
			cfg, err := ParseWith(render(t, doc), testEnv("", ""))
			if err != nil {
				t.Fatal(err)
			}
			h := cfg.HealthCheck
			if h.On() != tc.on || h.Interval.Duration != tc.interval {
				t.Errorf("healthCheck = on %v interval %s, want %v %s", h.On(), h.Interval.Duration, tc.on, tc.interval)
			}
			proto, fast, threshold := cmp.Or(tc.protocol, HealthCheckICMP), cmp.Or(tc.fast, DefaultHealthCheckFastInterval), cmp.Or(tc.threshold, DefaultHealthCheckLossThreshold)
			if h.Protocol != proto || h.FastInterval.Duration != fast || h.LossThreshold != threshold || h.UDP() != (proto == HealthCheckUDP) {
				t.Errorf("healthCheck = %+v, want protocol %s fastInterval %s lossThreshold %d", h, proto, fast, threshold)
			}
			got := cfg.Parsed.Remotes[0].HealthCheckIP
			if want, _ := netip.ParseAddr(tc.hcIP); got != want {
				t.Errorf("Parsed.Remotes[0].HealthCheckIP = %v, want %v", got, want)
			}
		})
	}
}
