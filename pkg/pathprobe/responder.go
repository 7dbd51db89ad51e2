package pathprobe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultReplyRate bounds the replies per second of one responder. A
// gateway answers every node of its cluster and of each remote one (2.5
// probes a second each at the default interval: 5,000 nodes are 12,500 a
// second); the bound keeps a flood (or a spoofed one aimed at a third
// party) at that cost: the reply is never larger than the request, and
// beyond the rate requests are dropped.
const DefaultReplyRate = 100000

// ResponderStats counts what the responder saw.
type ResponderStats struct {
	Replied, Ignored, RateLimited, SendErrors uint64
}

// Responder answers weft's UDP probes (protocol udp) on one port of every
// address of the network namespace it was opened in, IPv4 and, where the
// namespace has IPv6, IPv6. It answers from the address the probe was sent
// to, so the prober sees the reply come from its target.
type Responder struct {
	conns []*respConn
	log   *slog.Logger
	rate  int
	now   func() time.Time

	mu     sync.Mutex // the token bucket, shared by the families
	tokens float64
	last   time.Time

	replied, ignored, limited, sendErrs atomic.Uint64
}

// ListenResponder binds the port on all IPv4 addresses and, when the
// namespace has IPv6, on all IPv6 ones. rate 0 = DefaultReplyRate.
func ListenResponder(port uint16, rate int, log *slog.Logger) (*Responder, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if rate <= 0 {
		rate = DefaultReplyRate
	}
	c4, err := net.ListenUDP("udp4", &net.UDPAddr{Port: int(port)})
	if err != nil {
		return nil, fmt.Errorf("health-check responder: listen on UDP port %d: %w", port, err)
	}
	rc4, err := newRespConn(c4, false)
	if err != nil {
		c4.Close()
		return nil, fmt.Errorf("health-check responder: ask for destination addresses: %w", err)
	}
	r := &Responder{log: log, rate: rate, now: time.Now, tokens: float64(rate), conns: []*respConn{rc4}}
	r.last = r.now()
	// The same port on IPv6 (IPV6_V6ONLY: the IPv4 socket keeps IPv4). A
	// namespace without IPv6 has no IPv6 target to answer for.
	c6, err := net.ListenUDP("udp6", &net.UDPAddr{Port: int(r.Port())})
	if err != nil {
		log.Info("health-check responder: no IPv6 socket (IPv4 only)", "port", r.Port(), "err", err)
		return r, nil
	}
	rc6, err := newRespConn(c6, true)
	if err != nil {
		c6.Close()
		r.Close()
		return nil, fmt.Errorf("health-check responder: ask for IPv6 destination addresses: %w", err)
	}
	r.conns = append(r.conns, rc6)
	return r, nil
}

// Port is the bound port.
func (r *Responder) Port() uint16 { return uint16(r.conns[0].conn.LocalAddr().(*net.UDPAddr).Port) }

// Stats returns the counters.
func (r *Responder) Stats() ResponderStats {
	return ResponderStats{Replied: r.replied.Load(), Ignored: r.ignored.Load(), RateLimited: r.limited.Load(), SendErrors: r.sendErrs.Load()}
}

// Close stops Serve.
func (r *Responder) Close() error {
	var errs []error
	for _, c := range r.conns {
		errs = append(errs, c.conn.Close())
	}
	return errors.Join(errs...)
}

// Serve answers until ctx ends or Close. Nothing a sender writes can stop
// it: a datagram that is not a weft request is counted and dropped.
func (r *Responder) Serve(ctx context.Context) {
	stop := context.AfterFunc(ctx, func() { r.Close() })
	defer stop()
	var wg sync.WaitGroup
	for _, c := range r.conns {
		wg.Go(func() { r.serve(ctx, c) })
	}
	wg.Wait()
}

// allow takes a token from the bucket.
func (r *Responder) allow() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	r.tokens = min(float64(r.rate), r.tokens+now.Sub(r.last).Seconds()*float64(r.rate))
	r.last = now
	if r.tokens < 1 {
		return false
	}
	r.tokens--
	return true
}

func (r *Responder) serve(ctx context.Context, c *respConn) {
	buf := make([]byte, 1500)
	out := make([]byte, 0, probeSize)
	for {
		n, dst, err := c.read(buf)
		if err != nil {
			if closed(err) || ctx.Err() != nil {
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
		if !r.allow() {
			r.limited.Add(1)
			continue
		}
		p.kind = kindReply
		out = p.encode(out)
		if err := c.write(out, dst); err != nil {
			r.sendErrs.Add(1)
			r.log.Debug("health-check responder reply", "err", err)
			continue
		}
		r.replied.Add(1)
	}
}
