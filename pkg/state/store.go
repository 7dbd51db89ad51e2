// Package state keeps weftd's durable record: the attachments the plugin
// reported, the DELs it remembers (tombstones.go) and the CNI interface the
// daemon discovered. The record is a snapshot (one JSON document with a
// checksum, written to a temp file and renamed over the old one) and a
// journal of the mutations since (journal.go): a mutation appends one
// checksummed record, whatever the number of attachments; the snapshot is
// rewritten off the request path when the journal grows. A torn or corrupt
// file or record is detected, reported, set aside or dropped, and the state
// rebuilt, never a crash.
//
// Durability: a mutation returns once its record is in the kernel's page
// cache. That survives anything that happens to weftd (kill -9, OOM kill,
// upgrade): the page cache belongs to the kernel, not to the process. The
// fsync of the journal follows off the request path (coalesced); it only
// matters for a power cut or kernel crash with stateDir on disk, and then
// only for the last moment's writes. Production keeps stateDir on tmpfs
// (/run), which a reboot empties anyway, and after a reboot the runtime
// re-runs ADD for every pod. Writes are group-committed: concurrent
// mutations share one append.
package state

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weft-net/weft/pkg/api"
)

const (
	fileName = "state.json"
	// tombFileName held the remembered DELs of a weftd before the journal;
	// it is read once and folded into the snapshot.
	tombFileName = "tombstones.json"
	// minCompact is the journal size below which it is never compacted:
	// ~2,500 ADD+DEL pairs, replayed at start in a few milliseconds.
	minCompact = 1 << 20
	// syncDelay is how long an append waits for its background fsync (on
	// disk): the window a power cut can take, shorter than ext4's own
	// 5 s commit interval for anything not fsynced.
	syncDelay = time.Second
)

// Attachment is one pod interface the plugin reported on ADD.
type Attachment struct {
	ContainerID    string      `json:"containerID"`
	IfName         string      `json:"ifName"`
	Netns          string      `json:"netns,omitempty"`
	PodNamespace   string      `json:"podNamespace,omitempty"`
	PodName        string      `json:"podName,omitempty"`
	Network        string      `json:"network,omitempty"`
	IPs            []api.PodIP `json:"ips,omitempty"`
	HostInterfaces []string    `json:"hostInterfaces,omitempty"`
	Added          time.Time   `json:"added"`
}

// Key returns the attachment's identity.
func (a Attachment) Key() api.AttachmentKey {
	return api.AttachmentKey{ContainerID: a.ContainerID, IfName: a.IfName}
}

// document is the snapshot written to disk (inside the checksummed
// envelope).
type document struct {
	Attachments []Attachment      `json:"attachments"`
	CNI         *api.CNIInterface `json:"cniInterface,omitempty"`
	Tombstones  []Tombstone       `json:"tombstones,omitempty"`
	// Journal is the sequence number of the first journal file the
	// snapshot does not include; 0 (a snapshot from before the journal)
	// replays them all.
	Journal uint64 `json:"journal,omitempty"`
}

// tombDocument is the document of the tombstones file of earlier versions.
type tombDocument struct {
	Tombstones []Tombstone `json:"tombstones"`
}

type envelope struct {
	Version  int             `json:"version"`
	Checksum string          `json:"checksum"` // sha256 of Data
	Data     json.RawMessage `json:"data"`
}

// Store is the durable state. It is safe for concurrent use.
type Store struct {
	dir string
	log *slog.Logger

	mu sync.Mutex
	contents
	gen         uint64   // bumped by every mutation
	pending     []record // the mutations after flushedGen, in order
	flushedGen  uint64
	flushing    bool // a writer owns the journal (appending or switching it)
	flushed     *sync.Cond
	loadProblem string
	writes      uint64
	syncPending bool // a background fsync is scheduled and has not started
	syncTimer   *time.Timer
	syncDelay   time.Duration
	// volatile is true when dir is on tmpfs/ramfs: there fsync has nothing
	// to write back, so none is scheduled at all.
	volatile bool

	journal      *os.File // the current journal, nil while broken
	seq          uint64   // its sequence number
	journalBytes int64
	// broken: the current journal cannot take appends (a failed or short
	// write may have left a partial record): the next commit writes a
	// snapshot and a new journal before it acknowledges anything.
	broken        bool
	compacting    bool  // a background snapshot is being written
	snapshotBytes int64 // size of the last snapshot written
	minCompact    int64
	dirDirty      bool // a journal was created since the last directory fsync
	bg            sync.WaitGroup

	// snapMu orders the snapshot writers (a background compaction and a
	// rebuild after a failed append): an older snapshot must never land
	// over a newer one, whose journals may be gone already.
	snapMu   sync.Mutex
	snapNext uint64 // the journal number of the last snapshot written
}

