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
// rp_filter=2 on every LooseRPFilter interface that exists.
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
