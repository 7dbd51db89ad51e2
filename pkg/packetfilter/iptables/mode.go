package iptbackend

import (
	"context"
	"fmt"
	"regexp"
	"time"
)

// Modes of the host's iptables.
const (
	ModeLegacy = "legacy"
	ModeNFT    = "nft"
)

// binaries of one mode.
type binaries struct {
	save, restore string
}

// binariesFor names family f's binaries of mode: iptables-nft-save,
// ip6tables-legacy-restore, ...
func binariesFor(f *family, mode string) binaries {
	if mode != ModeLegacy {
		mode = ModeNFT
	}
	return binaries{save: f.name + "-" + mode + "-save", restore: f.name + "-" + mode + "-restore"}
}

func otherMode(mode string) string {
	if mode == ModeLegacy {
		return ModeNFT
	}
	return ModeLegacy
}

// kubelet (1.17+) creates one of these chains in mangle of the mode the host
// uses; they are the strongest hint there is.
var kubeletHintRe = regexp.MustCompile(`(?m)^:(KUBE-IPTABLES-HINT|KUBE-KUBELET-CANARY) `)

// iptables-nft 1.8.3 can loop forever on some rule sets, so every
// detection command has its own deadline (iptables-wrapper uses 5 s too).
const detectTimeout = 5 * time.Second

// DetectMode decides whether the host uses iptables-legacy or iptables-nft,
// following kubernetes-sigs/iptables-wrappers: kubelet's hint chains in
// mangle (nft checked first, the common case), then whichever mode holds
// more rules, nft on a tie. It only reads: iptables-legacy-save is run
// without -t because naming a table would make the kernel create it.
// It also returns a sentence saying why, for logs and status.
func DetectMode(ctx context.Context, r Runner) (mode, reason string) {
	return detectMode(ctx, r, ipv4)
}

// DetectMode6 is DetectMode for ip6tables: a host may, rarely, use the
// other mode there (kubelet creates its hint chains in both), so the IPv6
// rules follow what the host's ip6tables hold.
func DetectMode6(ctx context.Context, r Runner) (mode, reason string) {
	return detectMode(ctx, r, ipv6)
}

func detectMode(ctx context.Context, r Runner, f *family) (mode, reason string) {
	run := func(name string, args ...string) string {
		c, cancel := context.WithTimeout(ctx, detectTimeout)
		defer cancel()
		out, err := r.Run(c, nil, name, args...)
		if err != nil {
			return "" // a mode that cannot be read holds nothing
		}
		return string(out)
	}
	nftBin, legacyBin := binariesFor(f, ModeNFT), binariesFor(f, ModeLegacy)
	nftMangle := run(nftBin.save, "-t", "mangle")
	if m := kubeletHintRe.FindStringSubmatch(nftMangle); m != nil {
		return ModeNFT, fmt.Sprintf("chain %s exists in %s-nft mangle", m[1], f.name)
	}
	legacy := run(legacyBin.save)
	if m := kubeletHintRe.FindStringSubmatch(legacy); m != nil {
		return ModeLegacy, fmt.Sprintf("chain %s exists in %s-legacy mangle", m[1], f.name)
	}
	nLegacy := countRules(legacy)
	nNFT := countRules(run(nftBin.save))
	if nLegacy > nNFT {
		return ModeLegacy, fmt.Sprintf("no kubelet hint chain; %[1]s-legacy holds more rules (%[2]d) than %[1]s-nft (%[3]d)", f.name, nLegacy, nNFT)
	}
	return ModeNFT, fmt.Sprintf("no kubelet hint chain; %[1]s-nft holds %[2]d rules, %[1]s-legacy %[3]d: nft is the default", f.name, nNFT, nLegacy)
}