// Open loads the store from dir (created 0700 if missing): the snapshot and
// the journals after it. A missing file is an empty store; a corrupt one is
// renamed aside, a torn or corrupt journal record dropped with what follows
// it in its file, each reported by LoadProblem. Open then writes what it
// loaded as a new snapshot and starts a new journal, so nothing is ever
// appended after a torn record.
func Open(dir string, log *slog.Logger) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create state dir %s: %w", dir, err)
	}
	l, err := load(dir)
	if err != nil {
		return nil, err
	}
	s := &Store{dir: dir, log: log, contents: l.contents, volatile: inMemory(dir), minCompact: minCompact, syncDelay: syncDelay}
	s.flushed = sync.NewCond(&s.mu)
	problems := l.problems
	for _, c := range l.corrupt {
		aside := fmt.Sprintf("%s.corrupt-%d", c.path, time.Now().UnixNano())
		if err := os.Rename(c.path, aside); err != nil {
			return nil, fmt.Errorf("set aside corrupt %s %s: %w", c.what, c.path, err)
		}
		problems = append(problems, fmt.Sprintf("%s %s was corrupt (%v); moved to %s and rebuilt from the journal and events", c.what, c.path, c.err, aside))
		log.Warn(c.what+" corrupt, set aside", "path", c.path, "err", c.err, "movedTo", aside)
	}
	for _, p := range l.problems {
		log.Warn("state journal damaged; the records up to the damage are kept", "problem", p)
	}
	s.loadProblem = strings.Join(problems, "; ")
	removeTemps(dir)
	// The new journal's number is above every file present, so a journal
	// left with a torn tail is never appended to.
	last := uint64(0)
	for _, seqs := range [][]uint64{l.journals, l.stale} {
		for _, q := range seqs {
			last = max(last, q)
		}
	}
	s.seq = last
	s.mu.Lock()
	err = s.rebuildLocked()
	s.mu.Unlock()
	if err != nil {
		// Not fatal: the daemon serves without a writable state dir and
		// the next mutation tries again (and reports its error).
		log.Warn("cannot write the state; retried at the next change", "dir", dir, "err", err)
		s.loadProblem = joinProblems(s.loadProblem, fmt.Sprintf("cannot write the state: %v", err))
	}
	if l.legacyTombs && err == nil {
		_ = os.Remove(filepath.Join(dir, tombFileName)) // folded into the snapshot
	}
	return s, nil
}

func joinProblems(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// removeTemps removes the temp files of snapshot writes a crash cut short.
func removeTemps(dir string) {
	matches, _ := filepath.Glob(filepath.Join(dir, ".state-*.tmp"))
	for _, m := range matches {
		_ = os.Remove(m)
	}
}

// Close waits for a background snapshot, runs a scheduled fsync now and
// closes the journal. The store must not be used after it. (weftd does not
// need it to survive kill -9: every acknowledged mutation already does.)
func (s *Store) Close() error {
	s.bg.Wait()
	s.mu.Lock()
	for s.flushing {
		s.flushed.Wait()
	}
	t := s.syncTimer
	s.mu.Unlock()
	if t != nil && t.Stop() {
		s.syncNow()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.journal == nil {
		return nil
	}
	err := s.journal.Close()
	s.journal, s.broken = nil, true
	return err
}

func decode(data []byte) (*document, error) {
	var doc document
	if err := decodeInto(data, &doc); err != nil {
		return nil, err
	}
	return &doc, nil
}

// decodeInto checks data's envelope and decodes its document into v.
func decodeInto(data []byte, v any) error {
	var env envelope
	if err := json.Unmarshal(data, &env); err != nil {
		return fmt.Errorf("decode envelope: %w", err)
	}
	if env.Version != 1 {
		return fmt.Errorf("unknown state version %d", env.Version)
	}
	sum := sha256.Sum256(env.Data)
	if hex.EncodeToString(sum[:]) != env.Checksum {
		return errors.New("checksum mismatch (torn or edited file)")
	}
	if err := json.Unmarshal(env.Data, v); err != nil {
		return fmt.Errorf("decode document: %w", err)
	}
	return nil
}

// LoadProblem describes the corrupt files and records found at Open, or "".
func (s *Store) LoadProblem() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.loadProblem
}

// Writes is the number of journal appends and snapshots written on the
// request path (for benchmarks and tests).
func (s *Store) Writes() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writes
}

