package config

import (
	"fmt"
	"path/filepath"
	"time"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Topology sources (DESIGN.md "Topology sources").
const (
	TopologyFile       = "file"
	TopologyKubernetes = "kubernetes"

	EndpointsSubmariner = "submariner"
	EndpointsWeft       = "weft"

	DefaultSubmarinerNamespace = "submariner-operator"
	DefaultWeftNamespace       = "weft-system"
	DefaultGatewayLabel        = "weft.dev/gateway"
	DefaultBrokerNamespace     = "weft-broker"
)

// DefaultLease is the gateway Lease timing of endpoints: weft.
var DefaultLease = Lease{
	Duration:      Duration{6 * time.Second},
	RenewDeadline: Duration{4 * time.Second},
	RetryPeriod:   Duration{time.Second},
}

// Kubernetes configures topology: kubernetes.
type Kubernetes struct {
	Kubeconfig   string `json:"kubeconfig"`   // "" = in-cluster service account
	NodeSelector string `json:"nodeSelector"` // label selector on the member Nodes
	Endpoints    string `json:"endpoints"`    // submariner | weft
	Namespace    string `json:"namespace"`
	GatewayLabel string `json:"gatewayLabel"`
	Lease        Lease  `json:"lease"`
}

// Lease is the gateway election timing (endpoints: weft).
type Lease struct {
	Duration      Duration `json:"duration"`
	RenewDeadline Duration `json:"renewDeadline"`
	RetryPeriod   Duration `json:"retryPeriod"`
}

// Broker is where clusters find each other (endpoints: weft).
type Broker struct {
	Kubeconfig string `json:"kubeconfig"`
	Namespace  string `json:"namespace"`
}

// FromAPI reports whether cluster.nodes, cluster.gateway and remotes come
// from the Kubernetes API rather than from this file.
func (c *Config) FromAPI() bool { return c.Topology == TopologyKubernetes }

func (c *Config) defaultTopology() {
	if c.Topology == "" {
		c.Topology = TopologyFile
	}
	k := &c.Kubernetes
	if k.Endpoints == "" {
		k.Endpoints = EndpointsSubmariner
	}
	if k.Namespace == "" {
		switch k.Endpoints {
		case EndpointsWeft:
			k.Namespace = DefaultWeftNamespace
		default:
			k.Namespace = DefaultSubmarinerNamespace
		}
	}
	if k.GatewayLabel == "" {
		k.GatewayLabel = DefaultGatewayLabel
	}
	if k.Lease.Duration.Duration == 0 {
		k.Lease.Duration = DefaultLease.Duration
	}
	if k.Lease.RenewDeadline.Duration == 0 {
		k.Lease.RenewDeadline = DefaultLease.RenewDeadline
	}
	if k.Lease.RetryPeriod.Duration == 0 {
		k.Lease.RetryPeriod = DefaultLease.RetryPeriod
	}
	if c.Broker.Namespace == "" {
		c.Broker.Namespace = DefaultBrokerNamespace
	}
}

// validateTopology checks the topology source keys. With topology:
// kubernetes the file must not also list what the API provides: two
// sources of truth for the gateway would disagree after a failover.
func (c *Config) validateTopology(errs *errorList) {
	switch c.Topology {
	case TopologyFile, "":
		return
	case TopologyKubernetes:
	default:
		errs.add("topology", fmt.Sprintf("%q is not one of file, kubernetes", c.Topology))
		return
	}
	const fromAPI = "must not be set with topology: kubernetes (it comes from the API; remove it from the file)"
	if len(c.Cluster.Nodes) > 0 {
		errs.add("cluster.nodes", fromAPI)
	}
	if c.Cluster.Gateway != "" {
		errs.add("cluster.gateway", fromAPI)
	}
	if len(c.Remotes) > 0 {
		errs.add("remotes", fromAPI)
	}
	k := c.Kubernetes
	if k.Kubeconfig != "" && !filepath.IsAbs(k.Kubeconfig) {
		errs.add("kubernetes.kubeconfig", fmt.Sprintf("%q is not an absolute path (\"\" = in-cluster service account)", k.Kubeconfig))
	}
	if k.NodeSelector != "" {
		if _, err := labels.Parse(k.NodeSelector); err != nil {
			errs.add("kubernetes.nodeSelector", fmt.Sprintf("%q is not a label selector: %v", k.NodeSelector, err))
		}
	}
	switch k.Endpoints {
	case EndpointsSubmariner, EndpointsWeft:
	default:
		errs.add("kubernetes.endpoints", fmt.Sprintf("%q is not one of submariner, weft", k.Endpoints))
	}
	for _, msg := range validation.IsDNS1123Label(k.Namespace) {
		errs.add("kubernetes.namespace", fmt.Sprintf("%q is not a namespace name: %s", k.Namespace, msg))
	}
	for _, msg := range validation.IsQualifiedName(k.GatewayLabel) {
		errs.add("kubernetes.gatewayLabel", fmt.Sprintf("%q is not a label key: %s", k.GatewayLabel, msg))
	}
	l := k.Lease
	switch {
	case l.RetryPeriod.Duration <= 0:
		errs.add("kubernetes.lease.retryPeriod", fmt.Sprintf("%s is not positive", l.RetryPeriod.Duration))
	case l.RenewDeadline.Duration <= l.RetryPeriod.Duration:
		errs.add("kubernetes.lease.renewDeadline", fmt.Sprintf("%s must be longer than retryPeriod %s", l.RenewDeadline.Duration, l.RetryPeriod.Duration))
	case l.Duration.Duration <= l.RenewDeadline.Duration:
		errs.add("kubernetes.lease.duration", fmt.Sprintf("%s must be longer than renewDeadline %s", l.Duration.Duration, l.RenewDeadline.Duration))
	}
	if c.Broker.Kubeconfig != "" && !filepath.IsAbs(c.Broker.Kubeconfig) {
		errs.add("broker.kubeconfig", fmt.Sprintf("%q is not an absolute path", c.Broker.Kubeconfig))
	}
	for _, msg := range validation.IsDNS1123Label(c.Broker.Namespace) {
		errs.add("broker.namespace", fmt.Sprintf("%q is not a namespace name: %s", c.Broker.Namespace, msg))
	}
}
