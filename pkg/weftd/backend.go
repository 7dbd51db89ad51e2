package weftd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"github.com/weft-net/weft/pkg/config"
	"github.com/weft-net/weft/pkg/packetfilter"
	iptbackend "github.com/weft-net/weft/pkg/packetfilter/iptables"
	nftbackend "github.com/weft-net/weft/pkg/packetfilter/nftables"
)

// SelectBackend picks the packet-filter backend: nftables when configured,
// or in auto mode when the kernel probe passes; iptables otherwise.
func SelectBackend(ctx context.Context, cfg *config.Config, log *slog.Logger) (packetfilter.Backend, error) {
	mode := cfg.PacketFilter
	var nft *nftbackend.Backend
	if mode == "auto" || mode == "nftables" {
		b, err := nftbackend.New(nftbackend.WithLogger(log))
		if err == nil {
			err = probeVerdict(b.Probe(ctx), needsIPv6(cfg), log)
		}
		switch {
		case err == nil:
			nft, mode = b, "nftables"
		case mode == "auto":
			log.Warn("nftables probe failed, using iptables", "err", err)
			mode = "iptables"
		default:
			// Configured explicitly: report and keep going; Apply errors
			// become conditions and retries.
			log.Error("nftables probe failed; the nftables backend may not work on this kernel", "err", err)
			nft = b
		}
	}
	switch mode {
	case "nftables":
		if nft == nil {
			return nil, fmt.Errorf("start nftables backend: unavailable")
		}
		return nft, nil
	case "iptables":
		b, err := iptbackend.New(iptbackend.WithMode(cfg.IptablesMode), iptbackend.WithLogger(log))
		if err != nil {
			return nil, fmt.Errorf("start iptables backend: %w", err)
		}
		return b, nil
	}
	return nil, fmt.Errorf("packetFilter: unknown backend %q", mode)
}

// probeVerdict is the nftables probe's result as far as this node needs:
// a kernel that cannot carry the IPv6 rules (no IPv6 NAT, say) serves an
// IPv4-only cluster well. It is logged, and nil is returned.
func probeVerdict(err error, ipv6 bool, log *slog.Logger) error {
	var perr *nftbackend.ProbeError
	if err == nil || ipv6 || !errors.As(err, &perr) || !perr.Only("ip6") {
		return err
	}
	log.Info("nftables cannot carry IPv6 rules on this kernel; the cluster is IPv4-only, so nftables is used", "err", err)
	return nil
}

// needsIPv6 reports whether the node's cluster has an IPv6 pod or service
// CIDR, i.e. whether weft's packet filter must carry IPv6.
func needsIPv6(cfg *config.Config) bool {
	for _, p := range slices.Concat(cfg.Parsed.PodCIDRs, cfg.Parsed.ServiceCIDRs) {
		if p.Addr().Is6() && !p.Addr().Is4In6() {
			return true
		}
	}
	return false
}

// cleanupBackends removes what either backend owns: a node may have been
// switched between backends, and cleanup must leave no trace of either.
// unchecked lists what could not be looked at (see Cleanup).
func cleanupBackends(ctx context.Context, cfg *config.Config, log *slog.Logger) (unchecked []error, err error) {
	var errs []error
	if b, err := nftbackend.New(nftbackend.WithLogger(log)); err == nil {
		if err := b.Cleanup(ctx); err != nil {
			errs = append(errs, fmt.Errorf("nftables cleanup: %w", err))
		}
	}
	if b, err := iptbackend.New(iptbackend.WithMode(cfg.IptablesMode), iptbackend.WithLogger(log)); err == nil {
		u, err := b.CleanupReport(ctx)
		unchecked = u
		if err != nil {
			errs = append(errs, err) // already says "iptables cleanup"
		}
	}
	if len(errs) > 0 {
		return unchecked, fmt.Errorf("%v", errs)
	}
	return unchecked, nil
}
