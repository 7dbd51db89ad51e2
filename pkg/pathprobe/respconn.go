package pathprobe

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// respConn is one family's responder socket. It reads a datagram with the
// address it was sent to (IP_PKTINFO / IPV6_PKTINFO) and writes the reply
// from that address. Both calls are raw system calls on the descriptor,
// which stays in Go's netpoller so a read parks until a probe arrives: an
// ordinary call (syscall.Syscall, as net and x/net make) would also wake
// the runtime's sysmon thread, which then polls every 20 µs for a while —
// per probe answered (see waker for the same on the prober's side).
type respConn struct {
	conn *net.UDPConn
	rc   syscall.RawConn
	v6   bool

	// Only the serving goroutine touches what follows. rx holds the last
	// probe, whose sender the reply goes to.
	rx rawRecv
	// out is the reply's control message: the source address to use.
	out [64]byte
}

func newRespConn(c *net.UDPConn, v6 bool) (*respConn, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		if v6 {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1)
		} else {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
		}
	}); err != nil {
		return nil, err
	}
	if serr != nil {
		return nil, serr
	}
	return &respConn{conn: c, rc: rc, v6: v6}, nil
}

// read waits for one datagram and returns its length and the address it
// was sent to (invalid when the kernel did not say).
func (c *respConn) read(b []byte) (int, netip.Addr, error) {
	var (
		n int
		e syscall.Errno
	)
	err := c.rc.Read(func(fd uintptr) bool {
		n, e = c.rx.recvmsg(fd, b)
		return e != unix.EAGAIN && e != unix.EINTR
	})
	if err != nil {
		return 0, netip.Addr{}, err // closed
	}
	if e != 0 {
		return 0, netip.Addr{}, fmt.Errorf("recvmsg: %w", e)
	}
	if c.rx.truncated() {
		n = len(b) // not a probe: decode refuses it
	}
	return n, c.dst(), nil
}

// dst is the last datagram's destination address, from its packet-info
// control message.
func (c *respConn) dst() netip.Addr {
	if c.v6 {
		if data := c.rx.control(unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, unix.SizeofInet6Pktinfo); data != nil {
			return netip.AddrFrom16((*unix.Inet6Pktinfo)(unsafe.Pointer(&data[0])).Addr)
		}
	} else if data := c.rx.control(unix.IPPROTO_IP, unix.IP_PKTINFO, unix.SizeofInet4Pktinfo); data != nil {
		return netip.AddrFrom4((*unix.Inet4Pktinfo)(unsafe.Pointer(&data[0])).Addr)
	}
	return netip.Addr{}
}

// write sends b to the last datagram's sender, from src when it is a
// unicast address (a reply from a broadcast or multicast one is refused by
// the kernel: the kernel chooses then).
func (c *respConn) write(b []byte, src netip.Addr) error {
	var oobn int
	if src.IsValid() && !src.IsMulticast() && !(src.Is4() && src == netip.AddrFrom4([4]byte{255, 255, 255, 255})) {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&c.out[0]))
		data := c.out[unix.CmsgLen(0):]
		if c.v6 {
			h.Level, h.Type = unix.IPPROTO_IPV6, unix.IPV6_PKTINFO
			h.SetLen(unix.CmsgLen(unix.SizeofInet6Pktinfo))
			*(*unix.Inet6Pktinfo)(unsafe.Pointer(&data[0])) = unix.Inet6Pktinfo{Addr: src.As16()}
			oobn = unix.CmsgSpace(unix.SizeofInet6Pktinfo)
		} else {
			h.Level, h.Type = unix.IPPROTO_IP, unix.IP_PKTINFO
			h.SetLen(unix.CmsgLen(unix.SizeofInet4Pktinfo))
			*(*unix.Inet4Pktinfo)(unsafe.Pointer(&data[0])) = unix.Inet4Pktinfo{Spec_dst: src.As4()}
			oobn = unix.CmsgSpace(unix.SizeofInet4Pktinfo)
		}
	}
	var e syscall.Errno
	err := c.rc.Write(func(fd uintptr) bool {
		iov := unix.Iovec{Base: &b[0]}
		iov.SetLen(len(b))
		msg := unix.Msghdr{Name: (*byte)(unsafe.Pointer(&c.rx.from)), Namelen: c.rx.msg.Namelen, Iov: &iov, Iovlen: 1}
		if oobn > 0 {
			msg.Control = &c.out[0]
			msg.SetControllen(oobn)
		}
		_, _, errno := unix.RawSyscall(unix.SYS_SENDMSG, fd, uintptr(unsafe.Pointer(&msg)), unix.MSG_DONTWAIT)
		if errno == unix.EINTR {
			return false
		}
		// EAGAIN (a full send buffer) drops the reply rather than park:
		// the prober counts a lost probe, as on any congested path.
		e = errno
		return true
	})
	if err != nil {
		return err
	}
	if e != 0 {
		return fmt.Errorf("sendmsg: %w", e)
	}
	return nil
}

// closed reports whether err is the socket's close.
func closed(err error) bool { return errors.Is(err, net.ErrClosed) }
