// Package nftbackend renders weft's packet-filter model into its own
// nftables tables, `ip weft` and (while the model holds IPv6 CIDRs) `ip6
// weft`, and never writes anywhere else.
//
// The backend works in the network namespace of the calling thread at the
// time of each call, unless WithNetNSFd names one: then every netlink socket
// is opened in that namespace whatever thread calls.
//
// Each Apply is one netlink transaction covering both tables. A table is
// rebuilt (deleted and re-created in the same transaction) when it is
// missing or its chains, rules or set definitions differ from the rendered
// model; otherwise only the set elements that changed are sent. Table ip6
// weft is deleted in that transaction when the model no longer holds IPv6.
// Kernel state is re-read whenever the ruleset generation changed since
// weft's last commit, so drift (`nft delete table ip weft`, `nft flush
// ruleset`, a deleted rule) is repaired on the next Apply, and the commit
// carries the generation it was computed from, so a concurrent change makes
// it fail and be retried rather than clobber.
//
// Apply and Findings share one netlink socket that stays open between calls
// (see lastingConn): closing an nfnetlink socket waits for the kernel to
// finish destroying what earlier transactions removed, an RCU grace period
// of 5–20 ms, which would otherwise be paid by every Apply that deletes a set
// element or rebuilds the table.
package nftbackend

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"github.com/weft-net/weft/pkg/cidrset"
	"github.com/weft-net/weft/pkg/packetfilter"
)

// Name is the backend's name in status and configuration.
const Name = "nftables"

// ApplyStats describes the last Apply.
type ApplyStats struct {
	// Messages is the number of netlink messages in the committed
	// transaction (batch begin/end not counted); 0 when nothing changed.
	Messages int
	// Full is true when the table was (re)built rather than diffed.
	Full bool
	// Reason says why the table was rebuilt.
	Reason string
	// ElementsAdded and ElementsDeleted count set intervals sent.
	ElementsAdded, ElementsDeleted int
	// Read is true when the kernel state was listed (the ruleset
	// generation had changed since weft's last commit).
	Read bool
	// Attempts is how many transactions were tried (a concurrent ruleset
	// change forces a retry).
	Attempts int
}

// Option configures a Backend.
type Option func(*Backend)

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option {
	return func(b *Backend) { b.log = l }
}

// WithNetNSFd makes every netlink socket open in the network namespace the
// fd refers to. The caller keeps the fd open while the Backend is used.
func WithNetNSFd(fd int) Option {
	return func(b *Backend) { b.netnsFd = fd; b.hasNetNS = true }
}

// Backend implements packetfilter.Backend with nftables.
type Backend struct {
	log      *slog.Logger
	netnsFd  int
	hasNetNS bool

	mu    sync.Mutex
	cache *cached
	stats ApplyStats
	// lasting is the connection Apply and Findings reuse, open in the
	// namespace lastingNS identifies; nil until first needed.
	lasting   *nftables.Conn
	lastingNS nsID
	// memos spare re-merging unchanged CIDR lists.
	memos memos
	// ipv6 is whether the last successful Apply rendered table ip6 weft:
	// Findings then reports ip6 drop policies too.
	ipv6 bool
}

// nsID identifies a network namespace (device and inode of its nsfs file).
type nsID struct{ dev, ino uint64 }

// cached is the state weft committed, valid while the ruleset generation
// is still gen (no commit by anyone since).
type cached struct {
	gen   uint32
	state *kernelState
}

var _ packetfilter.Backend = (*Backend)(nil)

// New returns a Backend. It does not touch the kernel; call Probe first to
// learn whether nftables can carry weft's rules here.
func New(opts ...Option) (*Backend, error) {
	b := &Backend{log: slog.Default(), memos: memos{}}
	for _, o := range opts {
		o(b)
	}
	if b.log == nil {
		return nil, errors.New("nftables backend: nil logger")
	}
	return b, nil
}

// Name is "nftables".
func (b *Backend) Name() string { return Name }

// LastApplyStats describes the last Apply that returned nil.
func (b *Backend) LastApplyStats() ApplyStats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stats
}

func (b *Backend) conn() (*nftables.Conn, error) {
	var opts []nftables.ConnOption
	if b.hasNetNS {
		opts = append(opts, nftables.WithNetNSFd(b.netnsFd))
	}
	cc, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("open nftables netlink connection: %w", err)
	}
	return cc, nil
}

// lastingConn returns the reusable connection for the namespace the backend
// works in now, dialling it (again) when there is none or the calling
// thread moved to another namespace since. b.mu is held.
func (b *Backend) lastingConn() (*nftables.Conn, error) {
	var id nsID
	if !b.hasNetNS {
		var st unix.Stat_t
		if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
			return nil, fmt.Errorf("identify network namespace: %w", err)
		}
		id = nsID{dev: st.Dev, ino: st.Ino}
	}
	if b.lasting != nil && b.lastingNS == id {
		return b.lasting, nil
	}
	b.dropLastingLocked()
	if id != b.lastingNS {
		// Generation numbers are per namespace: what was cached in
		// another one says nothing about this one.
		b.cache = nil
	}
	opts := []nftables.ConnOption{nftables.AsLasting()}
	if b.hasNetNS {
		opts = append(opts, nftables.WithNetNSFd(b.netnsFd))
	}
	cc, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("open nftables netlink connection: %w", err)
	}
	b.lasting, b.lastingNS = cc, id
	return cc, nil
}

