package pathprobe

import (
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rawRecv is one socket's receive message in the kernel's layout, for the
// raw recvmsg every read of the prober and the responder makes (see waker:
// an ordinary call would wake sysmon). Only one goroutine uses each.
type rawRecv struct {
	from unix.RawSockaddrAny
	iov  unix.Iovec
	msg  unix.Msghdr
	oob  [64]byte
}

// recvmsg reads one datagram into b without blocking: its length, or the
// call's errno.
func (r *rawRecv) recvmsg(fd uintptr, b []byte) (int, syscall.Errno) {
	r.iov.Base = &b[0]
	r.iov.SetLen(len(b))
	r.msg = unix.Msghdr{Name: (*byte)(unsafe.Pointer(&r.from)), Namelen: uint32(unsafe.Sizeof(r.from)), Iov: &r.iov, Iovlen: 1, Control: &r.oob[0]}
	r.msg.SetControllen(len(r.oob))
	n, _, e := unix.RawSyscall(unix.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(&r.msg)), unix.MSG_DONTWAIT)
	return int(n), e
}

// truncated reports whether the last datagram was longer than its buffer.
func (r *rawRecv) truncated() bool { return r.msg.Flags&unix.MSG_TRUNC != 0 }

// source is the last datagram's sender address.
func (r *rawRecv) source() netip.Addr {
	switch r.from.Addr.Family {
	case unix.AF_INET:
		return netip.AddrFrom4((*unix.RawSockaddrInet4)(unsafe.Pointer(&r.from)).Addr)
	case unix.AF_INET6:
		return netip.AddrFrom16((*unix.RawSockaddrInet6)(unsafe.Pointer(&r.from)).Addr).Unmap()
	}
	return netip.Addr{}
}

// control is the data of the last datagram's first control message of
// this level and type that holds at least size bytes, or nil.
func (r *rawRecv) control(level, typ int32, size int) []byte {
	oob := r.oob[:r.msg.Controllen]
	for len(oob) > 0 {
		h, data, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			break
		}
		if h.Level == level && h.Type == typ && len(data) >= size {
			return data
		}
		oob = rest
	}
	return nil
}
