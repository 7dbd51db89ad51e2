// Package pathprobe measures weft's data path: a UDP responder that answers
// weft's probes, and a prober that sends them to every target of the node
// (its gateway, each remote cluster through weft's routes, and on a
// gateway each remote gateway over the cable) and turns the answers into
// pathhealth snapshots.
package pathprobe

import (
	"encoding/binary"
	"errors"
)

// The probe is one fixed-size datagram. The responder echoes it with the
// kind flipped; the prober accepts a reply only when every field matches
// the probe it sent (its id, the sequence number and the send timestamp),
// so a late reply is attributed to its own probe and never to a newer
// one, and foreign or garbled datagrams are never counted.
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

func (p packet) encode(b []byte) []byte {
	b = append(b[:0], magic[:]...)
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
