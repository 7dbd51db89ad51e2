package config

import (
	"fmt"
	"time"
)

// HealthCheck configures the data-path health probes (pkg/pathprobe):
// weftd's UDP responder on Port, and the prober that sends to the gateway,
// every remote cluster and, on a gateway, every remote gateway.
type HealthCheck struct {
	// Enabled: nil = DefaultHealthCheck.Enabled.
	Enabled  *bool    `json:"enabled"`
	Port     uint16   `json:"port"`
	Interval Duration `json:"interval"`
	// LossThreshold is how many probes in a row must go unanswered before
	// a target is reported down.
	LossThreshold int `json:"lossThreshold"`
}

// Health-check defaults and bounds. The defaults report a broken path
// within a second (5 × 100 ms, plus the last probe's wait), where
// Submariner's route agent takes 5 × 1 s.
const (
	DefaultHealthCheckPort          = 4803
	DefaultHealthCheckInterval      = 100 * time.Millisecond
	DefaultHealthCheckLossThreshold = 5
	MinHealthCheckInterval          = 10 * time.Millisecond
	MaxHealthCheckInterval          = time.Minute
	MaxLossThreshold                = 100
)

// On reports whether the probes and the responder run.
func (h HealthCheck) On() bool { return h.Enabled == nil || *h.Enabled }

func (h *HealthCheck) setDefaults() {
	if h.Enabled == nil {
		on := true
		h.Enabled = &on
	}
	if h.Port == 0 {
		h.Port = DefaultHealthCheckPort
	}
	if h.Interval.Duration == 0 {
		h.Interval.Duration = DefaultHealthCheckInterval
	}
	if h.LossThreshold == 0 {
		h.LossThreshold = DefaultHealthCheckLossThreshold
	}
}

func (c *Config) validateHealthCheck(errs *errorList) {
	h := c.HealthCheck
	if h.Interval.Duration < MinHealthCheckInterval || h.Interval.Duration > MaxHealthCheckInterval {
		errs.add("healthCheck.interval", fmt.Sprintf("%s is outside %s..%s", h.Interval.Duration, MinHealthCheckInterval, MaxHealthCheckInterval))
	}
	if h.LossThreshold < 1 || h.LossThreshold > MaxLossThreshold {
		errs.add("healthCheck.lossThreshold", fmt.Sprintf("%d is outside 1..%d", h.LossThreshold, MaxLossThreshold))
	}
	// The responder binds the port on every address of the node: it must
	// not be a VXLAN device's, whose socket the kernel holds.
	for _, v := range []struct {
		path string
		port uint16
	}{{"vxlan.port", c.VXLAN.Port}, {"cableVxlan.port", c.CableVXLAN.Port}} {
		if h.Port == v.port {
			errs.add("healthCheck.port", fmt.Sprintf("%d is also %s", h.Port, v.path))
		}
	}
}