// mutateLocked applies r and queues it for the journal; it returns the
// generation to commit.
func (s *Store) mutateLocked(r record) uint64 {
	s.apply(r)
	s.pending = append(s.pending, r)
	s.gen++
	return s.gen
}

// Put records an attachment (replacing one with the same key) and returns
// once it is durable (see the package comment for what that means).
func (s *Store) Put(ctx context.Context, a Attachment) error {
	s.mu.Lock()
	g := s.mutateLocked(record{Op: opPut, A: &a})
	s.mu.Unlock()
	return s.commit(ctx, g)
}

// Delete forgets an attachment; it returns whether it was known, once the
// removal is durable. Deleting an unknown key writes nothing.
func (s *Store) Delete(ctx context.Context, k api.AttachmentKey) (bool, error) {
	s.mu.Lock()
	if _, ok := s.attachments[k]; !ok {
		s.mu.Unlock()
		return false, nil
	}
	g := s.mutateLocked(record{Op: opDel, K: &k, Forget: true})
	s.mu.Unlock()
	return true, s.commit(ctx, g)
}

// GC forgets every attachment of network that is not in valid. An empty
// network name matches attachments recorded without one.
func (s *Store) GC(ctx context.Context, network string, valid []api.AttachmentKey) (int, error) {
	keep := make(map[api.AttachmentKey]bool, len(valid))
	for _, k := range valid {
		keep[k] = true
	}
	s.mu.Lock()
	var gone []api.AttachmentKey
	for k, a := range s.attachments {
		if a.Network == network && !keep[k] {
			gone = append(gone, k)
		}
	}
	if len(gone) == 0 {
		s.mu.Unlock()
		return 0, nil
	}
	g := s.mutateLocked(record{Op: opGC, Keys: gone})
	s.mu.Unlock()
	return len(gone), s.commit(ctx, g)
}

// SetCNI records the CNI interface (nil clears it) durably.
func (s *Store) SetCNI(ctx context.Context, c *api.CNIInterface) error {
	s.mu.Lock()
	if c != nil {
		cp := *c
		c = &cp
	}
	g := s.mutateLocked(record{Op: opCNI, CNI: c})
	s.mu.Unlock()
	return s.commit(ctx, g)
}

// CNI returns the recorded CNI interface, or nil.
func (s *Store) CNI() *api.CNIInterface {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cni == nil {
		return nil
	}
	c := *s.cni
	return &c
}

// Get returns one attachment.
func (s *Store) Get(k api.AttachmentKey) (Attachment, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.attachments[k]
	return a, ok
}

// Len is the number of attachments.
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.attachments)
}

// List returns the attachments sorted by key.
func (s *Store) List() []Attachment {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sorted()
}

func (c *contents) sorted() []Attachment {
	out := make([]Attachment, 0, len(c.attachments))
	for _, a := range c.attachments {
		out = append(out, a)
	}
	sortAttachments(out)
	return out
}

func sortAttachments(out []Attachment) {
	sort.Slice(out, func(i, j int) bool {
		if out[i].ContainerID != out[j].ContainerID {
			return out[i].ContainerID < out[j].ContainerID
		}
		return out[i].IfName < out[j].IfName
	})
}

// commit waits until generation g is written. The first waiter that finds no
// writer in progress becomes the writer for everything pending; the others
// wait for it: one append serves every mutation that arrived meanwhile.
func (s *Store) commit(ctx context.Context, g uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.flushedGen < g {
		if err := ctx.Err(); err != nil {
			return err
		}
		if s.flushing {
			s.flushed.Wait()
			continue
		}
		var err error
		if s.broken {
			err = s.rebuildLocked()
		} else {
			err = s.appendLocked()
		}
		if err != nil {
			return fmt.Errorf("write state: %w", err)
		}
	}
	return nil
}

