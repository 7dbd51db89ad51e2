package config

import (
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
	}{
		{"defaults", nil, true, 100 * time.Millisecond, ""},
		{"disabled", map[string]any{"healthCheck.enabled": false}, false, 100 * time.Millisecond, ""},
		{"tuned", map[string]any{"healthCheck.interval": "1s", "healthCheck.lossThreshold": 3, "healthCheck.port": 4900}, true, time.Second, ""},
		{"remote health-check IP", map[string]any{"remotes[0].healthCheckIP": "10.2.0.1"}, true, 100 * time.Millisecond, "10.2.0.1"},
		{"service-CIDR health-check IP", map[string]any{"remotes[0].healthCheckIP": "10.102.0.9"}, true, 100 * time.Millisecond, "10.102.0.9"},
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
			got := cfg.Parsed.Remotes[0].HealthCheckIP
			if want, _ := netip.ParseAddr(tc.hcIP); got != want {
				t.Errorf("Parsed.Remotes[0].HealthCheckIP = %v, want %v", got, want)
			}
		})
	}
}
