package kubecluster

import (
	"context"
	"fmt"

	"github.com/weft-net/weft/integration/scenario"
)

// PublishGateways does in every cluster what Submariner does for
// topology: kubernetes: its Endpoint CRD (test-only) and namespace, then
// each cluster's gateway (its first node) as an Endpoint in every
// cluster's API server — its own, and the others' as the broker sync
// copies it. weft reads nothing else about the remotes.
func PublishGateways(ctx context.Context, clusters ...*Cluster) error {
	for _, c := range clusters {
		if err := c.API.InstallSubmarinerCRD(ctx); err != nil {
			return fmt.Errorf("kubecluster %s: %w", c.ID, err)
		}
		if _, err := c.Kubectl(ctx, "create", "namespace", scenario.SubmarinerNamespace); err != nil {
			return fmt.Errorf("kubecluster %s: %w", c.ID, err)
		}
	}
	for _, gwc := range clusters {
		doc := scenario.EndpointYAML(gwc.hc, gwc.Nodes[0].Node)
		for _, c := range clusters {
			if err := c.Apply(ctx, doc); err != nil {
				return fmt.Errorf("kubecluster %s: Endpoint of %s's gateway %s: %w", c.ID, gwc.ID, gwc.Nodes[0].Name, err)
			}
		}
	}
	return nil
}
