// Package state keeps weftd's durable record: the attachments the plugin
// reported and the CNI interface the daemon discovered. The record is one
// JSON document with a checksum, written to a temp file and renamed over the
// old one, so a reader only ever sees a whole version. A torn or corrupt
// file is detected, set aside and rebuilt, never a crash.
//
// Durability: a mutation returns once the document containing it is in the
// kernel's page cache under its final name. That survives anything that
// happens to weftd (kill -9, OOM kill, upgrade): the page cache belongs to
// the kernel, not to the process. The fsync of the file and its directory
// follows off the request path (coalesced); it only matters for a power cut
// or kernel crash with stateDir on disk, and then only for the last moment's
// writes. Production keeps stateDir on tmpfs (/run), which a reboot empties
// anyway, and after a reboot the runtime re-runs ADD for every pod. Writes
// are group-committed: concurrent mutations share one document write.
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
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weft-net/weft/pkg/api"
)

const (
	fileName = "state.json"
	// tombFileName holds the remembered DELs (tombstones.go). They live
	// apart from the attachments because only a DEL changes them: an ADD
	// writes state.json alone, whatever the number of DELs remembered.
	tombFileName = "tombstones.json"
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

// document is what is written to disk (inside the checksummed envelope).
type document struct {
	Attachments []Attachment      `json:"attachments"`
	CNI         *api.CNIInterface `json:"cniInterface,omitempty"`
	Tombstones  []Tombstone       `json:"tombstones,omitempty"`
}

// tombDocument is the tombstones file's document (same envelope).
type tombDocument struct {
	Tombstones []Tombstone `json:"tombstones"`
}

func joinProblems(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
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

	mu          sync.Mutex
	attachments map[api.AttachmentKey]Attachment
	tombstones  map[api.AttachmentKey]time.Time // see tombstones.go
	cni         *api.CNIInterface
	gen         uint64 // bumped by every mutation
	tombGen     uint64 // bumped by every change of tombstones
	tombWritten uint64 // tombGen of the tombstones file on disk
	flushedGen  uint64
	flushing    bool
	flushErr    error
	flushed     *sync.Cond
	loadProblem string
	writes      uint64
	syncPending bool // a background fsync is scheduled and has not started
	// volatile is true when dir is on tmpfs/ramfs: there fsync has nothing
	// to write back, so none is scheduled at all.
	volatile bool
}

// Open loads the store from dir (created 0700 if missing). A missing file is
// an empty store; a corrupt one is renamed aside and reported by
// LoadProblem, and the store starts empty.
func Open(dir string, log *slog.Logger) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create state dir %s: %w", dir, err)
	}
	s := &Store{dir: dir, log: log, attachments: map[api.AttachmentKey]Attachment{}, tombstones: map[api.AttachmentKey]time.Time{}, volatile: inMemory(dir)}
	s.flushed = sync.NewCond(&s.mu)
	if err := s.loadTombstones(); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, fileName)
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return s, nil
	case err != nil:
		return nil, fmt.Errorf("read state %s: %w", path, err)
	}
	doc, err := decode(data)
	if err != nil {
		aside := fmt.Sprintf("%s.corrupt-%d", path, time.Now().UnixNano())
		if rerr := os.Rename(path, aside); rerr != nil {
			return nil, fmt.Errorf("set aside corrupt state %s: %w", path, rerr)
		}
		s.loadProblem = joinProblems(s.loadProblem, fmt.Sprintf("state file %s was corrupt (%v); moved to %s and rebuilt from events", path, err, aside))
		log.Warn("state file corrupt, starting empty", "path", path, "err", err, "movedTo", aside)
		return s, nil
	}
	for _, a := range doc.Attachments {
		s.attachments[a.Key()] = a
	}
	// Tombstones in state.json come from a weftd that kept them there.
	for _, t := range doc.Tombstones {
		s.tombstones[t.Key()] = t.Deleted
	}
	s.cni = doc.CNI
	return s, nil
}

// loadTombstones reads the tombstones file; a corrupt one is set aside and
// reported like a corrupt state file (spooled ADDs are then ordered by the
// attachments' own times only).
func (s *Store) loadTombstones() error {
	path := filepath.Join(s.dir, tombFileName)
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("read tombstones %s: %w", path, err)
	}
	var doc tombDocument
	if err := decodeInto(data, &doc); err != nil {
		aside := fmt.Sprintf("%s.corrupt-%d", path, time.Now().UnixNano())
		if rerr := os.Rename(path, aside); rerr != nil {
			return fmt.Errorf("set aside corrupt tombstones %s: %w", path, rerr)
		}
		s.loadProblem = fmt.Sprintf("tombstones file %s was corrupt (%v); moved to %s", path, err, aside)
		s.log.Warn("tombstones file corrupt, starting without remembered DELs", "path", path, "err", err, "movedTo", aside)
		return nil
	}
	for _, t := range doc.Tombstones {
		s.tombstones[t.Key()] = t.Deleted
	}
	return nil
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

// LoadProblem describes a corrupt file found at Open, or "".
func (s *Store) LoadProblem() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.loadProblem
}