// dropLastingLocked closes the reusable connection, so the next call starts
// on a fresh socket (after an error nothing stale can be read from it).
func (b *Backend) dropLastingLocked() {
	if b.lasting != nil {
		if err := b.lasting.CloseLasting(); err != nil {
			b.log.Debug("close nftables netlink connection", "err", err)
		}
		b.lasting = nil
	}
}

// Close releases the netlink socket the backend keeps open between calls.
// The backend stays usable: a later call opens a new one.
func (b *Backend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.dropLastingLocked()
	return nil
}

const maxAttempts = 4

// Apply makes weft's tables render m, in one transaction.
func (b *Backend) Apply(ctx context.Context, m packetfilter.Model) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	d, err := renderMemo(m, b.memos)
	if err != nil {
		return fmt.Errorf("render nftables model: %w", err)
	}
	cc, err := b.lastingConn()
	if err != nil {
		return err
	}
	forceFull := false
	var lastErr error
	for attempt := 1; attempt <= maxAttempts; attempt++ {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("apply nftables tables %s: %w", tableNames(d), err)
		}
		stats, err := b.applyOnce(cc, d, forceFull)
		stats.Attempts = attempt
		if err == nil {
			b.stats = stats
			b.ipv6 = d.table(ipv6) != nil
			return nil
		}
		lastErr = err
		b.cache = nil
		// The next attempt starts on a fresh socket: nothing queued or
		// left unread on this one can leak into it.
		b.dropLastingLocked()
		var cerr error
		if cc, cerr = b.lastingConn(); cerr != nil {
			return cerr
		}
		if errors.Is(err, unix.ERESTART) {
			// Someone else committed between our read and our commit.
			b.log.Debug("nftables ruleset changed during apply, retrying", "attempt", attempt)
			continue
		}
		if forceFull || stats.Full {
			break
		}
		// A refused diff (say, an element someone removed behind our
		// back) is repaired by rebuilding the table.
		b.log.Warn("incremental nftables update refused, rebuilding tables", "tables", tableNames(d), "err", err)
		forceFull = true
	}
	return fmt.Errorf("apply nftables tables %s: %w", tableNames(d), lastErr)
}

// tableNames names the tables d renders, for errors and logs.
func tableNames(d *desired) string {
	names := make([]string, len(d.tables))
	for i, t := range d.tables {
		names[i] = t.fam.name + " " + TableName
	}
	return strings.Join(names, ", ")
}

func (b *Backend) applyOnce(cc *nftables.Conn, d *desired, forceFull bool) (ApplyStats, error) {
	var stats ApplyStats
	gen, genErr := cc.GetGen()
	var st *kernelState
	if genErr == nil && b.cache != nil && b.cache.gen == gen.ID && !forceFull {
		st = b.cache.state
	} else {
		var err error
		if st, err = readState(cc); err != nil {
			return stats, err
		}
		stats.Read = true
	}

	bt := newBatch(cc, weftTable())
	var reasons []string
	for _, dt := range d.tables {
		bt.use(dt.fam.weftTable())
		have := st.tables[dt.fam]
		reason := have.mismatch(dt)
		if forceFull && reason == "" {
			reason = "incremental update refused"
		}
		if reason != "" {
			if dt.fam != ipv4 {
				reason = dt.fam.name + ": " + reason
			}
			reasons = append(reasons, reason)
			if err := b.queueFull(bt, have != nil, dt); err != nil {
				return stats, err
			}
			for _, ivs := range dt.sets {
				stats.ElementsAdded += len(ivs)
			}
			continue
		}
		for _, name := range []string{SetLocal, SetRemote} {
			del, add := diffIntervals(have.sets[name].intervals, dt.sets[name])
			s := &nftables.Set{Table: bt.table, Name: name, KeyType: dt.fam.key, Interval: true}
			// Deletions first: an added interval may overlap one being
			// removed (10.0.0.0/25 growing into 10.0.0.0/24).
			if err := bt.delElements(s, intervalElements(del)); err != nil {
				return stats, fmt.Errorf("queue deletion from set %s of table %s %s: %w", name, dt.fam.name, TableName, err)
			}
			if err := bt.addElements(s, intervalElements(add)); err != nil {
				return stats, fmt.Errorf("queue addition to set %s of table %s %s: %w", name, dt.fam.name, TableName, err)
			}
			stats.ElementsAdded += len(add)
			stats.ElementsDeleted += len(del)
		}
	}
	// A table of weft's the model no longer renders (no IPv6 left) goes in
	// the same transaction.
	for _, f := range families {
		if st.tables[f] != nil && d.table(f) == nil {
			bt.use(f.weftTable())
			bt.delTable()
			reasons = append(reasons, f.name+": table no longer rendered")
		}
	}
	if len(reasons) > 0 {
		stats.Full, stats.Reason = true, strings.Join(reasons, "; ")
	}
	stats.Messages = bt.messages
	if bt.messages == 0 {
		if genErr == nil {
			b.cache = &cached{gen: gen.ID, state: st}
		}
		return stats, nil
	}

	var err error
	if genErr == nil {
		err = cc.FlushWithGenID(gen.ID)
	} else {
		err = cc.Flush()
	}
	if err != nil {
		return stats, fmt.Errorf("commit %d messages (full=%t): %w", bt.messages, stats.Full, err)
	}
	b.log.Debug("nftables tables applied", "tables", tableNames(d), "full", stats.Full,
		"reason", stats.Reason, "messages", stats.Messages, "added", stats.ElementsAdded, "deleted", stats.ElementsDeleted)

	// Our commit moved the generation by exactly one when nobody else
	// committed in between; only then is the cache known to be the kernel.
	b.cache = nil
	if genErr == nil {
		if after, err := cc.GetGen(); err == nil && after.ID == nextGen(gen.ID) {
			b.cache = &cached{gen: after.ID, state: stateOf(d)}
		}
	}
	return stats, nil
}

