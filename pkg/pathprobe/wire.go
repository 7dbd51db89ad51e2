// Package pathprobe measures weft's data path: a prober that sends probes
// to every target of the node (its gateway, each remote cluster through
// weft's routes, and on a gateway each remote gateway over the cable) and
// turns the answers into pathhealth snapshots, and a UDP responder that
// answers weft's probes where the protocol is udp (with icmp the targets'
// kernels answer).
package pathprobe

import (
	"encoding/binary"
	"errors"
)

// The probe is one fixed-size record: the payload of a UDP datagram
// (protocol udp; the responder echoes it with the kind flipped) or of an
// ICMP echo request (protocol icmp; the target's kernel echoes it as it
// is). The prober accepts an answer only when every field matches the
// probe it sent (its id, the sequence number and the send timestamp), so
// a late answer is attributed to its own probe and never to a newer one,
// and foreign or garbled packets are never counted.
const (
	probeSize = 32
	version   = 1

	kindRequest = 1
	kindReply   = 2
)

// magic marks weft's probes: anything else reaching the port is ignored.
var magic = [4]byte{'W', 'F', 'T', 'P'}

var errNotProbe = errors.New("not a weft probe")

// packet is a decoded probe.
type packet struct {
	kind uint8
	// id is the prober's (random, per process), seq its sequence number
	// for the target, sent the send time in Unix nanoseconds.
	id, seq uint64
	sent    int64
}

func (p packet) encode(b []byte) []byte { return p.appendTo(b[:0]) }

func (p packet) appendTo(b []byte) []byte {
	b = append(b, magic[:]...)
	b = append(b, version, p.kind, 0, 0)
	b = binary.BigEndian.AppendUint64(b, p.id)
	b = binary.BigEndian.AppendUint64(b, p.seq)
	return binary.BigEndian.AppendUint64(b, uint64(p.sent))
}

func decode(b []byte) (packet, error) {
	if len(b) != probeSize || [4]byte(b[:4]) != magic || b[4] != version || b[6] != 0 || b[7] != 0 {
		return packet{}, errNotProbe
	}
	p := packet{
		kind: b[5],
		id:   binary.BigEndian.Uint64(b[8:]),
		seq:  binary.BigEndian.Uint64(b[16:]),
		sent: int64(binary.BigEndian.Uint64(b[24:])),
	}
	if p.kind != kindRequest && p.kind != kindReply {
		return packet{}, errNotProbe
	}
	return p, nil
}

// ICMP echo types.
const (
	icmp4EchoReply   = 0
	icmp4EchoRequest = 8
	icmp6EchoRequest = 128
	icmp6EchoReply   = 129
	icmpHeaderSize   = 8
)

// echoRequest is an ICMP (v6: ICMPv6) echo request carrying the probe.
// The ICMPv6 checksum covers a pseudo-header the kernel knows and fills
// in itself; the ICMPv4 one is the sender's.
func echoRequest(b []byte, v6 bool, ident uint16, p packet) []byte {
	typ := byte(icmp4EchoRequest)
	if v6 {
		typ = icmp6EchoRequest
	}
	b = append(b[:0], typ, 0, 0, 0)
	b = binary.BigEndian.AppendUint16(b, ident)
	b = binary.BigEndian.AppendUint16(b, uint16(p.seq))
	b = p.appendTo(b)
	if !v6 {
		binary.BigEndian.PutUint16(b[2:], checksum(b))
	}
	return b
}

// echoReply is the probe an ICMP echo reply to ident carries; b starts at
// the ICMP header.
func echoReply(b []byte, v6 bool, ident uint16) (packet, error) {
	typ := byte(icmp4EchoReply)
	if v6 {
		typ = icmp6EchoReply
	}
	if len(b) != icmpHeaderSize+probeSize || b[0] != typ || b[1] != 0 || binary.BigEndian.Uint16(b[4:]) != ident {
		return packet{}, errNotProbe
	}
	p, err := decode(b[icmpHeaderSize:])
	if err != nil || p.kind != kindRequest || uint16(p.seq) != binary.BigEndian.Uint16(b[6:]) {
		return packet{}, errNotProbe
	}
	return p, nil
}

// checksum is the Internet checksum (RFC 1071) of b.
func checksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}
