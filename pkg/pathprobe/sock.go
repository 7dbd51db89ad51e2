package pathprobe

import (
	"fmt"
	"net/netip"
	"time"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/weft-net/weft/pkg/pathhealth"
)

// probeSocket is one target's socket: raw ICMP (ICMPv6) for protocol
// icmp, UDP for udp. It is a bare file descriptor, never registered with
// Go's netpoller: a socket there wakes the poller thread on every reply
// even when nobody reads, and the prober's point is to wake once per
// round for all targets, reading what arrived without blocking.
type probeSocket struct {
	fd    int
	icmp  bool
	v6    bool
	ident uint16 // ICMP: the echo identifier this socket's replies carry
	addr  netip.Addr
	out   []byte
	buf   [256]byte // an IPv4 header (≤ 60), ICMP's 8 and the probe's 32 fit

	// The destination and the receive message, in the kernel's layout:
	// every call of a round is a raw system call (see waker), which takes
	// them so. dst4 or dst6 (v6) is the destination.
	dst4 unix.RawSockaddrInet4
	dst6 unix.RawSockaddrInet6
	rx   rawRecv
}

// openSocket binds a socket to the target's source address (so the kernel
// routes the probes as traffic from that address is routed) and asks for
// kernel receive timestamps (the RTT then does not depend on when the
// round reads). A raw ICMP socket sees every ICMP packet sent to its
// address: a classic BPF filter keeps only echo replies with its
// identifier, so foreign ICMP is dropped in the kernel and costs the
// prober nothing.
func openSocket(t pathhealth.Target, icmp bool, ident uint16) (*probeSocket, error) {
	dst := t.Address.Addr().Unmap()
	s := &probeSocket{fd: -1, icmp: icmp, v6: dst.Is6(), ident: ident, addr: dst}
	family, typ, proto := unix.AF_INET, unix.SOCK_DGRAM, 0
	if s.v6 {
		family = unix.AF_INET6
	}
	if icmp {
		typ, proto = unix.SOCK_RAW, unix.IPPROTO_ICMP
		if s.v6 {
			proto = unix.IPPROTO_ICMPV6
		}
	}
	fd, err := unix.Socket(family, typ|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return nil, fmt.Errorf("probe socket for %s: %w", t.Address, err)
	}
	s.fd = fd
	fail := func(what string, err error) (*probeSocket, error) {
		s.close()
		return nil, fmt.Errorf("probe socket for %s: %s: %w", t.Address, what, err)
	}
	if icmp {
		if err := s.attachFilter(); err != nil {
			return fail("echo reply filter", err)
		}
	}
	// (An answer that arrives before the kernel has turned stamping on,
	// which the first such socket does through deferred work, is stamped
	// only when read: drain tells those apart.)
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
		return fail("receive timestamps", err)
	}
	if src := t.Source.Unmap(); src.IsValid() {
		if src.Is6() != s.v6 {
			return fail("bind", fmt.Errorf("source %s and target are of different families", src))
		}
		var sa unix.Sockaddr = &unix.SockaddrInet6{Addr: src.As16()}
		if !s.v6 {
			sa = &unix.SockaddrInet4{Addr: src.As4()}
		}
		if err := unix.Bind(fd, sa); err != nil {
			s.close()
			return nil, fmt.Errorf("bind the probe socket to %s: %w", src, err)
		}
	}
	port := int(t.Address.Port())
	if icmp {
		port = 0 // a raw IPv6 socket refuses any other than its protocol's
	}
	if s.v6 {
		s.dst6 = unix.RawSockaddrInet6{Family: unix.AF_INET6, Port: htons(port), Addr: dst.As16()}
	} else {
		s.dst4 = unix.RawSockaddrInet4{Family: unix.AF_INET, Port: htons(port), Addr: dst.As4()}
	}
	// What arrived before the filter was attached is not ours to count.
	for {
		if _, _, err := unix.Recvfrom(fd, s.buf[:], unix.MSG_DONTWAIT); err != nil {
			break
		}
	}
	return s, nil
}

