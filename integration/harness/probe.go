package harness

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"

	"github.com/weft-net/weft/pkg/netnstest"
)

// ProbeTimeout bounds every probe operation whose context has no deadline.
const ProbeTimeout = 5 * time.Second

// The TCP echo protocol: on accept the server writes
//
//	SRC <ip:port as seen by the server>\n
//	MSS <TCP_MAXSEG of the accepted socket>\n
//
// and then echoes every byte it reads until the client half-closes.

// EchoServer is a TCP or UDP echo server whose socket lives in one
// namespace. Close stops it and waits for its goroutines.
type EchoServer struct {
	// Addr is the bound address (port resolved when 0 was asked).
	Addr netip.AddrPort

	ln   net.Listener
	pc   net.PacketConn
	wg   sync.WaitGroup
	once sync.Once
	mu   sync.Mutex
	conn map[net.Conn]struct{}
}

// Close stops the server and closes its open connections.
func (s *EchoServer) Close() error {
	var err error
	s.once.Do(func() {
		if s.ln != nil {
			err = s.ln.Close()
		}
		if s.pc != nil {
			err = s.pc.Close()
		}
		s.mu.Lock()
		for c := range s.conn {
			_ = c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return err
}

// inNS runs fn on a thread in n: sockets it creates stay in n for their
// whole life, whichever thread uses them later.
func inNS(n *netnstest.NS, fn func() error) error {
	return n.Do(func(ns.NetNS) error { return fn() })
}

// network is proto ("tcp", "udp") with the family of addr's host: "6"
// for an IPv6 literal ("[::]:7000", "[fd00::1]:80"), "4" otherwise, so
// that ":7000" stays an IPv4 socket and an IPv6 one never accepts IPv4.
func network(proto, addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err == nil {
		if a, err := netip.ParseAddr(host); err == nil && a.Is6() && !a.Is4In6() {
			return proto + "6"
		}
	}
	return proto + "4"
}

// ServeTCPEcho starts a TCP echo server in n on addr ("10.1.1.2:8080",
// ":0" for IPv4, "[::]:0" for IPv6…). It is closed at env.Close too, so
// tests may ignore Close.
func ServeTCPEcho(env *Env, n *netnstest.NS, addr string) (*EchoServer, error) {
	s := &EchoServer{conn: map[net.Conn]struct{}{}}
	if err := inNS(n, func() error {
		var err error
		s.ln, err = net.Listen(network("tcp", addr), addr)
		return err
	}); err != nil {
		return nil, fmt.Errorf("tcp echo listen %s in %s: %w", addr, n.Name, err)
	}
	s.Addr = s.ln.Addr().(*net.TCPAddr).AddrPort()
	env.Defer("tcp echo "+s.Addr.String()+" in "+n.Name, s.Close)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := s.ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conn[c] = struct{}{}
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer func() {
					s.mu.Lock()
					delete(s.conn, c)
					s.mu.Unlock()
					_ = c.Close()
				}()
				serveEcho(c.(*net.TCPConn))
			}()
		}
	}()
	return s, nil
}

func serveEcho(c *net.TCPConn) {
	// Generous, but a stuck peer must not pin the goroutine forever.
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	mss, _ := tcpMaxSeg(c)
	if _, err := fmt.Fprintf(c, "SRC %s\nMSS %d\n", c.RemoteAddr(), mss); err != nil {
		return
	}
	if _, err := io.Copy(c, c); err != nil {
		return
	}
	_ = c.CloseWrite()
}

func tcpMaxSeg(c *net.TCPConn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var mss int
	var serr error
	if err := rc.Control(func(fd uintptr) {
		mss, serr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_MAXSEG)
	}); err != nil {
		return 0, err
	}
	return mss, serr
}

// TCPProbe is what one TCP exchange observed.
type TCPProbe struct {
	// Src is the client address as the server saw it (after any NAT).
	Src netip.AddrPort
	// ServerMSS is TCP_MAXSEG of the server's accepted socket (reflects
	// the MSS option of the client's SYN after any clamping).
	ServerMSS int
	// ClientMSS is TCP_MAXSEG of the client socket (the SYN-ACK's MSS).
	ClientMSS int
	// Local is the client's own address.
	Local netip.AddrPort
	// Echo is what came back after the header lines.
	Echo []byte
}

func ctxTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, ProbeTimeout)
}

// dialTCP connects from n (from bind when valid) to addr; the socket is
// created inside n.
func dialTCP(ctx context.Context, n *netnstest.NS, bind netip.Addr, addr string) (*net.TCPConn, error) {
	var c net.Conn
	err := inNS(n, func() error {
		var err error
		var d net.Dialer
		if bind.IsValid() {
			d.LocalAddr = &net.TCPAddr{IP: bind.AsSlice()}
		}
		c, err = d.DialContext(ctx, network("tcp", addr), addr)
		return err
	})
	if err != nil {
		if bind.IsValid() {
			return nil, fmt.Errorf("dial %s from %s bound to %s: %w", addr, n.Name, bind, err)
		}
		return nil, fmt.Errorf("dial %s from %s: %w", addr, n.Name, err)
	}
	return c.(*net.TCPConn), nil
}

