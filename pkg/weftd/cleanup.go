package weftd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/weft-net/weft/pkg/config"
	"github.com/weft-net/weft/pkg/dataplane"
)

// Cleanup removes every kernel object weft owns on this node: devices (with
// their FDB and neighbour entries), the routes in weft's table, the ip rule,
// the nft table or the iptables chains, jumps and ipsets. Idempotent.
func Cleanup(ctx context.Context, cfgPath string, log *slog.Logger) error {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return fmt.Errorf("load config %s: %w", cfgPath, err)
	}
	var errs []error
	names := []string{cfg.VXLAN.Name, cfg.CableVXLAN.Name}
	if err := dataplane.New(log).Cleanup(ctx, names, cfg.RouteTable, cfg.RulePriority); err != nil {
		errs = append(errs, fmt.Errorf("data plane cleanup: %w", err))
	}
	if err := cleanupBackends(ctx, cfg, log); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
