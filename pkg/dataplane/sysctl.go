package dataplane

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// sysctlRoot is where the per-namespace networking sysctls live. The files
// under it belong to the network namespace of the thread that opens them,
// so every read and write here runs on the caller's (locked) thread.
const sysctlRoot = "/proc/sys"

// sysctls sets ip_forward=1, forwarding=1 on weft's devices and
// rp_filter=2 on every LooseRPFilter interface that exists; with IPv6 in
// s it checks that the node forwards IPv6 (rp_filter has no IPv6 sysctl).
//
// net.ipv4.ip_forward is written too: per-device forwarding alone does not
// make a gateway forward between the CNI interface, the underlay and the
// VXLAN devices, and writing ip_forward=1 is what every CNI does already.
func (r *run) sysctls(s State, idx map[string]int) {
	r.ensureSysctl("net/ipv4/ip_forward", "1")
	for _, d := range s.Devices {
		if _, ok := idx[d.Name]; !ok {
			continue // the device failed; already reported
		}
		r.ensureSysctl("net/ipv4/conf/"+d.Name+"/forwarding", "1")
	}
	if s.hasIPv6() {
		r.checkIPv6Forwarding()
	}
	for _, name := range s.LooseRPFilter {
		if name == "" {
			continue
		}
		if _, err := os.Stat(filepath.Join(sysctlRoot, "net/ipv4/conf", name)); err != nil {
			r.log.Debug("rp_filter: interface absent, skipped", "interface", name)
			continue
		}
		r.ensureSysctl("net/ipv4/conf/"+name+"/rp_filter", "2")
	}
}

// ensureSysctl writes value when it differs, reads it back, and writes once
// more if something (a distribution's udev/networkd hook reacting to the
// new link) reset it in between.
func (r *run) ensureSysctl(key, value string) {
	name := strings.ReplaceAll(key, "/", ".")
	cur, err := readSysctl(key)
	if err != nil {
		r.fail(fmt.Errorf("sysctl %s: %w", name, err))
		return
	}
	if cur == value {
		return
	}
	for attempt := 0; attempt < 2; attempt++ {
		if err := writeSysctl(key, value); err != nil {
			r.fail(fmt.Errorf("sysctl %s=%s: %w", name, value, err))
			return
		}
		r.changed("set sysctl", "key", name, "value", value)
		if cur, err = readSysctl(key); err != nil {
			r.fail(fmt.Errorf("sysctl %s: read back: %w", name, err))
			return
		}
		if cur == value {
			return
		}
		r.log.Warn("sysctl reset after write, rewriting", "key", name, "want", value, "got", cur)
	}
	r.fail(fmt.Errorf("sysctl %s: wrote %s but it reads %s", name, value, cur))
}

func readSysctl(key string) (string, error) {
	b, err := os.ReadFile(filepath.Join(sysctlRoot, key))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

func writeSysctl(key, value string) error {
	f, err := os.OpenFile(filepath.Join(sysctlRoot, key), os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, werr := f.WriteString(value)
	return errors.Join(werr, f.Close())
}

// deviceSysctls6 prepares one of weft's devices for its IPv6 VTEP address:
// IPv6 on (a host with net.ipv6.conf.default.disable_ipv6=1 creates it
// off, and then the address is refused), no router advertisements taken
// from the overlay, forwarding on. Only weft's own device is touched.
func (r *run) deviceSysctls6(dev string) {
	for _, kv := range [][2]string{{"disable_ipv6", "0"}, {"accept_ra", "0"}, {"forwarding", "1"}} {
		r.ensureSysctl("net/ipv6/conf/"+dev+"/"+kv[0], kv[1])
	}
}

// checkIPv6Forwarding reports, without writing it, a node that does not
// forward IPv6. The kernel forwards IPv6 only with
// net.ipv6.conf.all.forwarding=1 (per-device forwarding is not enough, unlike
// IPv4's ip_forward + per-device), and writing it sets forwarding on every
// interface, which makes the host ignore router advertisements wherever
// accept_ra is 1: its own IPv6 default route could go. The primary CNI of
// a dual-stack cluster sets it already; weft leaves that choice to the node.
func (r *run) checkIPv6Forwarding() {
	const key = "net/ipv6/conf/all/forwarding"
	cur, err := readSysctl(key)
	switch {
	case err != nil:
		r.fail(fmt.Errorf("sysctl net.ipv6.conf.all.forwarding: %w (is IPv6 disabled on this kernel?)", err))
	case cur != "1":
		r.fail(fmt.Errorf("sysctl net.ipv6.conf.all.forwarding is %s: this node does not forward IPv6, so IPv6 pods cannot reach the remote clusters; set it to 1 (with accept_ra=2 on an interface that needs router advertisements): weft does not write it, since it changes every interface", cur))
	}
}