// Writes is the number of documents written (for benchmarks and tests).
func (s *Store) Writes() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writes
}

// Put records an attachment (replacing one with the same key) and returns
// once it is durable (see the package comment for what that means).
func (s *Store) Put(ctx context.Context, a Attachment) error {
	s.mu.Lock()
	s.attachments[a.Key()] = a
	s.gen++
	g := s.gen
	s.mu.Unlock()
	return s.commit(ctx, g)
}

// Delete forgets an attachment; it returns whether it was known, once the
// removal is durable. Deleting an unknown key writes nothing.
func (s *Store) Delete(ctx context.Context, k api.AttachmentKey) (bool, error) {
	s.mu.Lock()
	_, ok := s.attachments[k]
	if !ok {
		s.mu.Unlock()
		return false, nil
	}
	delete(s.attachments, k)
	s.gen++
	g := s.gen
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
	removed := 0
	for k, a := range s.attachments {
		if a.Network == network && !keep[k] {
			delete(s.attachments, k)
			removed++
		}
	}
	if removed == 0 {
		s.mu.Unlock()
		return 0, nil
	}
	s.gen++
	g := s.gen
	s.mu.Unlock()
	return removed, s.commit(ctx, g)
}

// SetCNI records the CNI interface (nil clears it) durably.
func (s *Store) SetCNI(ctx context.Context, c *api.CNIInterface) error {
	s.mu.Lock()
	if c != nil {
		cp := *c
		c = &cp
	}
	s.cni = c
	s.gen++
	g := s.gen
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
	return s.sortedLocked()
}

func (s *Store) sortedLocked() []Attachment {
	out := make([]Attachment, 0, len(s.attachments))
	for _, a := range s.attachments {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].ContainerID != out[j].ContainerID {
			return out[i].ContainerID < out[j].ContainerID
		}
		return out[i].IfName < out[j].IfName
	})
	return out
}

// commit waits until generation g is written. The first waiter that finds no
// flush in progress becomes the writer for everything pending; the others
// wait for it: one document write serves every mutation that arrived
// meanwhile.
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
		s.flushing = true
		target, tombTarget := s.gen, s.tombGen
		var tombData []byte
		var err error
		if tombTarget != s.tombWritten {
			tombData, err = s.encodeTombstonesLocked()
		}
		var data []byte
		if err == nil {
			data, err = s.encodeLocked()
		}
		s.mu.Unlock()
		// The tombstones first: a DEL is acknowledged only once both are
		// written, and a crash between them leaves a tombstone for an
		// attachment still recorded, which the plugin's retried DEL clears.
		if err == nil && tombData != nil {
			err = s.writeFile(tombFileName, tombData)
		}
		if err == nil {
			err = s.writeFile(fileName, data)
		}
		s.mu.Lock()
		s.flushing = false
		if err == nil && tombData != nil && tombTarget > s.tombWritten {
			s.tombWritten = tombTarget
		}
		if err != nil {
			s.flushErr = err
			s.flushed.Broadcast()
			return fmt.Errorf("write state: %w", err)
		}
		s.writes++
		s.flushErr = nil
		if target > s.flushedGen {
			s.flushedGen = target
		}
		s.flushed.Broadcast()
	}
	return nil
}

func (s *Store) encodeLocked() ([]byte, error) {
	data, err := json.Marshal(document{Attachments: s.sortedLocked(), CNI: s.cni})
	if err != nil {
		return nil, fmt.Errorf("encode state: %w", err)
	}
	return seal(data), nil
}

func (s *Store) encodeTombstonesLocked() ([]byte, error) {
	data, err := json.Marshal(tombDocument{Tombstones: s.tombstonesLocked()})
	if err != nil {
		return nil, fmt.Errorf("encode tombstones: %w", err)
	}
	return seal(data), nil
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

func (s *Store) writeFile(name string, data []byte) error {
	if err := replaceFile(s.dir, name, ".state-*.tmp", data, false); err != nil {
		return err
	}
	s.syncSoon()
	return nil
}

// syncSoon fsyncs the state file and its directory in the background. One
// sync at a time is scheduled: writes that land before it starts are
// covered by it, a write after it started schedules the next.
func (s *Store) syncSoon() {
	if s.volatile {
		return
	}
	s.mu.Lock()
	if s.syncPending {
		s.mu.Unlock()
		return
	}
	s.syncPending = true
	s.mu.Unlock()
	go func() {
		s.mu.Lock()
		s.syncPending = false
		s.mu.Unlock()
		for _, name := range []string{tombFileName, fileName} {
			err := syncPath(filepath.Join(s.dir, name))
			if name == tombFileName && errors.Is(err, os.ErrNotExist) {
				continue // no DEL remembered yet
			}
			if err != nil {
				s.log.Warn("background fsync of the state failed; it matters only if the machine loses power", "file", name, "err", err)
				return
			}
		}
		if err := syncPath(s.dir); err != nil {
			s.log.Warn("background fsync of the state directory failed; it matters only if the machine loses power", "err", err)
		}
	}()
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
