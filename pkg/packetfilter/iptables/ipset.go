package iptbackend

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// IPSets is the narrow view of the kernel's ipsets the backend needs: sets
// of type hash:net, family inet.
type IPSets interface {
	// List returns the members of the set; exists is false (and err nil)
	// when there is no such set. typ is the set's type name.
	List(name string) (members []netip.Prefix, typ string, exists bool, err error)
	Create(name string) error
	Add(name string, p netip.Prefix) error
	Del(name string, p netip.Prefix) error
	// Destroy removes the set; a missing set is not an error.
	Destroy(name string) error
}

// NetlinkIPSets talks to the kernel through netlink. Each call opens its
// own socket, so it acts in the calling OS thread's network namespace.
type NetlinkIPSets struct{}

const setType = "hash:net"

// safely turns a panic inside the netlink library into an error: its ipset
// code type-asserts every error to syscall.Errno, and a kernel refusal must
// never crash the daemon.
func safely(what string, f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%s: netlink library panic: %v", what, r)
		}
	}()
	return f()
}

// List implements IPSets.
func (NetlinkIPSets) List(name string) ([]netip.Prefix, string, bool, error) {
	var res *netlink.IPSetResult
	err := safely("list ipset "+name, func() error {
		var err error
		res, err = netlink.IpsetList(name)
		return err
	})
	if errors.Is(err, unix.ENOENT) {
		return nil, "", false, nil
	}
	if err != nil {
		return nil, "", false, fmt.Errorf("list ipset %s: %w", name, err)
	}
	out := make([]netip.Prefix, 0, len(res.Entries))
	for _, e := range res.Entries {
		a, ok := netip.AddrFromSlice(e.IP)
		if !ok {
			continue
		}
		bits := int(e.CIDR)
		if bits == 0 { // hash:net never stores /0; a missing CIDR means host
			bits = a.Unmap().BitLen()
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), bits).Masked())
	}
	return out, res.TypeName, true, nil
}

// Create implements IPSets.
func (NetlinkIPSets) Create(name string) error {
	err := safely("create ipset "+name, func() error {
		return netlink.IpsetCreate(name, setType, netlink.IpsetCreateOptions{Family: unix.AF_INET})
	})
	if err != nil {
		return fmt.Errorf("create ipset %s: %w", name, err)
	}
	return nil
}

func entry(p netip.Prefix) *netlink.IPSetEntry {
	return &netlink.IPSetEntry{IP: net.IP(p.Addr().AsSlice()), CIDR: uint8(p.Bits())}
}

// Add implements IPSets.
func (NetlinkIPSets) Add(name string, p netip.Prefix) error {
	err := safely("add to ipset "+name, func() error { return netlink.IpsetAdd(name, entry(p)) })
	if err != nil {
		return fmt.Errorf("add %s to ipset %s: %w", p, name, err)
	}
	return nil
}

// Del implements IPSets.
func (NetlinkIPSets) Del(name string, p netip.Prefix) error {
	err := safely("delete from ipset "+name, func() error { return netlink.IpsetDel(name, entry(p)) })
	if err != nil {
		return fmt.Errorf("delete %s from ipset %s: %w", p, name, err)
	}
	return nil
}

// Destroy implements IPSets.
func (NetlinkIPSets) Destroy(name string) error {
	err := safely("destroy ipset "+name, func() error { return netlink.IpsetDestroy(name) })
	if err == nil || errors.Is(err, unix.ENOENT) {
		return nil
	}
	if errors.Is(err, nl.IPSetError(nl.IPSET_ERR_BUSY)) {
		return fmt.Errorf("destroy ipset %s: still referenced by a rule: %w", name, err)
	}
	return fmt.Errorf("destroy ipset %s: %w", name, err)
}
