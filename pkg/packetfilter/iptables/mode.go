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

func binariesFor(mode string) binaries {
	if mode == ModeLegacy {
		return binaries{save: "iptables-legacy-save", restore: "iptables-legacy-restore"}
	}
	return binaries{save: "iptables-nft-save", restore: "iptables-nft-restore"}
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
	run := func(name string, args ...string) string {
		c, cancel := context.WithTimeout(ctx, detectTimeout)
		defer cancel()
		out, err := r.Run(c, nil, name, args...)
		if err != nil {
			return "" // a mode that cannot be read holds nothing
		}
		return string(out)
	}
	nftMangle := run("iptables-nft-save", "-t", "mangle")
	if m := kubeletHintRe.FindStringSubmatch(nftMangle); m != nil {
		return ModeNFT, fmt.Sprintf("chain %s exists in iptables-nft mangle", m[1])
	}
	legacy := run("iptables-legacy-save")
	if m := kubeletHintRe.FindStringSubmatch(legacy); m != nil {
		return ModeLegacy, fmt.Sprintf("chain %s exists in iptables-legacy mangle", m[1])
	}
	nLegacy := countRules(legacy)
	nNFT := countRules(run("iptables-nft-save"))
	if nLegacy > nNFT {
		return ModeLegacy, fmt.Sprintf("no kubelet hint chain; iptables-legacy holds more rules (%d) than iptables-nft (%d)", nLegacy, nNFT)
	}
	return ModeNFT, fmt.Sprintf("no kubelet hint chain; iptables-nft holds %d rules, iptables-legacy %d: nft is the default", nNFT, nLegacy)
}