// appendLocked writes the pending records to the journal as the writer
// (s.mu is released during the write). When the journal has grown past its
// bound, it then switches to a new one and leaves the snapshot that covers
// the old one to a background goroutine.
func (s *Store) appendLocked() error {
	s.flushing = true
	target, recs, j := s.gen, s.pending, s.journal
	s.pending = nil
	// The snapshot must hold exactly what the old journal will: the
	// records written by this append, no later ones. So it is copied now.
	rotate := !s.compacting && s.journalBytes >= max(s.minCompact, 2*s.snapshotBytes)
	var snap snapshot
	if rotate {
		snap = s.captureLocked(s.seq + 1)
		s.compacting = true
	}
	s.mu.Unlock()
	n, err := writeRecords(j, recs)
	var next *os.File
	var jerr error
	if err == nil && rotate {
		next, jerr = s.createJournal(snap.next)
	}
	s.mu.Lock()
	s.flushing = false
	defer s.flushed.Broadcast()
	s.journalBytes += int64(n)
	if err != nil {
		s.broken = true // a partial record may end the file
		s.compacting = s.compacting && !rotate
		return err
	}
	s.writes++
	s.flushedGen = max(s.flushedGen, target)
	if rotate {
		if jerr != nil {
			s.log.Warn("cannot start a new state journal; the current one keeps growing", "err", jerr)
			s.compacting = false
		} else {
			old := s.journal
			s.journal, s.seq, s.journalBytes, s.dirDirty = next, snap.next, 0, true
			s.bg.Add(1)
			go s.compact(old, snap)
		}
	}
	s.syncSoonLocked()
	return nil
}

// rebuildLocked writes a snapshot of everything and starts a new journal,
// as the writer (s.mu released meanwhile): at Open, and after a failed
// append, before anything more is acknowledged.
func (s *Store) rebuildLocked() error {
	s.flushing = true
	target := s.gen
	s.pending = nil // the snapshot holds them
	snap := s.captureLocked(s.seq + 1)
	s.mu.Unlock()
	size, err := s.writeSnapshot(snap, true)
	var next *os.File
	if err == nil {
		next, err = s.createJournal(snap.next)
	}
	if err == nil && !s.volatile {
		err = syncPath(s.dir)
	}
	if err == nil {
		s.removeJournalsBelow(snap.next)
	}
	s.mu.Lock()
	s.flushing = false
	defer s.flushed.Broadcast()
	if err != nil {
		s.broken = true
		return err
	}
	if s.journal != nil {
		s.journal.Close()
	}
	s.journal, s.seq, s.journalBytes, s.broken, s.snapshotBytes = next, snap.next, 0, false, size
	s.writes++
	s.flushedGen = max(s.flushedGen, target)
	return nil
}

// compact writes the snapshot that covers old (closed here) and the
// journals before it, then removes them.
func (s *Store) compact(old *os.File, snap snapshot) {
	defer s.bg.Done()
	if !s.volatile {
		_ = old.Sync() // until the snapshot is down, it is the record
	}
	old.Close()
	size, err := s.writeSnapshot(snap, true)
	s.mu.Lock()
	s.compacting = false
	if err == nil {
		s.snapshotBytes = size
	}
	s.mu.Unlock()
	if errors.Is(err, errSuperseded) {
		return
	}
	if err != nil {
		// The journals stay, and Open replays them all.
		s.log.Warn("cannot write the state snapshot; the journal is kept", "err", err)
		return
	}
	s.removeJournalsBelow(snap.next)
}

// snapshot is a copy of the contents at one point of the record sequence.
type snapshot struct {
	attachments []Attachment
	tombstones  []Tombstone
	cni         *api.CNIInterface
	next        uint64 // the journal that starts after it
}

// captureLocked copies the contents (sorted later, outside the lock).
func (s *Store) captureLocked(next uint64) snapshot {
	snap := snapshot{attachments: make([]Attachment, 0, len(s.attachments)), next: next}
	for _, a := range s.attachments {
		snap.attachments = append(snap.attachments, a)
	}
	if len(s.tombstones) > 0 {
		snap.tombstones = make([]Tombstone, 0, len(s.tombstones))
		for k, t := range s.tombstones {
			snap.tombstones = append(snap.tombstones, Tombstone{ContainerID: k.ContainerID, IfName: k.IfName, Deleted: t})
		}
	}
	if s.cni != nil {
		c := *s.cni
		snap.cni = &c
	}
	return snap
}