// nextGen is the kernel's generation after one commit (it skips 0).
func nextGen(g uint32) uint32 {
	g++
	if g == 0 {
		g++
	}
	return g
}

// queueFull deletes the table (when present) and re-creates all of it, in
// the same transaction: packets never see a half-built table.
func (b *Backend) queueFull(bt *batch, exists bool, d *desiredTable) error {
	if exists {
		bt.delTable()
	}
	bt.addTable()
	for _, name := range []string{SetLocal, SetRemote} {
		s := &nftables.Set{Table: bt.table, Name: name, KeyType: d.fam.key, Interval: true}
		if err := bt.addSet(s, intervalElements(d.sets[name])); err != nil {
			return fmt.Errorf("queue set %s of table %s %s: %w", name, d.fam.name, TableName, err)
		}
	}
	for _, dc := range d.chains {
		c := bt.addChain(dc.spec)
		for _, r := range dc.rules {
			bt.addRule(c, r)
		}
	}
	return nil
}

// Cleanup deletes tables ip weft and ip6 weft, in one transaction.
// Idempotent.
func (b *Backend) Cleanup(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("cleanup nftables: %w", err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.cache = nil
	cc, err := b.conn()
	if err != nil {
		return err
	}
	tables, err := cc.ListTables()
	if err != nil {
		return fmt.Errorf("cleanup nftables: list tables: %w", err)
	}
	var deleted []string
	for _, f := range families {
		if slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == TableName && t.Family == f.table }) {
			cc.DelTable(f.weftTable())
			deleted = append(deleted, f.name+" "+TableName)
		}
	}
	if len(deleted) == 0 {
		return nil
	}
	if err := cc.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("cleanup nftables: delete tables %s: %w", strings.Join(deleted, ", "), err)
	}
	b.log.Info("deleted nftables tables", "tables", deleted)
	return nil
}

// SetIntervals returns the intervals in the named set of table ip weft, for
// status and tests. A missing table or set is an error.
func (b *Backend) SetIntervals(ctx context.Context, set string) ([]cidrset.Interval, error) {
	ivs, err := b.setIvals(ctx, ipv4, set)
	if err != nil {
		return nil, err
	}
	out := make([]cidrset.Interval, len(ivs))
	for i, iv := range ivs {
		out[i] = cidrset.Interval{Start: iv.start.lo, End: iv.end.lo}
		if iv.open {
			out[i].End = 1 << 32
		}
	}
	return out, nil
}

// SetPrefixes returns the CIDRs in the named set of weft's table of family
// ("ip" or "ip6"), one per interval; an interval that is not one CIDR (a
// set someone else filled) is an error.
func (b *Backend) SetPrefixes(ctx context.Context, family, set string) ([]netip.Prefix, error) {
	f := ipv4
	switch family {
	case "ip":
	case "ip6":
		f = ipv6
	default:
		return nil, fmt.Errorf("nftables family %q: want ip or ip6", family)
	}
	ivs, err := b.setIvals(ctx, f, set)
	if err != nil {
		return nil, err
	}
	out := make([]netip.Prefix, len(ivs))
	for i, iv := range ivs {
		p, ok := iv.prefix()
		if !ok {
			return nil, fmt.Errorf("set %s of table %s %s: interval from %s is not a CIDR", set, f.name, TableName, iv.start.addr(iv.v6))
		}
		out[i] = p
	}
	return out, nil
}

func (b *Backend) setIvals(ctx context.Context, f *family, set string) ([]ival, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	cc, err := b.conn()
	if err != nil {
		return nil, err
	}
	s, err := cc.GetSetByName(f.weftTable(), set)
	if err != nil {
		return nil, fmt.Errorf("get set %s of table %s %s: %w", set, f.name, TableName, err)
	}
	elems, err := cc.GetSetElements(s)
	if err != nil {
		return nil, fmt.Errorf("list elements of set %s of table %s %s: %w", set, f.name, TableName, err)
	}
	return elementsIntervals(f, elems), nil
}
