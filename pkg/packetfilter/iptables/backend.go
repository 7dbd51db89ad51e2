// Package iptbackend is weft's iptables packet-filter backend. It writes
// only through the host's iptables binaries (legacy or nft, as the host
// uses), into weft's own chains, each reached by one jump at position 1 of a
// built-in chain; CIDRs live in two hash:net ipsets managed over netlink.
// While the model holds IPv6 CIDRs the same chains exist in ip6tables (its
// mode detected on its own), matching two hash:net family inet6 ipsets.
package iptbackend

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/weft-net/weft/pkg/packetfilter"
)

// ErrIncompatibleTable means iptables cannot parse a table because another
// tool wrote native nftables expressions into it. It is a condition to
// report and retry, never a reason to stop.
var ErrIncompatibleTable = errors.New("iptables cannot parse a table holding foreign native nftables rules")

// ErrUnavailable means the iptables binaries of the chosen mode cannot work
// here (binary missing, kernel modules missing, no privilege).
var ErrUnavailable = errors.New("iptables is unavailable")

// IncompatibleTableError names the tables iptables (ip6tables with IPv6)
// could not parse.
type IncompatibleTableError struct {
	Mode   string
	Tables []string
	IPv6   bool
}

func (e *IncompatibleTableError) Error() string {
	f := ipv4
	if e.IPv6 {
		f = ipv6
	}
	return fmt.Sprintf("%s-%s cannot parse table(s) %s (foreign native nftables rules); weft's rules there are not programmed",
		f.name, e.Mode, strings.Join(e.Tables, ", "))
}

// Unwrap makes errors.Is(err, ErrIncompatibleTable) true, and
// errors.Is(err, packetfilter.ErrDegraded) when only the filter table (whose
// accept rules are informative) is affected.
func (e *IncompatibleTableError) Unwrap() []error {
	for _, t := range e.Tables {
		if t != "filter" {
			return []error{ErrIncompatibleTable}
		}
	}
	return []error{ErrIncompatibleTable, packetfilter.ErrDegraded}
}

// Stats counts the work one Apply did; benchmarks and tests read it.
type Stats struct {
	Execs       int // external commands run (save, restore, detection)
	Restores    int // iptables-restore runs among Execs
	IPSetReads  int // netlink ipset list calls
	IPSetWrites int // netlink ipset create/add/del calls
}

// Option configures a Backend.
type Option func(*Backend)

// WithMode pins the iptables mode of both families: "" detects (each family
// on its own), "legacy" or "nft".
func WithMode(mode string) Option { return func(b *Backend) { b.mode = mode } }

// WithLogger sets the logger.
func WithLogger(l *slog.Logger) Option { return func(b *Backend) { b.log = l } }

// WithRunner replaces the command runner (tests record with it).
func WithRunner(r Runner) Option { return func(b *Backend) { b.run = r } }

// WithIPSets replaces the ipset access (tests without a kernel).
func WithIPSets(s IPSets) Option { return func(b *Backend) { b.sets = s } }

// Backend implements packetfilter.Backend with iptables. It holds no kernel
// handle: every call acts in the network namespace of the calling thread.
type Backend struct {
	log  *slog.Logger
	run  Runner
	sets IPSets

	mu    sync.Mutex
	mode  string // resolved iptables mode; "" until detected
	mode6 string // resolved ip6tables mode; "" until detected
	stats Stats
	// cache is what the last Apply verified or wrote without error, for
	// Applies without Model.Verify; nil = unknown. Only Apply touches it.
	cache *verified
	// noIPv6 is the namespace where weft is known to hold no IPv6 set
	// (checked, or retired, by an Apply without IPv6); nil = unknown.
	// Only Apply and Cleanup touch it.
	noIPv6 *nsID
	// ipv6 is whether the last Apply carried IPv6: Findings then reads
	// ip6tables too.
	ipv6 bool
}

// verified is weft's state in one network namespace as the last Apply
// left it: confirmed by a listing or written without error. With it, a
// changed CIDR costs one ipset write and no listing of 20,000 members (a
// netlink dump, ~0.4 s at that size) and no iptables-save.
type verified struct {
	ns          nsID
	mode, mode6 string
	sets        map[string]map[netip.Prefix]bool
	// chains is, per family, the rendered chain bodies the tables were
	// last verified to hold; nil when a table could not be read or written.
	chains map[*family]map[string][]string
}