// attachFilter keeps echo replies to s.ident only. An IPv4 raw socket's
// packets start at the IP header, an IPv6 one's at the ICMPv6 header.
func (s *probeSocket) attachFilter() error {
	var prog []bpf.Instruction
	if s.v6 {
		prog = []bpf.Instruction{
			bpf.LoadAbsolute{Off: 0, Size: 1},
			bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: icmp6EchoReply, SkipTrue: 3},
			bpf.LoadAbsolute{Off: 4, Size: 2},
			bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: uint32(s.ident), SkipTrue: 1},
			bpf.RetConstant{Val: 0xffff},
			bpf.RetConstant{Val: 0},
		}
		// The kernel's own type filter as well: it runs before the BPF
		// program and never even clones what it blocks.
		var f unix.ICMPv6Filter
		for i := range f.Data {
			f.Data[i] = 0xffffffff
		}
		f.Data[icmp6EchoReply>>5] &^= 1 << (icmp6EchoReply & 31)
		if err := unix.SetsockoptICMPv6Filter(s.fd, unix.IPPROTO_ICMPV6, unix.ICMPV6_FILTER, &f); err != nil {
			return err
		}
	} else {
		prog = []bpf.Instruction{
			bpf.LoadMemShift{Off: 0}, // X = the IP header's length
			bpf.LoadIndirect{Off: 0, Size: 1},
			bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: icmp4EchoReply, SkipTrue: 3},
			bpf.LoadIndirect{Off: 4, Size: 2},
			bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: uint32(s.ident), SkipTrue: 1},
			bpf.RetConstant{Val: 0xffff},
			bpf.RetConstant{Val: 0},
		}
	}
	raw, err := bpf.Assemble(prog)
	if err != nil {
		return err
	}
	fs := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		fs[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	return unix.SetsockoptSockFprog(s.fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: uint16(len(fs)), Filter: &fs[0]})
}

func (s *probeSocket) close() {
	if s != nil && s.fd >= 0 {
		unix.Close(s.fd)
		s.fd = -1
	}
}

// send sends one probe without blocking.
func (s *probeSocket) send(p packet) error {
	if s.icmp {
		s.out = echoRequest(s.out, s.v6, s.ident, p)
	} else {
		s.out = p.encode(s.out)
	}
	sa, salen := unsafe.Pointer(&s.dst4), unsafe.Sizeof(s.dst4)
	if s.v6 {
		sa, salen = unsafe.Pointer(&s.dst6), unsafe.Sizeof(s.dst6)
	}
	for {
		_, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(s.fd), uintptr(unsafe.Pointer(&s.out[0])), uintptr(len(s.out)), unix.MSG_DONTWAIT, uintptr(sa), salen)
		switch e {
		case 0:
			return nil
		case unix.EINTR:
			continue
		}
		return fmt.Errorf("send to %s: %w", s.addr, e)
	}
}

// drain reads every answer waiting on the socket without blocking and
// hands each one that is a probe's answer from the target to fn, with its
// kernel receive time, or a zero time for an answer whose arrival is not
// known: one without a stamp, or stamped at or after the drain began. The
// kernel stamps at read a packet that arrived while its stamping was off
// (it is turned on by deferred work when the first socket asks); that
// stamp, a round after the arrival, would give an interval-long RTT, and
// the RTT max sets every retry's wait (fastWait): detection took 2 s.
func (s *probeSocket) drain(fn func(p packet, at time.Time)) {
	readFrom := time.Now()
	for {
		n, e := s.rx.recvmsg(uintptr(s.fd), s.buf[:])
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return // EAGAIN: nothing more; an error queued by ICMP likewise
		}
		if s.rx.truncated() || s.rx.source() != s.addr {
			continue
		}
		b := s.buf[:n]
		var (
			p   packet
			err error
		)
		switch {
		case s.icmp && !s.v6:
			if len(b) < 20 || b[0]>>4 != 4 || int(b[0]&0xf)*4 > len(b) {
				continue
			}
			p, err = echoReply(b[int(b[0]&0xf)*4:], false, s.ident)
		case s.icmp:
			p, err = echoReply(b, true, s.ident)
		default:
			p, err = decode(b)
			if err == nil && p.kind != kindReply {
				err = errNotProbe
			}
		}
		if err != nil {
			continue
		}
		at := s.rxTime()
		if !at.Before(readFrom) {
			at = time.Time{}
		}
		fn(p, at)
	}
}

// htons is a port in network byte order, as a sockaddr's Port holds it.
func htons(port int) uint16 {
	b := [2]byte{byte(port >> 8), byte(port)}
	return *(*uint16)(unsafe.Pointer(&b[0]))
}

// rxTime is the last answer's kernel receive timestamp (SCM_TIMESTAMPNS),
// or a zero time without one.
func (s *probeSocket) rxTime() time.Time {
	if data := s.rx.control(unix.SOL_SOCKET, unix.SCM_TIMESTAMPNS, int(unsafe.Sizeof(unix.Timespec{}))); data != nil {
		return time.Unix((*unix.Timespec)(unsafe.Pointer(&data[0])).Unix())
	}
	return time.Time{}
}
