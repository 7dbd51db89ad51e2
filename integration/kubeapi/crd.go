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

// InstallSubmarinerCRD applies SubmarinerEndpointCRD and waits until the API
// server serves the kind.
func (s *Server) InstallSubmarinerCRD(ctx context.Context) error {
	if _, err := s.KubectlWith(ctx, s.AdminKubeconfig, SubmarinerEndpointCRD, "apply", "-f", "-"); err != nil {
		return fmt.Errorf("install Submariner's Endpoint CRD: %w", err)
	}
	if _, err := s.Kubectl(ctx, "wait", "--for=condition=Established", "--timeout=30s", "crd/endpoints.submariner.io"); err != nil {
		return fmt.Errorf("install Submariner's Endpoint CRD: %w", err)
	}
	return nil
}