// nsID identifies a network namespace (device and inode of its nsfs file).
type nsID struct{ dev, ino uint64 }

// currentNS identifies the calling thread's network namespace: the backend
// acts wherever it is called, and a cache is only valid where it was made.
func currentNS() (nsID, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return nsID{}, fmt.Errorf("identify network namespace: %w", err)
	}
	return nsID{dev: st.Dev, ino: st.Ino}, nil
}

var _ packetfilter.Backend = (*Backend)(nil)

// New returns a Backend. With no mode the host's mode is detected on first
// use, in the namespace of that call.
func New(opts ...Option) (*Backend, error) {
	b := &Backend{log: slog.Default(), run: OSRunner{}, sets: NetlinkIPSets{}}
	for _, o := range opts {
		o(b)
	}
	switch b.mode {
	case "", ModeLegacy, ModeNFT:
	default:
		return nil, fmt.Errorf("iptables mode %q: want legacy, nft or empty (detect)", b.mode)
	}
	b.mode6 = b.mode // a pinned mode holds for both families
	return b, nil
}

// Name implements packetfilter.Backend.
func (b *Backend) Name() string { return "iptables" }

// Mode returns the iptables mode in use, "" before the first call
// detected it.
func (b *Backend) Mode() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.mode
}

// Mode6 returns the ip6tables mode in use, "" before a call needing IPv6
// detected it.
func (b *Backend) Mode6() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.mode6
}

// LastApplyStats returns the counters of the most recent Apply.
func (b *Backend) LastApplyStats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stats
}

// counter wraps the runner and the ipsets so one operation's work is
// counted without threading counters through every helper.
type counter struct {
	b *Backend
	s Stats
}

func (c *counter) Run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	c.s.Execs++
	if strings.HasSuffix(name, "-restore") {
		c.s.Restores++
	}
	return c.b.run.Run(ctx, stdin, name, args...)
}

// resolveMode returns family f's mode, detecting it on first use.
func (b *Backend) resolveMode(ctx context.Context, r Runner, f *family) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	mode := &b.mode
	if f.ipv6 {
		mode = &b.mode6
	}
	if *mode == "" {
		m, reason := detectMode(ctx, r, f)
		b.log.Info(f.name+" mode detected", "mode", m, "reason", reason)
		*mode = m
	}
	return *mode
}

func (b *Backend) save(ctx context.Context, r Runner, f *family, mode string) (dump, error) {
	bin := binariesFor(f, mode).save
	out, err := r.Run(ctx, nil, bin)
	if err != nil {
		return dump{}, fmt.Errorf("read %s-%s rules: %w", f.name, mode, err)
	}
	return parseSave(string(out)), nil
}

func (b *Backend) restore(ctx context.Context, r Runner, f *family, mode string, input []byte) error {
	// -w: wait for the xtables lock like every well-behaved writer;
	// --noflush: touch only what the input names.
	bin := binariesFor(f, mode).restore
	if _, err := r.Run(ctx, input, bin, "-w", "5", "--noflush"); err != nil {
		return fmt.Errorf("write weft chains with %s: %w", bin, err)
	}
	return nil
}

// plan is what one family's part of an Apply must write.
type plan struct {
	f             *family
	local, remote []netip.Prefix
	chains        map[string][]string
}

// plans renders m: the IPv4 family always, as before IPv6; the IPv6 one
// while m holds an IPv6 CIDR. Nothing touches the kernel before every
// family rendered.
func plans(m packetfilter.Model) ([]plan, error) {
	if err := m.CheckCIDRs(); err != nil {
		return nil, err
	}
	// Without IPv6 the lists are IPv4 already: no split, no copy of
	// 20,000 CIDRs per Apply.
	l4, r4 := m.LocalCIDRs, m.RemoteCIDRs
	var l6, r6 []netip.Prefix
	if m.HasIPv6() {
		l4, l6, _ = packetfilter.Split(m.LocalCIDRs)
		r4, r6, _ = packetfilter.Split(m.RemoteCIDRs)
	}
	var out []plan
	for _, p := range []struct {
		f             *family
		local, remote []netip.Prefix
	}{{ipv4, l4, r4}, {ipv6, l6, r6}} {
		if p.f.ipv6 && !m.HasIPv6() {
			continue
		}
		chains, err := renderFamily(m, p.f)
		if err != nil {
			return nil, fmt.Errorf("render %s rules: %w", p.f.name, err)
		}
		local, err := familyMembers(p.f, p.local)
		if err != nil {
			return nil, fmt.Errorf("local CIDRs: %w", err)
		}
		remote, err := familyMembers(p.f, p.remote)
		if err != nil {
			return nil, fmt.Errorf("remote CIDRs: %w", err)
		}
		out = append(out, plan{f: p.f, local: local, remote: remote, chains: chains})
	}
	return out, nil
}