// ProbeTCP dials addr from n, reads the echo server's header, sends payload,
// half-closes and reads the echo back; the echo must equal payload.
func ProbeTCP(ctx context.Context, n *netnstest.NS, addr string, payload []byte) (TCPProbe, error) {
	return ProbeTCPFrom(ctx, n, netip.Addr{}, addr, payload)
}

// ProbeTCPFrom is ProbeTCP from a socket bound to bind (when valid): a
// host-network process whose source is not the one the route would pick.
func ProbeTCPFrom(ctx context.Context, n *netnstest.NS, bind netip.Addr, addr string, payload []byte) (TCPProbe, error) {
	ctx, cancel := ctxTimeout(ctx)
	defer cancel()
	c, err := dialTCP(ctx, n, bind, addr)
	if err != nil {
		return TCPProbe{}, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()

	var p TCPProbe
	p.Local = c.LocalAddr().(*net.TCPAddr).AddrPort()
	p.ClientMSS, _ = tcpMaxSeg(c)
	r := bufio.NewReader(c)
	if p.Src, p.ServerMSS, err = readHeader(r); err != nil {
		return p, fmt.Errorf("tcp probe %s from %s: %w", addr, n.Name, err)
	}
	writeErr := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		if err == nil {
			err = c.CloseWrite()
		}
		writeErr <- err
	}()
	p.Echo, err = io.ReadAll(r)
	if werr := <-writeErr; werr != nil && err == nil {
		err = werr
	}
	if err != nil {
		return p, fmt.Errorf("tcp probe %s from %s: %w", addr, n.Name, ctxErr(ctx, err))
	}
	if !bytes.Equal(p.Echo, payload) {
		return p, fmt.Errorf("tcp probe %s from %s: echo differs: sent %d bytes, got %d", addr, n.Name, len(payload), len(p.Echo))
	}
	return p, nil
}

func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	return err
}

func readHeader(r *bufio.Reader) (netip.AddrPort, int, error) {
	src, err := r.ReadString('\n')
	if err != nil {
		return netip.AddrPort{}, 0, fmt.Errorf("read SRC line: %w", err)
	}
	ap, err := netip.ParseAddrPort(strings.TrimPrefix(strings.TrimSpace(src), "SRC "))
	if err != nil {
		return netip.AddrPort{}, 0, fmt.Errorf("bad SRC line %q: %w", src, err)
	}
	line, err := r.ReadString('\n')
	if err != nil {
		return ap, 0, fmt.Errorf("read MSS line: %w", err)
	}
	mss, err := strconv.Atoi(strings.TrimPrefix(strings.TrimSpace(line), "MSS "))
	if err != nil {
		return ap, 0, fmt.Errorf("bad MSS line %q: %w", line, err)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), mss, nil
}

// DialTCP is ProbeTCP reduced to the source address the server saw.
func DialTCP(ctx context.Context, n *netnstest.NS, addr string, payload []byte) (netip.Addr, error) {
	p, err := ProbeTCP(ctx, n, addr, payload)
	return p.Src.Addr(), err
}

// Transfer is the outcome of TransferTCP.
type Transfer struct {
	Src       netip.AddrPort
	ServerMSS int
	ClientMSS int
	Bytes     int64 // echoed back and verified
	Duration  time.Duration
}

