package discovery

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/weft-net/weft/pkg/netnstest"
)

// Watch reports the events the agent relies on for prompt repair; an ip
// rule deletion has no library subscription and uses a raw one.
func TestWatchReportsEvents(t *testing.T) {
	n := netnstest.New(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan string, 64)
	ready := make(chan struct{})
	go func() {
		// Subscriptions are made in the namespace of the calling thread,
		// which n.Do locks into n for the whole of Watch.
		_ = n.Do(func(ns.NetNS) error {
			close(ready)
			Watch(ctx, slog.New(slog.NewTextHandler(io.Discard, nil)), func() int { return 240 }, func(r string) {
				select {
				case got <- r:
				default:
				}
			})
			return nil
		})
	}()
	<-ready
	time.Sleep(100 * time.Millisecond) // let the subscriptions open
	expect := func(want string, cmd ...string) {
		t.Helper()
		for len(got) > 0 {
			<-got
		}
		n.MustExec(t, cmd[0], cmd[1:]...)
		deadline := time.After(2 * time.Second)
		for {
			select {
			case r := <-got:
				if r == want {
					return
				}
			case <-deadline:
				t.Fatalf("no %q notification after %v", want, cmd)
			}
		}
	}
	expect("link", "ip", "link", "add", "br-t", "type", "bridge")
	expect("address", "ip", "addr", "add", "10.1.2.1/24", "dev", "br-t")
	n.MustExec(t, "ip", "link", "set", "br-t", "up")
	n.MustExec(t, "ip", "route", "add", "10.2.0.0/16", "dev", "br-t", "table", "240")
	expect("route-deleted", "ip", "route", "del", "10.2.0.0/16", "table", "240")
	n.MustExec(t, "ip", "rule", "add", "priority", "240", "lookup", "240")
	expect("rule-deleted", "ip", "rule", "del", "priority", "240")
	// IPv6: a global address, weft's table, the ip -6 rule.
	expect("address", "ip", "-6", "addr", "add", "fd00:1:0:2::1/64", "dev", "br-t", "nodad")
	n.MustExec(t, "ip", "-6", "route", "add", "fd00:2::/56", "dev", "br-t", "table", "240")
	expect("route-deleted", "ip", "-6", "route", "del", "fd00:2::/56", "table", "240")
	n.MustExec(t, "ip", "-6", "rule", "add", "priority", "240", "lookup", "240")
	expect("rule-deleted", "ip", "-6", "rule", "del", "priority", "240")
}

