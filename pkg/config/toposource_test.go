package config

import (
	"strings"
	"testing"
	"time"
)

const kubeBase = `
nodeName: c1-n2
cluster:
  id: c1
  podCIDRs: [10.1.0.0/16]
  serviceCIDRs: [10.101.0.0/16]
topology: kubernetes
`

func TestKubernetesTopologyValid(t *testing.T) {
	cfg, err := ParseWith([]byte(kubeBase+`
kubernetes:
  kubeconfig: /etc/weft/kubeconfig
  nodeSelector: "node-role.kubernetes.io/worker, zone in (a,b)"
`), testEnv("", ""))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if !cfg.FromAPI() {
		t.Fatal("FromAPI() = false with topology: kubernetes")
	}
	k := cfg.Kubernetes
	if k.Endpoints != "submariner" || k.Namespace != "submariner-operator" || k.GatewayLabel != "weft.dev/gateway" {
		t.Errorf("defaults = %+v", k)
	}
	if k.Lease.Duration.Duration != 6*time.Second || k.Lease.RenewDeadline.Duration != 4*time.Second || k.Lease.RetryPeriod.Duration != time.Second {
		t.Errorf("lease defaults = %+v", k.Lease)
	}
	if cfg.Broker.Namespace != "weft-broker" {
		t.Errorf("broker.namespace = %q", cfg.Broker.Namespace)
	}
}

func TestTopologyFileIsDefault(t *testing.T) {
	cfg, err := ParseWith(readTestdata(t, "minimal.yaml"), testEnv("c1-n2", ""))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Topology != TopologyFile || cfg.FromAPI() {
		t.Errorf("topology = %q, FromAPI %v; want file", cfg.Topology, cfg.FromAPI())
	}
}

func TestKubernetesTopologyInvalid(t *testing.T) {
	tests := []struct {
		name   string
		extra  string
		want   []string
		reason string
	}{
		{"nodes in file", "  nodes: [{name: c1-n1, ip: 192.168.10.11}]\n", []string{"cluster.nodes"}, "must not be set with topology: kubernetes"},
		{"gateway in file", "  gateway: c1-n1\n", []string{"cluster.gateway"}, "comes from the API"},
		{"remotes in file", "remotes: [{id: c2, podCIDRs: [10.2.0.0/16], gatewayIP: 192.168.20.11}]\n", []string{"remotes"}, "must not be set"},
		{"unknown source", "topology: api\n", []string{"topology"}, `"api" is not one of file, kubernetes`},
		{"endpoints bad", "kubernetes: {endpoints: calico}\n", []string{"kubernetes.endpoints"}, "not one of submariner, weft"},
		{"selector bad", "kubernetes: {nodeSelector: 'a in (b'}\n", []string{"kubernetes.nodeSelector"}, "not a label selector"},
		{"namespace bad", "kubernetes: {namespace: Sub_Mariner}\n", []string{"kubernetes.namespace"}, "not a namespace name"},
		{"kubeconfig relative", "kubernetes: {kubeconfig: kube.conf}\n", []string{"kubernetes.kubeconfig"}, "absolute"},
		{"gateway label bad", "kubernetes: {gatewayLabel: 'a b'}\n", []string{"kubernetes.gatewayLabel"}, "not a label key"},
		{"lease order", "kubernetes: {lease: {duration: 3s}}\n", []string{"kubernetes.lease.duration"}, "longer than renewDeadline"},
		{"broker namespace", "broker: {namespace: 'x.y'}\n", []string{"broker.namespace"}, "not a namespace name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := kubeBase
			if strings.HasPrefix(tt.extra, "  ") {
				// Inside cluster: the base ends with topology, so put it first.
				doc = strings.Replace(kubeBase, "  serviceCIDRs: [10.101.0.0/16]\n", "  serviceCIDRs: [10.101.0.0/16]\n"+tt.extra, 1)
			} else if strings.HasPrefix(tt.extra, "topology:") {
				doc = strings.Replace(kubeBase, "topology: kubernetes\n", tt.extra, 1)
			} else {
				doc += tt.extra
			}
			_, err := ParseWith([]byte(doc), testEnv("", ""))
			assertPaths(t, err, tt.want)
			if !strings.Contains(err.Error(), tt.reason) {
				t.Errorf("error %q lacks %q", err, tt.reason)
			}
		})
	}
}

// endpoints: weft is accepted, with weft's namespace by default.
func TestKubernetesEndpointsWeft(t *testing.T) {
	cfg, err := ParseWith([]byte(kubeBase+"kubernetes: {endpoints: weft, lease: {duration: 3s, renewDeadline: 2s, retryPeriod: 500ms}}\nbroker: {kubeconfig: /etc/weft/broker/kubeconfig}\n"), testEnv("", ""))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	k := cfg.Kubernetes
	if k.Endpoints != EndpointsWeft || k.Namespace != DefaultWeftNamespace || k.Lease.Duration.Duration != 3*time.Second {
		t.Errorf("kubernetes = %+v", k)
	}
}

// The file source keeps requiring what it always required.
func TestFileTopologyStillNeedsNodesAndGateway(t *testing.T) {
	doc := strings.Replace(kubeBase, "topology: kubernetes\n", "", 1)
	_, err := ParseWith([]byte(doc), testEnv("", ""))
	assertPaths(t, err, []string{"cluster.nodes", "cluster.gateway"})
}