// writeSnapshot writes snap as state.json (temp file and rename; with
// fsync, on disk, the file is fsynced before the rename and the directory
// after it, since the journals it replaces are removed next), unless a
// newer snapshot was written meanwhile (errSuperseded). It returns the
// file's size.
func (s *Store) writeSnapshot(snap snapshot, fsync bool) (int64, error) {
	s.snapMu.Lock()
	defer s.snapMu.Unlock()
	if snap.next < s.snapNext {
		return 0, errSuperseded
	}
	fsync = fsync && !s.volatile
	sortAttachments(snap.attachments)
	sortTombstones(snap.tombstones)
	data, err := json.Marshal(document{Attachments: snap.attachments, CNI: snap.cni, Tombstones: snap.tombstones, Journal: snap.next})
	if err != nil {
		return 0, fmt.Errorf("encode state: %w", err)
	}
	data = seal(data)
	if err := replaceFile(s.dir, fileName, ".state-*.tmp", data, fsync); err != nil {
		return 0, err
	}
	if fsync {
		if err := syncPath(s.dir); err != nil {
			return 0, err
		}
	}
	s.snapNext = snap.next
	return int64(len(data)), nil
}

// errSuperseded: a newer snapshot is on disk already.
var errSuperseded = errors.New("a newer snapshot was written meanwhile")

func (s *Store) createJournal(seq uint64) (*os.File, error) {
	path := filepath.Join(s.dir, journalName(seq))
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create journal: %w", err)
	}
	return f, nil
}

// removeJournalsBelow removes the journal files a durable snapshot covers.
func (s *Store) removeJournalsBelow(next uint64) {
	seqs, err := journalFiles(s.dir)
	if err != nil {
		s.log.Warn("list old state journals", "err", err)
		return
	}
	for _, q := range seqs {
		if q >= next {
			break
		}
		if err := os.Remove(filepath.Join(s.dir, journalName(q))); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("remove old state journal", "seq", q, "err", err)
		}
	}
}

// writeRecords appends recs to j in one write.
func writeRecords(j *os.File, recs []record) (int, error) {
	buf := make([]byte, 0, 384*len(recs))
	for _, r := range recs {
		var err error
		if buf, err = appendRecord(buf, r); err != nil {
			return 0, err
		}
	}
	n, err := j.Write(buf)
	if err != nil {
		return n, fmt.Errorf("append to journal: %w", err)
	}
	return n, nil
}

// seal wraps a document in the checksummed envelope, by hand: json.Marshal
// would re-validate and compact data, a second pass over a document that
// json.Marshal just wrote compact. The bytes are the same as envelope's
// encoding.
func seal(data []byte) []byte {
	sum := sha256.Sum256(data)
	out := make([]byte, 0, len(data)+128)
	out = append(out, `{"version":1,"checksum":"`...)
	out = hex.AppendEncode(out, sum[:])
	out = append(out, `","data":`...)
	out = append(out, data...)
	return append(out, '}')
}

// syncSoonLocked schedules the fsync of the journal (and of the
// directory, after a new journal) syncDelay from now, in the background.
// One sync at a time is scheduled: appends that land before it starts are
// covered by it, one after it started schedules the next. The delay keeps
// the fsync (and the filesystem journal commit it forces) from competing
// for the CPU with the plugin that just got its answer, and makes a burst
// of pods share one: at most one a syncDelay.
func (s *Store) syncSoonLocked() {
	if s.volatile || s.syncPending {
		return
	}
	s.syncPending = true
	s.syncTimer = time.AfterFunc(s.syncDelay, s.syncNow)
}

func (s *Store) syncNow() {
	s.mu.Lock()
	s.syncPending = false
	j, dir := s.journal, s.dirDirty
	s.dirDirty = false
	s.mu.Unlock()
	if j != nil {
		// A journal closed meanwhile was switched out; its snapshot is
		// fsynced by compact.
		if err := j.Sync(); err != nil && !errors.Is(err, os.ErrClosed) {
			s.log.Warn("background fsync of the state journal failed; it matters only if the machine loses power", "err", err)
		}
	}
	if dir {
		if err := syncPath(s.dir); err != nil {
			s.log.Warn("background fsync of the state directory failed; it matters only if the machine loses power", "err", err)
		}
	}
}

// inMemory reports whether dir is on a filesystem without backing store.
func inMemory(dir string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return false
	}
	return st.Type == unix.TMPFS_MAGIC || st.Type == unix.RAMFS_MAGIC
}

func syncPath(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", path, err)
	}
	return nil
}