// Apply implements packetfilter.Backend. With m.Verify (or nothing
// verified yet in this namespace) it lists the ipsets and runs one
// iptables-save per family, and iptables-restore only when a table
// differs, once for all tables of a family. Without it, it trusts what the
// last Apply verified: a changed CIDR is one ipset write, and unchanged
// chains cost no exec. ip6tables is only run while the model holds IPv6;
// an Apply without IPv6 removes weft's IPv6 objects once it finds them.
func (b *Backend) Apply(ctx context.Context, m packetfilter.Model) (err error) {
	c := &counter{b: b}
	b.mu.Lock()
	cache := b.cache
	b.cache = nil // until this Apply succeeds, nothing is known
	noIPv6 := b.noIPv6
	b.mu.Unlock()
	keep := false // keep the cache despite an error (degraded)
	defer func() {
		b.mu.Lock()
		b.stats = c.s
		if err == nil || keep {
			b.cache = cache
		}
		b.noIPv6 = noIPv6
		b.mu.Unlock()
	}()

	ps, err := plans(m)
	if err != nil {
		return err
	}
	mode := b.resolveMode(ctx, c, ipv4)
	mode6 := ""
	if len(ps) > 1 {
		mode6 = b.resolveMode(ctx, c, ipv6)
	}
	ns, err := currentNS()
	if err != nil {
		return err
	}
	if m.Verify || cache == nil || cache.ns != ns || cache.mode != mode || (mode6 != "" && cache.mode6 != mode6) {
		cache = &verified{ns: ns, mode: mode, mode6: mode6, sets: map[string]map[netip.Prefix]bool{}, chains: map[*family]map[string][]string{}}
	}

	var hard, soft []error
	for _, p := range ps {
		md := mode
		if p.f.ipv6 {
			md, noIPv6 = mode6, nil
		}
		if err := b.applyFamily(ctx, c, p, md, cache); err != nil {
			if !errors.Is(err, ErrIncompatibleTable) {
				return err
			}
			if errors.Is(err, packetfilter.ErrDegraded) {
				soft = append(soft, err)
			} else {
				hard = append(hard, err)
			}
		}
	}
	b.mu.Lock()
	b.ipv6 = len(ps) > 1
	b.mu.Unlock()
	if len(ps) == 1 && (noIPv6 == nil || *noIPv6 != ns) {
		if err := b.retireIPv6(ctx, c); err != nil {
			return err
		}
		noIPv6 = &ns
	}
	if len(hard) > 0 {
		if len(soft) > 0 {
			// Not degraded as a whole: a table carrying traffic is
			// unprogrammed.
			return fmt.Errorf("%w; also %v", errors.Join(hard...), errors.Join(soft...))
		}
		return errors.Join(hard...)
	}
	if len(soft) > 0 {
		// The sets are known; the tables are re-read next time.
		keep = true
		return errors.Join(soft...)
	}
	return nil
}

