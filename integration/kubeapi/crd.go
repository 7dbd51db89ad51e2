package kubeapi

import (
	"context"
	_ "embed"
	"fmt"
)

// SubmarinerEndpointCRD is the CustomResourceDefinition of Submariner's
// Endpoint kind (submariner.io/v1), for tests only: a cluster running
// Submariner has it from Submariner's operator, and weft's manifests never
// carry it.
//
//go:embed testdata/submariner-endpoints-crd.yaml
var SubmarinerEndpointCRD []byte

// SubmarinerRouteAgentCRD is the CustomResourceDefinition of Submariner's
// RouteAgent kind (submariner.io/v1), the per-node status object weftd
// writes with endpoints: submariner; for tests only, like
// SubmarinerEndpointCRD.
//
//go:embed testdata/submariner-routeagents-crd.yaml
var SubmarinerRouteAgentCRD []byte

// InstallSubmarinerCRD applies SubmarinerEndpointCRD and
// SubmarinerRouteAgentCRD and waits until the API server serves both kinds.
func (s *Server) InstallSubmarinerCRD(ctx context.Context) error {
	for _, c := range []struct {
		name string
		doc  []byte
	}{{"endpoints.submariner.io", SubmarinerEndpointCRD}, {"routeagents.submariner.io", SubmarinerRouteAgentCRD}} {
		if _, err := s.KubectlWith(ctx, s.AdminKubeconfig, c.doc, "apply", "-f", "-"); err != nil {
			return fmt.Errorf("install Submariner's CRD %s: %w", c.name, err)
		}
		if _, err := s.Kubectl(ctx, "wait", "--for=condition=Established", "--timeout=30s", "crd/"+c.name); err != nil {
			return fmt.Errorf("install Submariner's CRD %s: %w", c.name, err)
		}
	}
	return nil
}
