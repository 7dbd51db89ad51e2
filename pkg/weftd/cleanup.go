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
//
// What it could not look at (iptables binaries absent from the image) is
// returned as unchecked, not as a failure: everything else is cleaned, and
// the uninstall DaemonSet completes instead of crash-looping over a tool an
// nftables node never needed. The caller prints them.
func Cleanup(ctx context.Context, cfgPath string, log *slog.Logger) (unchecked []error, err error) {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return nil, fmt.Errorf("load config %s: %w", cfgPath, err)
	}
	var errs []error
	names := []string{cfg.VXLAN.Name, cfg.CableVXLAN.Name}
	if err := dataplane.New(log).Cleanup(ctx, names, cfg.RouteTable, cfg.RulePriority); err != nil {
		errs = append(errs, fmt.Errorf("data plane cleanup: %w", err))
	}
	unchecked, err = cleanupBackends(ctx, cfg, log)
	if err != nil {
		errs = append(errs, err)
	}
	return unchecked, errors.Join(errs...)
}
