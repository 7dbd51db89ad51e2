package pathprobe

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

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

// TestProberDetectsAndClears breaks the path with a DROP rule in the
// namespace and repairs it, timing both against the 1 s promise.
func TestProberDetectsAndClears(t *testing.T) {
	n := netnstest.New(t)
	r := responderIn(t, n)
	target := pathhealth.Target{Name: "remote/c2", Hop: pathhealth.HopRemote, Cluster: "c2",
		Address: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.7"), r.Port()), Source: netip.MustParseAddr("127.0.0.1")}

	var mu sync.Mutex
	var last pathhealth.Snapshot
	p := New(Options{Node: "n1", Cluster: "c1", Interval: 100 * time.Millisecond, LossThreshold: 5,
		OnSnapshot: []func(pathhealth.Snapshot){func(s pathhealth.Snapshot) { mu.Lock(); last = s; mu.Unlock() }}})
	p.SetTargets([]pathhealth.Target{target})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = n.Do(func(ns.NetNS) error { p.Run(ctx); return nil }) }()
	defer func() { cancel(); <-done }()

	waitFor := func(what string, within time.Duration, ok func(pathhealth.TargetStatus) bool) time.Duration {
		t.Helper()
		start := time.Now()
		for time.Since(start) < within {
			mu.Lock()
			s := last
			mu.Unlock()
			if len(s.Targets) == 1 && ok(s.Targets[0]) {
				return time.Since(start)
			}
			time.Sleep(5 * time.Millisecond)
		}
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("%s: not within %s; last snapshot %+v", what, within, last)
		return 0
	}
	waitFor("first answers", 2*time.Second, func(s pathhealth.TargetStatus) bool { return s.Up && s.Sent >= 3 && s.RTT.Last > 0 })

	rule := []string{"udp", "dport", strconv.Itoa(int(r.Port())), "drop"}
	n.MustExec(t, "nft", "add", "table", "ip", "foreign")
	n.MustExec(t, "nft", "add", "chain", "ip", "foreign", "in", "{ type filter hook input priority 0; }")
	n.MustExec(t, "nft", append([]string{"add", "rule", "ip", "foreign", "in"}, rule...)...)
	down := waitFor("down", 3*time.Second, func(s pathhealth.TargetStatus) bool { return !s.Up })
	t.Logf("detected in %s", down.Round(time.Millisecond))
	if down > time.Second {
		t.Errorf("detection took %s, promise is 1s", down)
	}
	mu.Lock()
	if msg := last.Targets[0].Message; msg == "" {
		t.Error("a down target has no message")
	}
	mu.Unlock()

	n.MustExec(t, "nft", "flush", "chain", "ip", "foreign", "in")
	up := waitFor("cleared", 3*time.Second, func(s pathhealth.TargetStatus) bool { return s.Up })
	t.Logf("cleared in %s", up.Round(time.Millisecond))
	if up > time.Second {
		t.Errorf("clearing took %s, promise is 1s", up)
	}
	mu.Lock()
	st := last.Targets[0]
	mu.Unlock()
	if st.Lost < 5 || st.RTT.Min <= 0 || st.RTT.Max < st.RTT.Min || st.RTT.Mean < st.RTT.Min || st.RTT.Mean > st.RTT.Max {
		t.Errorf("stats %+v: want ≥5 lost and min ≤ mean ≤ max", st)
	}
}

// A target down for lossThreshold probes gets a new socket (a new source
// port), so a connection-tracking entry from before weft's rules existed
// cannot hold its probes on another path.
func TestDownTargetChangesSourcePort(t *testing.T) {
	n := netnstest.New(t)
	p := New(Options{Interval: 100 * time.Millisecond, LossThreshold: 3})
	target := pathhealth.Target{Name: "remote/c2", Address: netip.MustParseAddrPort("127.0.0.7:9"), Source: netip.MustParseAddr("127.0.0.1")}
	var ports []int
	if err := n.Do(func(ns.NetNS) error {
		for i := 0; i < 12; i++ {
			p.sync([]pathhealth.Target{target})
			if c := p.targets[target.Name].conn; c != nil {
				ports = append(ports, c.LocalAddr().(*net.UDPAddr).Port)
			}
			p.round(time.Now(), 2, 200*time.Millisecond, 3)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(slices.Compact(slices.Clone(ports))) < 3 {
		t.Fatalf("source ports over 12 rounds of loss %v: want a new one every 3 lost probes", ports)
	}
}
