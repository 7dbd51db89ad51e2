package pathprobe

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"

	"github.com/weft-net/weft/pkg/config"

	"github.com/weft-net/weft/pkg/netnstest"
	"github.com/weft-net/weft/pkg/pathhealth"
)

// responderIn starts a responder inside n on an ephemeral port.
func responderIn(t *testing.T, n *netnstest.NS) *Responder {
	t.Helper()
	var r *Responder
	if err := n.Do(func(ns.NetNS) error {
		var err error
		r, err = ListenResponder(0, 0, nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return r
}

func TestResponderAnswersOnlyProbesFromTheAddressAsked(t *testing.T) {
	n := netnstest.New(t)
	r := responderIn(t, n)
	port := int(r.Port())
	var c *net.UDPConn
	if err := n.Do(func(ns.NetNS) error {
		var err error
		c, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	to := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 9), Port: port}
	garbage := [][]byte{nil, []byte("x"), make([]byte, 1400), []byte("WFTP\x01\x01\x00\x00"),
		packet{kind: kindReply, id: 1, seq: 1, sent: 1}.encode(nil), // a reply is never answered: no reflection loops
	}
	for _, g := range garbage {
		if _, err := c.WriteToUDP(g, to); err != nil {
			t.Fatal(err)
		}
	}
	req := packet{kind: kindRequest, id: 5, seq: 6, sent: 7}.encode(nil)
	if _, err := c.WriteToUDP(req, to); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 100)
	nr, from, err := c.ReadFromUDP(buf)
	if err != nil {
		t.Fatalf("no reply: %v (stats %+v)", err, r.Stats())
	}
	p, err := decode(buf[:nr])
	if err != nil || p.kind != kindReply || p.id != 5 || p.seq != 6 || p.sent != 7 {
		t.Fatalf("reply %+v %v", p, err)
	}
	// The reply comes from the address the probe was sent to (127.0.0.9),
	// not from the address the kernel would choose (127.0.0.1).
	if !from.IP.Equal(to.IP) {
		t.Errorf("reply from %s, want %s", from.IP, to.IP)
	}
	// The reply is counted once its send returns, which may be after it
	// arrived here.
	for end := time.Now().Add(time.Second); r.Stats().Replied == 0 && time.Now().Before(end); {
		time.Sleep(time.Millisecond)
	}
	if st := r.Stats(); st.Ignored != uint64(len(garbage)) || st.Replied != 1 {
		t.Errorf("stats %+v, want %d ignored and 1 reply", st, len(garbage))
	}
}

func TestResponderRateLimited(t *testing.T) {
	n := netnstest.New(t)
	var r *Responder
	if err := n.Do(func(ns.NetNS) error {
		var err error
		r, err = ListenResponder(0, 10, nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Serve(ctx)
	_ = n.Do(func(ns.NetNS) error {
		c, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(r.Port())})
		if err != nil {
			return err
		}
		defer c.Close()
		for i := range 200 {
			_, _ = c.Write(packet{kind: kindRequest, id: 1, seq: uint64(i), sent: 1}.encode(nil))
		}
		return nil
	})
	deadline := time.Now().Add(2 * time.Second)
	for r.Stats().Replied+r.Stats().RateLimited < 200 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if st := r.Stats(); st.Replied > 20 || st.RateLimited < 180 {
		t.Fatalf("stats %+v: want at most ~10 replies at rate 10/s", st)
	}
}

// defaultTiming is the configuration's defaults.
func defaultTiming(protocol string, port uint16) Timing {
	return Timing{Protocol: protocol, Port: port, Interval: config.DefaultHealthCheckInterval,
		Fast: config.DefaultHealthCheckFastInterval, LossThreshold: config.DefaultHealthCheckLossThreshold}
}

// runProber runs p inside n until the test ends, and returns a function
// giving its latest snapshot.
func runProber(t *testing.T, n *netnstest.NS, p *Prober) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = n.Do(func(ns.NetNS) error { p.Run(ctx); return nil }) }()
	t.Cleanup(func() { cancel(); <-done })
}

// waitTarget polls the prober's only target until ok, failing after within.
func waitTarget(t *testing.T, p *Prober, what string, within time.Duration, ok func(pathhealth.TargetStatus) bool) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < within {
		if s := p.Latest(); len(s.Targets) == 1 && ok(s.Targets[0]) {
			return time.Since(start)
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("%s: not within %s; last snapshot %+v", what, within, p.Latest())
	return 0
}

// TestProberDetectsAndClears breaks the path with a DROP rule in the
// namespace and repairs it, timing both against the promise and against
// the schedule: a break is seen within 2 × interval + (lossThreshold − 1) ×
// fastInterval (900 ms with the defaults; without the fast retry it would
// take at least 3 × 400 ms), a repair within interval + fastInterval.
func TestProberDetectsAndClears(t *testing.T) {
	tests := []struct {
		name, protocol string
		src, dst       string
		drop           string // nft rule body in table inet foreign
	}{
		{"icmp", config.HealthCheckICMP, "127.0.0.1", "127.0.0.7", "icmp type echo-request drop"},
		{"icmpv6", config.HealthCheckICMP, "::1", "fd00::7", "icmpv6 type echo-request drop"},
		{"udp", config.HealthCheckUDP, "127.0.0.1", "127.0.0.7", "udp dport PORT drop"},
		{"udpv6", config.HealthCheckUDP, "::1", "fd00::7", "udp dport PORT drop"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := netnstest.New(t)
			if netip.MustParseAddr(tc.dst).Is6() {
				n.MustExec(t, "ip", "-6", "addr", "add", tc.dst+"/128", "dev", "lo")
			}
			var port uint16
			if tc.protocol == config.HealthCheckUDP {
				port = responderIn(t, n).Port()
			}
			tm := defaultTiming(tc.protocol, port)
			p := New(Options{Node: "n1", Cluster: "c1", Timing: tm})
			p.SetTargets([]pathhealth.Target{{Name: "remote/c2", Hop: pathhealth.HopRemote, Cluster: "c2",
				Address: netip.AddrPortFrom(netip.MustParseAddr(tc.dst), port), Source: netip.MustParseAddr(tc.src)}})
			runProber(t, n, p)
			waitTarget(t, p, "first answers", 3*time.Second, func(s pathhealth.TargetStatus) bool { return s.Up && s.Sent >= 3 && s.RTT.Last > 0 })

			n.MustExec(t, "nft", "add", "table", "inet", "foreign")
			n.MustExec(t, "nft", "add", "chain", "inet", "foreign", "in", "{ type filter hook input priority 0; }")
			n.MustExec(t, "nft", append([]string{"add", "rule", "inet", "foreign", "in"}, strings.Fields(strings.ReplaceAll(tc.drop, "PORT", strconv.Itoa(int(port))))...)...)
			down := waitTarget(t, p, "down", 3*time.Second, func(s pathhealth.TargetStatus) bool { return !s.Up })
			bound := 2*tm.Interval + time.Duration(tm.LossThreshold-1)*tm.Fast
			t.Logf("detected in %s (schedule's worst case %s)", down.Round(time.Millisecond), bound)
			if down > bound+100*time.Millisecond || down > time.Second {
				t.Errorf("detection took %s, want ≤ %s (+ 100 ms of scheduling), and the promise is 1s", down, bound)
			}
			if msg := p.Latest().Targets[0].Message; !strings.Contains(msg, "no answer from "+p.Latest().Targets[0].AddressString()) {
				t.Errorf("a down target's message %q", msg)
			}

			n.MustExec(t, "nft", "flush", "chain", "inet", "foreign", "in")
			up := waitTarget(t, p, "cleared", 3*time.Second, func(s pathhealth.TargetStatus) bool { return s.Up })
			t.Logf("cleared in %s", up.Round(time.Millisecond))
			if up > tm.Interval+tm.Fast+100*time.Millisecond {
				t.Errorf("clearing took %s, want ≤ %s (+ 100 ms)", up, tm.Interval+tm.Fast)
			}
			st := p.Latest().Targets[0]
			if st.Lost < 3 || st.RTT.Min <= 0 || st.RTT.Max < st.RTT.Min || st.RTT.Mean < st.RTT.Min || st.RTT.Mean > st.RTT.Max {
				t.Errorf("stats %+v: want ≥3 lost and min ≤ mean ≤ max", st)
			}
		})
	}
}

// foreignICMP sends raw ICMP packets from src to dst inside n.
func foreignICMP(t *testing.T, n *netnstest.NS, src, dst netip.Addr, msgs ...[]byte) {
	t.Helper()
	if err := n.Do(func(ns.NetNS) error {
		network := "ip4:icmp"
		if dst.Is6() {
			network = "ip6:ipv6-icmp"
		}
		c, err := net.ListenPacket(network, src.String())
		if err != nil {
			return err
		}
		defer c.Close()
		for _, m := range msgs {
			if _, err := c.WriteTo(m, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// An ICMP probe socket sees only echo replies with its identifier (the
// BPF filter drops the rest in the kernel, so foreign ICMP never even
// queues), and of those counts only its own probes' answers.
func TestProbeSocketIgnoresForeignICMP(t *testing.T) {
	for _, fam := range []struct{ name, src, dst string }{{"ipv4", "127.0.0.1", "127.0.0.7"}, {"ipv6", "::1", "fd00::7"}} {
		t.Run(fam.name, func(t *testing.T) {
			n := netnstest.New(t)
			src, dst := netip.MustParseAddr(fam.src), netip.MustParseAddr(fam.dst)
			v6 := dst.Is6()
			if v6 {
				n.MustExec(t, "ip", "-6", "addr", "add", fam.dst+"/128", "dev", "lo")
			}
			const ident = 0x5157
			var s *probeSocket
			if err := n.Do(func(ns.NetNS) error {
				var err error
				s, err = openSocket(pathhealth.Target{Name: "x", Address: netip.AddrPortFrom(dst, 0), Source: src}, true, ident)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer s.close()
			reply := func(ident uint16, p packet) []byte {
				b := echoRequest(nil, v6, ident, p)
				b[0] = icmp4EchoReply
				if v6 {
					b[0] = icmp6EchoReply
				} else {
					b[2], b[3] = 0, 0
					binary.BigEndian.PutUint16(b[2:], checksum(b))
				}
				return b
			}
			mine := packet{kind: kindRequest, id: 42, seq: 7, sent: 99}
			request := echoRequest(nil, v6, ident, mine) // an echo request, not a reply
			garbage := append(reply(ident, mine)[:icmpHeaderSize], "not a weft probe, but a ping"...)
			// Foreign first (another pinger's identifier, a request, an
			// unrelated payload with our identifier, another prober's
			// answer), then the one answer that counts.
			foreignICMP(t, n, dst, src, reply(ident+1, mine), request, garbage, reply(ident, packet{kind: kindRequest, id: 43, seq: 7, sent: 99}), reply(ident, mine))

			var got []packet
			deadline := time.Now().Add(2 * time.Second)
			for len(got) < 2 && time.Now().Before(deadline) {
				s.drain(func(p packet, _ time.Time) { got = append(got, p) })
				time.Sleep(10 * time.Millisecond)
			}
			// drain hands over every well-formed answer to this socket's
			// identifier (the prober then matches the id): 43's and 42's.
			if len(got) != 2 || got[0].id != 43 || got[1] != mine {
				t.Fatalf("answers %+v, want prober 43's then %+v", got, mine)
			}
			// The filter: the other identifier and the request never
			// reached the socket. Send them again and look at the queue.
			foreignICMP(t, n, dst, src, reply(ident+1, mine), request)
			time.Sleep(50 * time.Millisecond)
			var buf [256]byte
			if nr, _, err := unix.Recvfrom(s.fd, buf[:], unix.MSG_DONTWAIT); err == nil {
				t.Fatalf("a foreign packet was queued on the probe socket: % x", buf[:nr])
			}
		})
	}
}

// delayedEcho answers ICMP echo requests to addr inside n after *delay,
// in place of the kernel (which the namespace tells to stay quiet).
func delayedEcho(t *testing.T, n *netnstest.NS, addr netip.Addr, delay *atomic.Int64) {
	t.Helper()
	n.MustExec(t, "sysctl", "-q", "-w", "net.ipv4.icmp_echo_ignore_all=1")
	var c net.PacketConn
	if err := n.Do(func(ns.NetNS) error {
		var err error
		c, err = net.ListenPacket("ip4:icmp", addr.String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			nr, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			if nr < icmpHeaderSize || buf[0] != icmp4EchoRequest {
				continue
			}
			b := slices.Clone(buf[:nr])
			b[0], b[2], b[3] = icmp4EchoReply, 0, 0
			binary.BigEndian.PutUint16(b[2:], checksum(b))
			time.AfterFunc(time.Duration(delay.Load()), func() { _, _ = c.WriteTo(b, from) })
		}
	}()
}

// A path slower than the fast retry's wait does not false-alarm: the wait
// follows the RTT the target has shown (twice its largest). The path here
// answers in 250 ms, then in 500 ms (more than the 400 ms interval): with
// waits of fastInterval (50 ms) three probes in a row would be counted
// lost and the target reported down.
func TestProberSlowPathNoFalseAlarm(t *testing.T) {
	n := netnstest.New(t)
	var delay atomic.Int64
	delay.Store(int64(250 * time.Millisecond))
	dst := netip.MustParseAddr("127.0.0.7")
	delayedEcho(t, n, dst, &delay)
	tm := defaultTiming(config.HealthCheckICMP, 0)
	p := New(Options{Timing: tm})
	p.SetTargets([]pathhealth.Target{{Name: "remote/c2", Address: netip.AddrPortFrom(dst, 0), Source: netip.MustParseAddr("127.0.0.1")}})
	runProber(t, n, p)
	waitTarget(t, p, "first answers", 3*time.Second, func(s pathhealth.TargetStatus) bool { return s.Up && s.Sent >= 2 && s.RTT.Max >= 250*time.Millisecond })
	delay.Store(int64(500 * time.Millisecond))
	end := time.Now().Add(3 * time.Second)
	for time.Now().Before(end) {
		if st := p.Latest().Targets[0]; !st.Up {
			t.Fatalf("a 500 ms path was reported down: %+v", st)
		}
		time.Sleep(5 * time.Millisecond)
	}
	st := p.Latest().Targets[0]
	t.Logf("after 3 s at 500 ms: %+v", st)
	if st.RTT.Max < 500*time.Millisecond || st.RTT.Last < 490*time.Millisecond {
		t.Errorf("rtt %+v: want the 500 ms answers measured", st.RTT)
	}
}

// An answer that comes after its probe was counted lost is still its own
// probe's: here the path jumps from 1 ms to 700 ms, the target goes down
// (the waits still follow the old RTT), and the late answers bring it
// back up although every probe since the jump was late.
func TestProberLateAnswersClearTheMisses(t *testing.T) {
	n := netnstest.New(t)
	var delay atomic.Int64
	delay.Store(int64(time.Millisecond))
	dst := netip.MustParseAddr("127.0.0.7")
	delayedEcho(t, n, dst, &delay)
	p := New(Options{Timing: defaultTiming(config.HealthCheckICMP, 0)})
	p.SetTargets([]pathhealth.Target{{Name: "remote/c2", Address: netip.AddrPortFrom(dst, 0), Source: netip.MustParseAddr("127.0.0.1")}})
	runProber(t, n, p)
	waitTarget(t, p, "first answers", 3*time.Second, func(s pathhealth.TargetStatus) bool { return s.Up && s.Sent >= 2 })
	delay.Store(int64(700 * time.Millisecond))
	waitTarget(t, p, "down on the sudden delay", 3*time.Second, func(s pathhealth.TargetStatus) bool { return !s.Up })
	waitTarget(t, p, "up on the late answers", 5*time.Second, func(s pathhealth.TargetStatus) bool { return s.Up && s.RTT.Max >= 700*time.Millisecond })
	if p.targets["remote/c2"].w.late == 0 {
		t.Error("no answer was counted late")
	}
}

// A target down for lossThreshold probes gets a new socket (a new source
// port, a new echo identifier), so a connection-tracking entry from before
// weft's rules existed cannot hold its probes on another path.
func TestDownTargetChangesSocket(t *testing.T) {
	for _, protocol := range []string{config.HealthCheckUDP, config.HealthCheckICMP} {
		t.Run(protocol, func(t *testing.T) {
			n := netnstest.New(t)
			n.MustExec(t, "sysctl", "-q", "-w", "net.ipv4.icmp_echo_ignore_all=1")
			tm := defaultTiming(protocol, 9)
			p := New(Options{Timing: tm})
			target := pathhealth.Target{Name: "remote/c2", Address: netip.MustParseAddrPort("127.0.0.7:9"), Source: netip.MustParseAddr("127.0.0.1")}
			if protocol == config.HealthCheckICMP {
				target.Address = netip.MustParseAddrPort("127.0.0.7:0")
			}
			var keys []string
			var changedAt []int // the misses in a row a new socket came at
			if err := n.Do(func(ns.NetNS) error {
				p.sync([]pathhealth.Target{target})
				now := time.Now()
				for i := 0; i < 40; i++ {
					now = now.Add(tm.Fast)
					p.step(now, true, now.Add(tm.Fast), tm)
					tg := p.targets[target.Name]
					if s := tg.sock; s != nil {
						sa, err := unix.Getsockname(s.fd)
						if err != nil {
							return err
						}
						key := fmt.Sprintf("%d/%d", s.ident, sa.(*unix.SockaddrInet4).Port)
						if len(keys) > 0 && key != keys[len(keys)-1] {
							changedAt = append(changedAt, tg.w.summary().trailingLost)
						}
						keys = append(keys, key)
					}
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			// A new socket after 3 lost probes, then after 6, 12, 24: not
			// one every 3 for as long as the path stays down.
			if want := []int{3, 6, 12, 24}; !slices.Equal(changedAt, want) {
				t.Fatalf("new sockets (ident/port) after %v misses in a row, want after %v (sockets %v)", changedAt, want, keys)
			}
		})
	}
}