// applyFamily writes one family's sets and chains. Tables iptables cannot
// parse are left alone and returned as an *IncompatibleTableError.
func (b *Backend) applyFamily(ctx context.Context, c *counter, p plan, mode string, cache *verified) error {
	// Sets first: iptables-restore refuses a rule naming a missing set.
	for _, s := range []struct {
		name string
		want []netip.Prefix
	}{{p.f.setLocal, p.local}, {p.f.setRemote, p.remote}} {
		have, err := b.syncSet(c, p.f, s.name, s.want, cache.sets[s.name])
		if err != nil {
			return err
		}
		cache.sets[s.name] = have
	}

	if known := cache.chains[p.f]; known != nil && maps.EqualFunc(known, p.chains, slices.Equal) {
		return nil
	}
	delete(cache.chains, p.f)
	d, err := b.save(ctx, c, p.f, mode)
	if err != nil {
		return err
	}
	var in bytes.Buffer
	var skipped []string
	for _, t := range tableOrder {
		if d.isIncompatible(t) {
			// Writing blind would duplicate our jump on every sync since we
			// cannot see it; leave the table alone and report.
			skipped = append(skipped, t)
			continue
		}
		writeTable(&in, t, d.tables[t], p.chains)
	}
	if in.Len() > 0 {
		b.log.Debug(p.f.name+" chains differ, restoring", "mode", mode, "bytes", in.Len())
		if err := b.restore(ctx, c, p.f, mode, in.Bytes()); err != nil {
			return err
		}
	}
	if len(skipped) > 0 {
		err := &IncompatibleTableError{Mode: mode, Tables: skipped, IPv6: p.f.ipv6}
		b.log.Warn(p.f.name+" tables left unprogrammed", "mode", mode, "tables", skipped, "err", err)
		return err
	}
	cache.chains[p.f] = p.chains
	return nil
}

// retireIPv6 removes weft's IPv6 objects when its IPv6 sets exist (IPv6
// left the model, maybe while weftd was down); two set listings when they
// do not.
func (b *Backend) retireIPv6(ctx context.Context, c *counter) error {
	found := false
	for _, name := range []string{SetLocal6, SetRemote6} {
		c.s.IPSetReads++
		_, _, exists, err := b.sets.List(name)
		if err != nil {
			return err
		}
		found = found || exists
	}
	if !found {
		return nil
	}
	b.log.Info("IPv6 left the model: removing weft's ip6tables chains and IPv6 ipsets")
	var errs []error
	mode := b.resolveMode(ctx, c, ipv6)
	for _, md := range []string{mode, otherMode(mode)} {
		if err := b.cleanupTables(ctx, c, ipv6, md); err != nil && !errors.Is(err, exec.ErrNotFound) && !errors.Is(err, ErrUnavailable) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove weft's IPv6 rules: %w", err)
	}
	for _, name := range []string{SetLocal6, SetRemote6} {
		c.s.IPSetWrites++
		if err := b.sets.Destroy(name); err != nil {
			return fmt.Errorf("remove weft's IPv6 sets: %w", err)
		}
	}
	return nil
}

// writeTable appends to in the restore commands that make table t hold
// weft's chains as rendered, or nothing when it already does.
func writeTable(in *bytes.Buffer, t string, cur *table, chains map[string][]string) {
	if cur == nil {
		cur = newTable()
	}
	var body, jumps bytes.Buffer
	for _, h := range hooks {
		if h.table != t {
			continue
		}
		want := chains[h.chain]
		if !cur.chains[h.chain] || !slices.Equal(cur.rules[h.chain], want) {
			fmt.Fprintf(&body, ":%s - [0:0]\n-F %s\n", h.chain, h.chain)
			for _, r := range want {
				fmt.Fprintf(&body, "-A %s %s\n", h.chain, r)
			}
		}
		builtin := cur.rules[h.builtin]
		var refs []string
		for _, r := range builtin {
			if target(r) == h.chain {
				refs = append(refs, r)
			}
		}
		if len(refs) == 1 && len(builtin) > 0 && builtin[0] == jumpSpec(h.chain) {
			continue
		}
		// Missing, moved or duplicated: delete every jump by its exact spec
		// (a rule number could have moved since the save) and insert one.
		for _, r := range refs {
			fmt.Fprintf(&jumps, "-D %s %s\n", h.builtin, r)
		}
		fmt.Fprintf(&jumps, "-I %s 1 %s\n", h.builtin, jumpSpec(h.chain))
	}
	if body.Len() == 0 && jumps.Len() == 0 {
		return
	}
	fmt.Fprintf(in, "*%s\n", t)
	in.Write(body.Bytes())
	in.Write(jumps.Bytes())
	in.WriteString("COMMIT\n")
}

