package config

import (
	"fmt"
	"time"
)

// HealthCheck configures the data-path health probes (pkg/pathprobe):
// the prober that sends to the gateway, every remote cluster and, on a
// gateway, every remote gateway, and (protocol udp) weftd's UDP responder
// on Port.
type HealthCheck struct {
	// Enabled: nil = DefaultHealthCheck.Enabled.
	Enabled *bool `json:"enabled"`
	// Protocol is what a probe is: icmp (an echo request the target's
	// kernel answers: the far side never wakes, whatever the number of
	// nodes probing it) or udp (weft's datagram, answered by the far
	// side's weftd on Port).
	Protocol string   `json:"protocol"`
	Port     uint16   `json:"port"`
	Interval Duration `json:"interval"`
	// FastInterval is the wait of a retry: after a first unanswered probe
	// the target is probed again every FastInterval (never less than
	// twice the largest RTT seen) until LossThreshold probes in a row go
	// unanswered or one is answered.
	FastInterval Duration `json:"fastInterval"`
	// LossThreshold is how many probes in a row (the first miss and its
	// retries) must go unanswered before a target is reported down.
	LossThreshold int `json:"lossThreshold"`
}

// Health-check protocols.
const (
	HealthCheckICMP = "icmp"
	HealthCheckUDP  = "udp"
)

// Health-check defaults and bounds. A break is reported at the latest
// 2 × interval + (lossThreshold − 1) × fastInterval after it happens (the
// probe just answered, the next one lost, its retries): 900 ms with the
// defaults, where Submariner's route agent takes 5 × 1 s. One wake-up of
// the prober serves every target, 2.5 a second in steady state. The
// interval is the largest that keeps that within the 1 s promise with
// room for scheduling (450 ms would be exactly 1 s): each round's probes
// are most of what the prober costs (bench figure 10).
const (
	DefaultHealthCheckProtocol      = HealthCheckICMP
	DefaultHealthCheckPort          = 4803
	DefaultHealthCheckInterval      = 400 * time.Millisecond
	DefaultHealthCheckFastInterval  = 50 * time.Millisecond
	DefaultHealthCheckLossThreshold = 3
	MinHealthCheckInterval          = 10 * time.Millisecond
	MaxHealthCheckInterval          = time.Minute
	MaxLossThreshold                = 100
)

// On reports whether the probes (and with protocol udp the responder) run.
func (h HealthCheck) On() bool { return h.Enabled == nil || *h.Enabled }

// UDP reports whether the probes are weft's UDP datagrams, answered by
// weftd's responder on Port.
func (h HealthCheck) UDP() bool { return h.Protocol == HealthCheckUDP }

func (h *HealthCheck) setDefaults() {
	if h.Enabled == nil {
		on := true
		h.Enabled = &on
	}
	if h.Protocol == "" {
		h.Protocol = DefaultHealthCheckProtocol
	}
	if h.Port == 0 {
		h.Port = DefaultHealthCheckPort
	}
	if h.Interval.Duration == 0 {
		h.Interval.Duration = DefaultHealthCheckInterval
	}
	if h.FastInterval.Duration == 0 {
		h.FastInterval.Duration = min(DefaultHealthCheckFastInterval, h.Interval.Duration)
	}
	if h.LossThreshold == 0 {
		h.LossThreshold = DefaultHealthCheckLossThreshold
	}
}

func (c *Config) validateHealthCheck(errs *errorList) {
	h := c.HealthCheck
	if h.Protocol != HealthCheckICMP && h.Protocol != HealthCheckUDP {
		errs.add("healthCheck.protocol", fmt.Sprintf("%q is not one of icmp, udp", h.Protocol))
	}
	if h.Interval.Duration < MinHealthCheckInterval || h.Interval.Duration > MaxHealthCheckInterval {
		errs.add("healthCheck.interval", fmt.Sprintf("%s is outside %s..%s", h.Interval.Duration, MinHealthCheckInterval, MaxHealthCheckInterval))
	} else if f := h.FastInterval.Duration; f < MinHealthCheckInterval || f > h.Interval.Duration {
		// A retry sooner than the steady interval is the point; one later
		// would make the first miss slower to confirm than to see.
		errs.add("healthCheck.fastInterval", fmt.Sprintf("%s is outside %s..healthCheck.interval (%s)", f, MinHealthCheckInterval, h.Interval.Duration))
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