// TransferTCP sends size bytes of a known pattern from n to the echo server
// at addr and verifies all of them come back, both directions at once:
// full-size segments in both directions, which is what an MTU problem on
// the path breaks (small probes pass).
func TransferTCP(ctx context.Context, n *netnstest.NS, addr string, size int64) (Transfer, error) {
	ctx, cancel := ctxTimeout(ctx)
	defer cancel()
	start := time.Now()
	c, err := dialTCP(ctx, n, netip.Addr{}, addr)
	if err != nil {
		return Transfer{}, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()

	var t Transfer
	t.ClientMSS, _ = tcpMaxSeg(c)
	r := bufio.NewReaderSize(c, 64<<10)
	if t.Src, t.ServerMSS, err = readHeader(r); err != nil {
		return t, fmt.Errorf("tcp transfer %s from %s: %w", addr, n.Name, ctxErr(ctx, err))
	}
	writeErr := make(chan error, 1)
	go func() {
		_, err := io.Copy(c, io.LimitReader(&pattern{}, size))
		if err == nil {
			err = c.CloseWrite()
		}
		writeErr <- err
	}()
	buf := make([]byte, 32<<10)
	want := make([]byte, len(buf))
	for t.Bytes < size {
		k, rerr := r.Read(buf)
		pattern{off: t.Bytes}.fill(want[:k])
		if !bytes.Equal(buf[:k], want[:k]) {
			return t, fmt.Errorf("tcp transfer %s from %s: corrupt data at offset %d", addr, n.Name, t.Bytes)
		}
		t.Bytes += int64(k)
		if rerr != nil {
			if errors.Is(rerr, io.EOF) && t.Bytes >= size {
				break
			}
			return t, fmt.Errorf("tcp transfer %s from %s: after %d of %d bytes: %w", addr, n.Name, t.Bytes, size, ctxErr(ctx, rerr))
		}
	}
	if werr := <-writeErr; werr != nil {
		return t, fmt.Errorf("tcp transfer %s from %s: send: %w", addr, n.Name, ctxErr(ctx, werr))
	}
	t.Duration = time.Since(start)
	return t, nil
}

// pattern is an endless reader of a position-dependent byte sequence, so
// that reordered or corrupted data is caught, not only short data.
type pattern struct{ off int64 }

func (p pattern) fill(b []byte) {
	for i := range b {
		o := p.off + int64(i)
		b[i] = byte(o ^ (o >> 8) ^ (o >> 16))
	}
}

func (p *pattern) Read(b []byte) (int, error) {
	p.fill(b)
	p.off += int64(len(b))
	return len(b), nil
}

// ServeUDPEcho starts a UDP server in n on addr (IPv6 for an IPv6
// literal, as ServeTCPEcho) that answers each datagram
// with "SRC ip:port\n" followed by the datagram.
func ServeUDPEcho(env *Env, n *netnstest.NS, addr string) (*EchoServer, error) {
	s := &EchoServer{conn: map[net.Conn]struct{}{}}
	if err := inNS(n, func() error {
		var err error
		s.pc, err = net.ListenPacket(network("udp", addr), addr)
		return err
	}); err != nil {
		return nil, fmt.Errorf("udp echo listen %s in %s: %w", addr, n.Name, err)
	}
	s.Addr = s.pc.LocalAddr().(*net.UDPAddr).AddrPort()
	env.Defer("udp echo "+s.Addr.String()+" in "+n.Name, s.Close)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		buf := make([]byte, 64<<10)
		for {
			k, from, err := s.pc.ReadFrom(buf)
			if err != nil {
				return
			}
			reply := append([]byte("SRC "+from.String()+"\n"), buf[:k]...)
			_, _ = s.pc.WriteTo(reply, from)
		}
	}()
	return s, nil
}

// UDPRoundTrip sends payload from n (bound to src when valid, any address
// otherwise) to dst and returns the source the server saw. It retries a
// few times within the deadline since a first datagram may be lost to
// neighbour resolution.
func UDPRoundTrip(ctx context.Context, n *netnstest.NS, src netip.Addr, dst netip.AddrPort, payload []byte) (netip.AddrPort, error) {
	ctx, cancel := ctxTimeout(ctx)
	defer cancel()
	laddr := &net.UDPAddr{}
	if src.IsValid() {
		laddr.IP = src.AsSlice()
	}
	var c *net.UDPConn
	if err := inNS(n, func() error {
		var err error
		c, err = net.DialUDP(network("udp", dst.String()), laddr, net.UDPAddrFromAddrPort(dst))
		return err
	}); err != nil {
		return netip.AddrPort{}, fmt.Errorf("udp from %s to %s: %w", n.Name, dst, err)
	}
	defer c.Close()
	buf := make([]byte, 64<<10)
	var lastErr error
	for ctx.Err() == nil {
		if _, err := c.Write(payload); err != nil {
			lastErr = err
		}
		_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		k, err := c.Read(buf)
		if err != nil {
			lastErr = err
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			// ECONNREFUSED from an ICMP error: nothing listens, or a
			// route is missing; retry until the deadline anyway since
			// tests wait for convergence.
			time.Sleep(100 * time.Millisecond)
			continue
		}
		line, rest, ok := bytes.Cut(buf[:k], []byte("\n"))
		if !ok {
			return netip.AddrPort{}, fmt.Errorf("udp from %s to %s: bad reply %q", n.Name, dst, buf[:k])
		}
		ap, err := netip.ParseAddrPort(strings.TrimPrefix(string(line), "SRC "))
		if err != nil {
			return netip.AddrPort{}, fmt.Errorf("udp from %s to %s: bad reply %q: %w", n.Name, dst, line, err)
		}
		if !bytes.Equal(rest, payload) {
			return ap, fmt.Errorf("udp from %s to %s: echo differs", n.Name, dst)
		}
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
	}
	return netip.AddrPort{}, fmt.Errorf("udp from %s to %s: no reply: %w (last error %v)", n.Name, dst, ctx.Err(), lastErr)
}