// syncSet makes the ipset hold exactly want, touching only the members that
// differ, and returns its members. known is what the set was verified to
// hold; nil means list it.
func (b *Backend) syncSet(c *counter, f *family, name string, want []netip.Prefix, known map[netip.Prefix]bool) (map[netip.Prefix]bool, error) {
	if known == nil {
		c.s.IPSetReads++
		have, typ, exists, err := b.sets.List(name)
		if err != nil {
			return nil, err
		}
		if exists && typ != "" && typ != setType {
			return nil, fmt.Errorf("ipset %s has type %s, weft needs %s: run weftd cleanup", name, typ, setType)
		}
		for _, p := range have {
			if p.Addr().Is6() != f.ipv6 {
				return nil, fmt.Errorf("ipset %s holds %s, not of the family weft needs there: run weftd cleanup", name, p)
			}
		}
		if !exists {
			c.s.IPSetWrites++
			if err := b.sets.Create(name, f.ipv6); err != nil {
				return nil, err
			}
		}
		known = make(map[netip.Prefix]bool, len(have))
		for _, p := range have {
			known[p] = true
		}
	}
	wantSet := make(map[netip.Prefix]bool, len(want))
	var add, del []netip.Prefix
	for _, p := range want {
		wantSet[p] = true
		if !known[p] {
			add = append(add, p)
		}
	}
	for p := range known {
		if !wantSet[p] {
			del = append(del, p)
		}
	}
	slices.SortFunc(del, netip.Prefix.Compare)
	// Deletions first: hash:net allows nested members, but a member
	// re-added under the same key must not be refused as existing.
	for _, ch := range []struct {
		ps []netip.Prefix
		do func(string, []netip.Prefix) error
	}{{del, b.sets.Del}, {add, b.sets.Add}} {
		if len(ch.ps) == 0 {
			continue
		}
		c.s.IPSetWrites += len(ch.ps)
		if err := ch.do(name, ch.ps); err != nil {
			return nil, err
		}
	}
	return wantSet, nil
}

// Cleanup implements packetfilter.Backend. It removes weft's jumps and
// chains in both modes (the mode may have changed since they were written)
// of both families, then the ipsets, which cannot go while a rule names
// them. A mode whose binaries are not installed counts as a failure here;
// CleanupReport tells the two apart.
func (b *Backend) Cleanup(ctx context.Context) error {
	unchecked, err := b.CleanupReport(ctx)
	return errors.Join(append([]error{err}, unchecked...)...)
}

// CleanupReport is Cleanup that cleans what it can reach and returns, apart
// from its failures, what it could not look at: a mode whose save binary is
// not installed (an image built without iptables, on an nftables node, or
// without ip6tables). Such a mode may still hold chains an earlier weftd
// wrote with binaries it had; the caller reports them as not checked
// instead of failing, so an uninstall does not crash-loop over a tool the
// node never needed.
func (b *Backend) CleanupReport(ctx context.Context) (unchecked []error, err error) {
	b.mu.Lock()
	b.cache = nil
	b.noIPv6 = nil
	b.mu.Unlock()
	r := &counter{b: b}
	var errs []error
	for _, f := range families {
		mode := b.resolveMode(ctx, r, f)
		for _, md := range []string{mode, otherMode(mode)} {
			err := b.cleanupTables(ctx, r, f, md)
			switch {
			case err == nil:
			case errors.Is(err, exec.ErrNotFound):
				unchecked = append(unchecked, fmt.Errorf("%s-%s not checked: %w", f.name, md, err))
			case md != mode && errors.Is(err, ErrUnavailable):
				// nothing of ours can be in a mode the kernel does not offer
			default:
				errs = append(errs, err)
			}
		}
	}
	for _, s := range []string{SetLocal, SetRemote, SetLocal6, SetRemote6} {
		if err := b.sets.Destroy(s); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return unchecked, fmt.Errorf("iptables cleanup: %w", err)
	}
	return unchecked, nil
}

