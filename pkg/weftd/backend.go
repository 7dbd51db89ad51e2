package weftd

import (
	"context"
	"fmt"
	"log/slog"

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
			err = b.Probe(ctx)
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
