package pathprobe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"golang.org/x/net/ipv4"
)

// DefaultReplyRate bounds the replies per second of one responder. A
// gateway answers every node of its cluster and of each remote one (10
// probes a second each at the default interval: 5,000 nodes are 50,000 a
// second); the bound keeps a flood (or a spoofed one aimed at a third
// party) at that cost: the reply is never larger than the request, and
// beyond the rate requests are dropped.
const DefaultReplyRate = 100000

// ResponderStats counts what the responder saw.
type ResponderStats struct {
	Replied, Ignored, RateLimited, SendErrors uint64
}

// Responder answers weft's probes on one UDP port of every address of the
// network namespace it was opened in. It answers from the address the
// probe was sent to, so the prober sees the reply come from its target.
type Responder struct {
	conn *net.UDPConn
	pc   *ipv4.PacketConn
	log  *slog.Logger
	rate int
	now  func() time.Time

	replied, ignored, limited, sendErrs atomic.Uint64
}

// ListenResponder binds the port (all IPv4 addresses). rate 0 =
// DefaultReplyRate.
func ListenResponder(port uint16, rate int, log *slog.Logger) (*Responder, error) {
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{Port: int(port)})
	if err != nil {
		return nil, fmt.Errorf("health-check responder: listen on UDP port %d: %w", port, err)
	}
	pc := ipv4.NewPacketConn(conn)
	if err := pc.SetControlMessage(ipv4.FlagDst, true); err != nil {
		conn.Close()
		return nil, fmt.Errorf("health-check responder: ask for destination addresses: %w", err)
	}
	if rate <= 0 {
		rate = DefaultReplyRate
	}
	return &Responder{conn: conn, pc: pc, log: log, rate: rate, now: time.Now}, nil
}

// Port is the bound port.
func (r *Responder) Port() uint16 { return uint16(r.conn.LocalAddr().(*net.UDPAddr).Port) }

// Stats returns the counters.
func (r *Responder) Stats() ResponderStats {
	return ResponderStats{Replied: r.replied.Load(), Ignored: r.ignored.Load(), RateLimited: r.limited.Load(), SendErrors: r.sendErrs.Load()}
}

// Close stops Serve.
func (r *Responder) Close() error { return r.conn.Close() }

// Serve answers until ctx ends or Close. Nothing a sender writes can stop
// it: a datagram that is not a weft request is counted and dropped.
func (r *Responder) Serve(ctx context.Context) {
	stop := context.AfterFunc(ctx, func() { r.conn.Close() })
	defer stop()
	buf := make([]byte, 1500)
	out := make([]byte, 0, probeSize)
	tokens, last := float64(r.rate), r.now()
	for {
		n, cm, src, err := r.pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || ctx.Err() != nil {
				return
			}
			// A transient error (ICMP-induced ECONNREFUSED on some
			// kernels): keep serving.
			r.log.Debug("health-check responder read", "err", err)
			continue
		}
		p, err := decode(buf[:n])
		if err != nil || p.kind != kindRequest {
			r.ignored.Add(1)
			continue
		}
		now := r.now()
		tokens = min(float64(r.rate), tokens+now.Sub(last).Seconds()*float64(r.rate))
		last = now
		if tokens < 1 {
			r.limited.Add(1)
			continue
		}
		tokens--
		p.kind = kindReply
		out = p.encode(out)
		var wcm *ipv4.ControlMessage
		if cm != nil && cm.Dst != nil && !cm.Dst.IsMulticast() && !cm.Dst.Equal(net.IPv4bcast) {
			wcm = &ipv4.ControlMessage{Src: cm.Dst}
		}
		if _, err := r.pc.WriteTo(out, wcm, src); err != nil {
			r.sendErrs.Add(1)
			r.log.Debug("health-check responder reply", "to", src, "err", err)
			continue
		}
		r.replied.Add(1)
	}
}