// cleanupTables removes weft's chains and every jump to them from family
// f's tables of mode md, in one restore.
func (b *Backend) cleanupTables(ctx context.Context, r Runner, f *family, md string) error {
	d, err := b.save(ctx, r, f, md)
	if err != nil {
		return err
	}
	var errs []error
	var in bytes.Buffer
	for _, t := range tableOrder {
		if d.isIncompatible(t) {
			errs = append(errs, fmt.Errorf("clean up table %s: %w", t, &IncompatibleTableError{Mode: md, Tables: []string{t}, IPv6: f.ipv6}))
			continue
		}
		writeCleanup(&in, t, d.tables[t])
	}
	if in.Len() > 0 {
		if err := b.restore(ctx, r, f, md, in.Bytes()); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func writeCleanup(in *bytes.Buffer, t string, cur *table) {
	if cur == nil {
		return
	}
	var cmds bytes.Buffer
	// Any rule anywhere that jumps to our chains would block their removal.
	chainNames := make([]string, 0, len(cur.rules))
	for ch := range cur.rules {
		chainNames = append(chainNames, ch)
	}
	slices.Sort(chainNames)
	for _, ch := range chainNames {
		if ownChain(ch) {
			continue
		}
		for _, r := range cur.rules[ch] {
			if ownChain(target(r)) {
				fmt.Fprintf(&cmds, "-D %s %s\n", ch, r)
			}
		}
	}
	for _, h := range hooks {
		if h.table == t && cur.chains[h.chain] {
			fmt.Fprintf(&cmds, "-F %s\n-X %s\n", h.chain, h.chain)
		}
	}
	if cmds.Len() == 0 {
		return
	}
	fmt.Fprintf(in, "*%s\n%sCOMMIT\n", t, cmds.String())
}

// Finding types and reasons this backend reports.
const (
	FindingForwardDrop = "ForeignForwardDrop"
	FindingUnparsable  = "ForeignRulesUnparsable"
	FindingUnavailable = "IptablesUnavailable"
	ReasonPolicyDrop   = "ForwardPolicyDrop"
	ReasonIncompatible = "IncompatibleTable"
	ReasonUnavailable  = "SaveFailed"
)

// Findings implements packetfilter.Backend. It only reads: iptables-save
// of both modes (legacy without -t, which would create tables), and
// ip6tables-save likewise while weft carries IPv6.
func (b *Backend) Findings(ctx context.Context) []packetfilter.Finding {
	r := &counter{b: b}
	b.mu.Lock()
	fams := families[:1]
	if b.ipv6 {
		fams = families
	}
	b.mu.Unlock()
	var out []packetfilter.Finding
	for _, f := range fams {
		out = append(out, b.familyFindings(ctx, r, f)...)
	}
	return out
}

func (b *Backend) familyFindings(ctx context.Context, r Runner, f *family) []packetfilter.Finding {
	mode := b.resolveMode(ctx, r, f)
	var out []packetfilter.Finding
	for _, md := range []string{mode, otherMode(mode)} {
		d, err := b.save(ctx, r, f, md)
		if err != nil {
			if md == mode {
				out = append(out, packetfilter.Finding{
					Type: FindingUnavailable, Reason: ReasonUnavailable,
					Message: fmt.Sprintf("cannot read %s-%s rules: %v", f.name, md, err),
					Fix:     "install the iptables package with both iptables-legacy and iptables-nft (and ip6tables for IPv6), or set iptablesMode",
				})
			}
			continue
		}
		for _, t := range d.incompatible {
			nftFamily := "ip"
			if f.ipv6 {
				nftFamily = "ip6"
			}
			out = append(out, packetfilter.Finding{
				Type:    FindingUnparsable,
				Reason:  ReasonIncompatible,
				Message: fmt.Sprintf("%s-%s cannot parse table %s: another tool wrote native nftables rules into it; weft cannot program or verify its chains there", f.name, md, t),
				Fix:     fmt.Sprintf("find the tool with `nft list table %s %s` and have it use its own nft table or iptables syntax, or run weft with packetFilter: nftables", nftFamily, t),
			})
		}
		if ft := d.tables["filter"]; ft != nil && ft.policies["FORWARD"] == "DROP" {
			msg := fmt.Sprintf("%s-%s filter FORWARD has policy DROP (Docker does this)", f.name, md)
			if md == mode {
				msg += "; weft's WEFT-FORWARD jump at position 1 accepts its own devices, but forwarded pod traffic on other interfaces may be dropped"
			} else {
				msg += "; weft writes to " + f.name + "-" + mode + ", and an accept there does not override a drop in the other mode"
			}
			out = append(out, packetfilter.Finding{
				Type:    FindingForwardDrop,
				Reason:  ReasonPolicyDrop,
				Message: msg,
				Fix:     fmt.Sprintf("accept weft's traffic before the drop, e.g. `%s-%s -I DOCKER-USER -m set --match-set %s src -m set --match-set %s dst -j ACCEPT` and the reverse, or set the FORWARD policy to ACCEPT", f.name, md, f.setLocal, f.setRemote),
			})
		}
	}
	return out
}