// InterfacesWith(true) lists the global IPv6 addresses next to the IPv4
// ones and never a link-local one; Interfaces stays IPv4 only.
func TestInterfacesIPv6(t *testing.T) {
	n := netnstest.New(t)
	for _, c := range [][]string{
		{"link", "add", "br-t", "type", "bridge"},
		{"addr", "add", "10.1.2.1/24", "dev", "br-t"},
		{"-6", "addr", "add", "fd00:1:0:2::1/64", "dev", "br-t", "nodad"},
		{"-6", "addr", "add", "fe80::77/64", "dev", "br-t", "nodad"},
		{"link", "set", "br-t", "up"},
	} {
		n.MustExec(t, "ip", c...)
	}
	list := func(v6 bool) []netip.Addr {
		var out []netip.Addr
		if err := n.Do(func(ns.NetNS) error {
			ifs, err := InterfacesWith(v6)
			for _, i := range ifs {
				if i.Name == "br-t" {
					out = i.Addrs
				}
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return out
	}
	if got, want := list(false), addrs("10.1.2.1"); !slices.Equal(got, want) {
		t.Errorf("IPv4 only: %v, want %v", got, want)
	}
	got := list(true)
	if !slices.Contains(got, netip.MustParseAddr("fd00:1:0:2::1")) || !slices.Contains(got, netip.MustParseAddr("10.1.2.1")) || slices.ContainsFunc(got, netip.Addr.IsLinkLocalUnicast) {
		t.Errorf("with IPv6: %v, want 10.1.2.1 and fd00:1:0:2::1, no link-local", got)
	}
	pod := []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("fd00:1::/56")}
	c6, err := Choose6(Filter([]Iface{{Name: "br-t", Index: 3, Kind: "bridge", Addrs: got}}, pod, nil), Hints{})
	if err != nil || c6.IP != netip.MustParseAddr("fd00:1:0:2::1") {
		t.Errorf("Choose6 = %+v, %v", c6, err)
	}
}

// An IPv6 address in duplicate address detection (as every CNI adds one)
// is listed as unusable, not as a candidate: a route cannot take it as
// its source yet. Choose6 waits, naming it, and picks it once the kernel
// has finished the detection.
func TestInterfacesTentativeIPv6(t *testing.T) {
	n := netnstest.New(t)
	for _, c := range [][]string{
		// A bridge with a port up has a carrier, without which the
		// detection would not even start (no dummy driver here).
		{"link", "add", "d-t", "type", "bridge"},
		{"link", "add", "d-tp", "type", "veth", "peer", "name", "d-tq"},
		{"link", "set", "d-tp", "master", "d-t", "up"},
		{"link", "set", "d-tq", "up"},
		{"link", "set", "d-t", "up"},
		{"-6", "addr", "add", "fd00:1:0:2::1/64", "dev", "d-t"},
	} {
		n.MustExec(t, "ip", c...)
	}
	pod := []netip.Prefix{netip.MustParsePrefix("fd00:1::/56")}
	choose := func() (Choice, []Iface, error) {
		var ifs []Iface
		if err := n.Do(func(ns.NetNS) error {
			var err error
			ifs, err = InterfacesWith(true)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		c, err := Choose6(Filter(ifs, pod, nil), Hints{})
		return c, ifs, err
	}
	tentative := netip.MustParseAddr("fd00:1:0:2::1")
	c, ifs, err := choose()
	if err == nil || !strings.Contains(err.Error(), "not usable yet: fd00:1:0:2::1 on d-t") {
		out, _ := n.Exec("ip", "-6", "addr", "show", "dev", "d-t")
		t.Fatalf("while tentative: Choose6 = %+v, %v (interfaces %+v)\n%s", c, err, ifs, out)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, _, err = choose()
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil || c.IP != tentative || c.Name != "d-t" {
		t.Fatalf("after duplicate address detection: Choose6 = %+v, %v", c, err)
	}
}

// Link events carry the name, index and kind the netlink library reads
// from the same link (the reference, asked in the same namespace), whether
// the message is about the link or its bridge port, and whether it
// removes the link.
func TestWatchEventsDescribeLinks(t *testing.T) {
	n := netnstest.New(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan Event, 1024)
	ready := make(chan struct{})
	go func() {
		_ = n.Do(func(ns.NetNS) error {
			close(ready)
			WatchEvents(ctx, slog.New(slog.NewTextHandler(io.Discard, nil)), func() int { return 240 }, func(ev Event) {
				if ev.Kind == "link" {
					got <- ev
				}
			})
			return nil
		})
	}()
	<-ready
	time.Sleep(100 * time.Millisecond) // let the subscriptions open
	// libKind is what the library says of name, and its index.
	libKind := func(name string) (string, int) {
		t.Helper()
		var kind string
		var idx int
		if err := n.Do(func(ns.NetNS) error {
			l, err := netlink.LinkByName(name)
			if err != nil {
				return err
			}
			kind, idx = l.Type(), l.Attrs().Index
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return kind, idx
	}
	// await returns the first event matching f within 2 s.
	await := func(what string, f func(Event) bool) Event {
		t.Helper()
		deadline := time.After(2 * time.Second)
		for {
			select {
			case ev := <-got:
				if f(ev) {
					return ev
				}
			case <-deadline:
				t.Fatalf("no link event: %s", what)
			}
		}
	}
	cases := []struct {
		name string
		add  []string
	}{
		{"br-t", []string{"ip", "link", "add", "br-t", "type", "bridge"}},
		{"v-t0", []string{"ip", "link", "add", "v-t0", "type", "veth", "peer", "name", "v-t1"}},
		{"vx-t", []string{"ip", "link", "add", "vx-t", "type", "vxlan", "id", "42", "dstport", "4789"}},
		{"tun-t", []string{"ip", "tuntap", "add", "tun-t", "mode", "tun"}},
	}
	for _, c := range cases {
		if out, err := n.Exec(c.add[0], c.add[1:]...); err != nil {
			if c.name == "tun-t" { // /dev/net/tun is not everywhere
				t.Logf("skipping %s: %v: %s", c.name, err, out)
				continue
			}
			t.Fatalf("%v: %v: %s", c.add, err, out)
		}
		kind, idx := libKind(c.name)
		ev := await("new "+c.name, func(ev Event) bool { return ev.Link == c.name && !ev.Deleted && !ev.Port })
		if ev.LinkKind != kind || ev.Index != idx {
			t.Errorf("%s: event kind %q index %d, the library says %q %d", c.name, ev.LinkKind, ev.Index, kind, idx)
		}
	}
	n.MustExec(t, "ip", "link", "set", "v-t0", "master", "br-t")
	await("bridge port of v-t0", func(ev Event) bool { return ev.Link == "v-t0" && ev.Port })
	_, idx := libKind("v-t0")
	n.MustExec(t, "ip", "link", "del", "v-t0")
	ev := await("deletion of v-t0", func(ev Event) bool { return ev.Link == "v-t0" && ev.Deleted && !ev.Port })
	if ev.Index != idx || ev.LinkKind != "veth" {
		t.Errorf("deletion event %+v, want index %d kind veth", ev, idx)
	}
}

// BenchmarkLinkEvent decodes a veth's RTM_NEWLINK as weftd's watch does
// (linkEvent) next to the library's LinkDeserialize, which its link
// subscription ran on every message before.
func BenchmarkLinkEvent(b *testing.B) {
	n := netnstest.New(b)
	var msg []byte
	var hdr unix.NlMsghdr
	if err := n.Do(func(ns.NetNS) error {
		sock, err := nl.Subscribe(unix.NETLINK_ROUTE, unix.RTNLGRP_LINK)
		if err != nil {
			return err
		}
		defer sock.Close()
		if out, err := n.Exec("ip", "link", "add", "v-b0", "type", "veth", "peer", "name", "v-b1"); err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		msgs, _, err := sock.Receive()
		if err != nil {
			return err
		}
		msg, hdr = msgs[0].Data, unix.NlMsghdr(msgs[0].Header)
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	b.Run("linkEvent", func(b *testing.B) {
		for range b.N {
			if ev := linkEvent(hdr.Type, msg); ev.LinkKind != "veth" {
				b.Fatalf("%+v", ev)
			}
		}
	})
	b.Run("library-LinkDeserialize-reference", func(b *testing.B) {
		for range b.N {
			if l, err := netlink.LinkDeserialize(&hdr, msg); err != nil || l.Type() != "veth" {
				b.Fatal(l, err)
			}
		}
	})
}

// A malformed link message is still an event (something changed) and
// never a panic.
func TestLinkEventMalformed(t *testing.T) {
	hdr := make([]byte, unix.SizeofIfInfomsg)
	hdr[4] = 7 // ifindex 7
	attr := func(l uint16, typ uint16, v string) []byte {
		b := []byte{byte(l), byte(l >> 8), byte(typ), byte(typ >> 8)}
		return append(b, v...)
	}
	cases := []struct {
		name      string
		data      []byte
		wantIndex int
		wantLink  string
	}{
		{"empty", nil, 0, ""},
		{"short header", hdr[:10], 0, ""},
		{"header only", hdr, 7, ""},
		{"attribute shorter than its header", append(slices.Clone(hdr), attr(2, unix.IFLA_IFNAME, "")...), 7, ""},
		{"attribute longer than the message", append(slices.Clone(hdr), attr(64, unix.IFLA_IFNAME, "eth0\x00")...), 7, ""},
		{"name without its NUL", append(slices.Clone(hdr), attr(8, unix.IFLA_IFNAME, "eth0")...), 7, "eth0"},
		{"truncated padding", append(slices.Clone(hdr), attr(7, unix.IFLA_IFNAME, "ab\x00")...), 7, "ab"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ev := linkEvent(unix.RTM_NEWLINK, c.data)
			if ev.Kind != "link" || ev.Index != c.wantIndex || ev.Link != c.wantLink {
				t.Fatalf("linkEvent = %+v, want a link event, index %d, name %q", ev, c.wantIndex, c.wantLink)
			}
		})
	}
}
