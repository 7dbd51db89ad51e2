// Package controlplane composes weft's own control plane
// (kubernetes.endpoints: weft) for weftd: the gateway election
// (gatewayelect) and, on the leader, the ClusterEndpoint publication and
// broker sync (brokersync). weftd's composition root uses it without
// seeing client-go; the agent sees only the topology that follows.
package controlplane

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"k8s.io/client-go/rest"

	"github.com/weft-net/weft/pkg/brokersync"
	"github.com/weft-net/weft/pkg/config"
	"github.com/weft-net/weft/pkg/gatewayelect"
	"github.com/weft-net/weft/pkg/kubesource"
)

// Status is the election and the broker sync as this node sees them.
type Status struct {
	Election gatewayelect.Status `json:"election"`
	Broker   brokersync.State    `json:"broker"`
	Message  string              `json:"message,omitempty"`
}

// ControlPlane is one weftd's part of the control plane.
type ControlPlane struct {
	cfg           *config.Config
	log           *slog.Logger
	healthCheckIP func() (v4, v6 netip.Addr)

	mu   sync.Mutex
	el   *gatewayelect.Elector
	sync *brokersync.Syncer
	msg  string
}

// New prepares the control plane for cfg (validated, endpoints: weft).
// healthCheckIP, when not nil, gives this node's CNI interface IPs of
// each family (invalid while unknown): the leader publishes them as its
// ClusterEndpoint's spec.healthCheckIP (and healthCheckIP6).
func New(cfg *config.Config, log *slog.Logger, healthCheckIP func() (v4, v6 netip.Addr)) *ControlPlane {
	if healthCheckIP == nil {
		healthCheckIP = func() (v4, v6 netip.Addr) { return v4, v6 }
	}
	return &ControlPlane{cfg: cfg, log: log.With("component", "gateway-election"), healthCheckIP: healthCheckIP}
}

// Status returns the state.
func (c *ControlPlane) Status() Status {
	c.mu.Lock()
	el, s, msg := c.el, c.sync, c.msg
	c.mu.Unlock()
	st := Status{Message: msg}
	if el != nil {
		st.Election = el.Status()
	}
	if s != nil {
		st.Broker = s.State()
	}
	return st
}

func (c *ControlPlane) problem(msg string, err error) {
	c.log.Warn(msg, "err", err)
	c.mu.Lock()
	c.msg = msg + ": " + err.Error()
	c.mu.Unlock()
}

// Run runs until ctx ends; the client configurations are retried until
// they load (a kubeconfig mounted late). Ending ctx releases nothing.
func (c *ControlPlane) Run(ctx context.Context) {
	cfg, k := c.cfg, c.cfg.Kubernetes
	var local, broker *rest.Config
	for {
		var err error
		if local == nil {
			local, err = kubesource.RestConfig(k.Kubeconfig)
		}
		if err == nil && cfg.Broker.Kubeconfig != "" {
			broker, err = kubesource.RestConfig(cfg.Broker.Kubeconfig)
		}
		if err == nil {
			break
		}
		c.problem("API client configuration; retrying", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Second):
		}
	}
	s, err := brokersync.New(brokersync.Options{
		Local: local, LocalNamespace: k.Namespace, Broker: broker, BrokerNamespace: cfg.Broker.Namespace,
		Interval: k.Lease.RetryPeriod.Duration, Log: c.log.With("component", "broker-sync"),
	})
	if err != nil {
		c.problem("broker sync", err)
		return
	}
	el, err := gatewayelect.New(gatewayelect.Options{
		Rest: local, Namespace: k.Namespace, Node: cfg.NodeName, Label: k.GatewayLabel,
		Duration: k.Lease.Duration.Duration, RenewDeadline: k.Lease.RenewDeadline.Duration, RetryPeriod: k.Lease.RetryPeriod.Duration,
		Log: c.log,
		Lead: func(ctx context.Context, ip, ip6 netip.Addr) {
			if !ip.IsValid() {
				ip = cfg.Parsed.NodeIP
			}
			if !ip6.IsValid() {
				ip6 = cfg.Parsed.NodeIP6
			}
			s.Run(ctx, func() kubesource.ClusterEndpoint {
				e := OwnEndpoint(cfg, ip, ip6)
				if cfg.HealthCheck.On() {
					e.Spec.HealthCheckIP, e.Spec.HealthCheckIP6 = pair(c.healthCheckIP())
				}
				return e
			})
		},
	})
	if err != nil {
		c.problem("gateway election", err)
		return
	}
	c.mu.Lock()
	c.el, c.sync, c.msg = el, s, ""
	c.mu.Unlock()
	el.Run(ctx)
}

// OwnEndpoint is the cluster's ClusterEndpoint with this node (at ip and
// ip6, either invalid when unknown) as its gateway.
func OwnEndpoint(cfg *config.Config, ip, ip6 netip.Addr) kubesource.ClusterEndpoint {
	e := kubesource.ClusterEndpoint{Spec: kubesource.ClusterEndpointSpec{
		ClusterID: cfg.Cluster.ID, PodCIDRs: cfg.Cluster.PodCIDRs, ServiceCIDRs: cfg.Cluster.ServiceCIDRs,
		GatewayNode: cfg.NodeName, Cable: cfg.Cable,
	}}
	e.Spec.GatewayIP, e.Spec.GatewayIP6 = pair(ip, ip6)
	if cfg.Cable == config.CableVXLAN {
		e.Spec.Port, e.Spec.VNI = int32(cfg.CableVXLAN.Port), int64(cfg.CableVXLAN.VNI)
	}
	return e
}

// pair writes a ClusterEndpoint's address pair: the IPv4 address in the
// field that takes either family, the IPv6 one in its companion — or,
// without an IPv4 address, in the first field (an IPv6-only gateway, which
// objects written before dual stack could not describe).
func pair(v4, v6 netip.Addr) (first, second string) {
	switch {
	case v4.Is4() && v6.Is6():
		return v4.String(), v6.String()
	case v4.Is4():
		return v4.String(), ""
	case v6.Is6():
		return v6.String(), ""
	}
	return "", ""
}
