package state

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/weft-net/weft/pkg/api"
)

// The journal: one record per mutation, appended to the current journal
// file with a single write(2) (O_APPEND), so a mutation costs the same
// whatever the number of attachments and remembered DELs, and no file is
// created or renamed on the request path. On ext4 a rename over an existing
// file makes the kernel allocate and start writing back the new file's
// blocks at once (auto_da_alloc); measured here, a 600-byte temp write and
// rename took ~0.5 ms on disk and ~0.1 ms on tmpfs, an append ~10 µs on
// either.
//
// A record is one line: the CRC-32C of the JSON as 8 hex digits, a space,
// the JSON, a newline. A line that does not end in a newline is a torn
// tail (the process died during the write, before the mutation was
// acknowledged); a line whose checksum or JSON is wrong is corruption.
// Either ends the replay of that file, is reported by LoadProblem, and is
// dropped from the state the next Open writes.
//
// Files: state.json is the snapshot (the checksummed envelope), and names in
// its "journal" field the sequence number of the first journal file it
// does not include; state.journal.<seq> are the journals, replayed in
// order from that one on. When the current journal grows past its bound, the
// writer that notices switches to a new file (one create on the request
// path, rarely) and a background goroutine writes the snapshot that covers
// the old one (fsynced on disk before the old journal is removed).

const journalPrefix = "state.journal."

// Record operations.
const (
	opPut = "put" // A recorded (replacing the same key)
	opDel = "del" // K forgotten if Forget, and a DEL remembered at Tomb if set
	opGC  = "gc"  // Keys forgotten
	opCNI = "cni" // the CNI interface set to CNI (absent: cleared)
)

// record is one mutation as the journal keeps it: its effect, not its
// request, so replaying it needs no decision that could come out
// differently.
type record struct {
	Op     string              `json:"op"`
	A      *Attachment         `json:"a,omitempty"`
	K      *api.AttachmentKey  `json:"k,omitempty"`
	Forget bool                `json:"forget,omitempty"`
	Tomb   *time.Time          `json:"tomb,omitempty"`
	Keys   []api.AttachmentKey `json:"keys,omitempty"`
	CNI    *api.CNIInterface   `json:"cni,omitempty"`
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// appendRecord appends r's journal line to buf.
func appendRecord(buf []byte, r record) ([]byte, error) {
	data, err := json.Marshal(r)
	if err != nil {
		return buf, fmt.Errorf("encode %s record: %w", r.Op, err)
	}
	var sum [4]byte
	c := crc32.Checksum(data, castagnoli)
	sum[0], sum[1], sum[2], sum[3] = byte(c>>24), byte(c>>16), byte(c>>8), byte(c)
	buf = hex.AppendEncode(buf, sum[:])
	buf = append(buf, ' ')
	buf = append(buf, data...)
	return append(buf, '\n'), nil
}

// parseJournal decodes the records of one journal file. It stops at the
// first torn or corrupt line and describes it in problem; the records
// before it are returned.
func parseJournal(data []byte) (recs []record, problem string) {
	off := 0
	for off < len(data) {
		nl := bytes.IndexByte(data[off:], '\n')
		if nl < 0 {
			return recs, fmt.Sprintf("torn record at byte %d (%d bytes without an end: a write cut short), dropped", off, len(data)-off)
		}
		line := data[off : off+nl]
		r, err := parseRecord(line)
		if err != nil {
			return recs, fmt.Sprintf("corrupt record %d at byte %d (%v); it and the %d bytes after it dropped", len(recs)+1, off, err, len(data)-off-nl-1)
		}
		recs = append(recs, r)
		off += nl + 1
	}
	return recs, ""
}

func parseRecord(line []byte) (record, error) {
	var r record
	if len(line) < 10 || line[8] != ' ' {
		return r, fmt.Errorf("no checksum")
	}
	var sum [4]byte
	if _, err := hex.Decode(sum[:], line[:8]); err != nil {
		return r, fmt.Errorf("bad checksum field: %w", err)
	}
	data := line[9:]
	want := uint32(sum[0])<<24 | uint32(sum[1])<<16 | uint32(sum[2])<<8 | uint32(sum[3])
	if crc32.Checksum(data, castagnoli) != want {
		return r, fmt.Errorf("checksum mismatch")
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return r, fmt.Errorf("decode: %w", err)
	}
	switch {
	case r.Op == opPut && r.A != nil, r.Op == opDel && r.K != nil, r.Op == opGC, r.Op == opCNI:
	default:
		return r, fmt.Errorf("unknown or incomplete operation %q", r.Op)
	}
	return r, nil
}

func journalName(seq uint64) string { return journalPrefix + strconv.FormatUint(seq, 10) }

// journalFiles lists the journal files in dir by sequence number.
func journalFiles(dir string) ([]uint64, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list state dir %s: %w", dir, err)
	}
	var seqs []uint64
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), journalPrefix)
		if !ok || !e.Type().IsRegular() {
			continue
		}
		seq, err := strconv.ParseUint(rest, 10, 64)
		if err != nil || seq == 0 {
			continue
		}
		seqs = append(seqs, seq)
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	return seqs, nil
}

// contents is the state a directory holds: what the store keeps in memory.
type contents struct {
	attachments map[api.AttachmentKey]Attachment
	tombstones  map[api.AttachmentKey]time.Time
	cni         *api.CNIInterface
}

func newContents() contents {
	return contents{attachments: map[api.AttachmentKey]Attachment{}, tombstones: map[api.AttachmentKey]time.Time{}}
}

// apply is the effect of r, the same live and in replay.
func (c *contents) apply(r record) {
	switch r.Op {
	case opPut:
		c.attachments[r.A.Key()] = *r.A
	case opDel:
		if r.Forget {
			delete(c.attachments, *r.K)
		}
		if r.Tomb != nil {
			if prev, had := c.tombstones[*r.K]; !had || r.Tomb.After(prev) {
				c.tombstones[*r.K] = *r.Tomb
				c.pruneTombstones()
			}
		}
	case opGC:
		for _, k := range r.Keys {
			delete(c.attachments, k)
		}
	case opCNI:
		c.cni = r.CNI
	}
}

// loaded is what load read from a directory, without changing anything.
type loaded struct {
	contents
	problems []string
	// corrupt are the files to set aside (a snapshot or tombstones file
	// that fails its checksum).
	corrupt []corruptFile
	// journals are the journal files replayed; stale ones are older than
	// the snapshot (left by a crash between a snapshot and their removal).
	journals, stale []uint64
	legacyTombs     bool // a tombstones.json (written by an earlier weftd) was read
}

// load reads dir's snapshot and replays its journals. A missing directory
// or file is an empty state; a corrupt file is reported, never an error. A
// reader beside a running weftd (Read) can see a journal vanish between
// the listing and its read, compacted into a newer snapshot meanwhile:
// then it starts over.
func load(dir string) (*loaded, error) {
	for attempt := 0; ; attempt++ {
		l, err := loadOnce(dir)
		if errors.Is(err, errJournalGone) && attempt < 5 {
			continue
		}
		return l, err
	}
}

var errJournalGone = errors.New("journal removed while reading")

func loadOnce(dir string) (*loaded, error) {
	l := &loaded{contents: newContents()}
	// tombstones.json: the DELs an earlier weftd remembered in a file of
	// their own. Read once; the next snapshot carries them.
	tpath := filepath.Join(dir, tombFileName)
	switch data, err := os.ReadFile(tpath); {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("read tombstones %s: %w", tpath, err)
	default:
		var doc tombDocument
		if err := decodeInto(data, &doc); err != nil {
			l.corrupt = append(l.corrupt, corruptFile{"tombstones file", tpath, err})
			break
		}
		l.legacyTombs = true
		for _, t := range doc.Tombstones {
			l.mergeTombstone(t)
		}
	}
	var next uint64
	path := filepath.Join(dir, fileName)
	switch data, err := os.ReadFile(path); {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("read state %s: %w", path, err)
	default:
		doc, err := decode(data)
		if err != nil {
			// The journals after it are still the latest events: replayed
			// over an empty state they give back what they recorded.
			l.corrupt = append(l.corrupt, corruptFile{"state file", path, err})
			break
		}
		for _, a := range doc.Attachments {
			l.attachments[a.Key()] = a
		}
		for _, t := range doc.Tombstones {
			l.mergeTombstone(t)
		}
		l.cni = doc.CNI
		next = doc.Journal
	}
	l.pruneTombstones()
	seqs, err := journalFiles(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	for i, seq := range seqs {
		if seq < next {
			l.stale = append(l.stale, seq)
			continue
		}
		if seq > next && next > 0 && (i == 0 || seqs[i-1] < next) {
			// The snapshot's own journal is gone: a newer snapshot
			// replaced the one read above.
			return nil, fmt.Errorf("%w: %s", errJournalGone, journalName(next))
		}
		jpath := filepath.Join(dir, journalName(seq))
		data, err := os.ReadFile(jpath)
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w: %s", errJournalGone, jpath)
		}
		if err != nil {
			return nil, fmt.Errorf("read journal %s: %w", jpath, err)
		}
		recs, problem := parseJournal(data)
		for _, r := range recs {
			l.apply(r)
		}
		if problem != "" {
			l.problems = append(l.problems, fmt.Sprintf("journal %s: %s", jpath, problem))
		}
		l.journals = append(l.journals, seq)
	}
	return l, nil
}

// corruptFile is a whole file that failed its checksum or decoding.
type corruptFile struct {
	what, path string
	err        error
}

func (c *contents) mergeTombstone(t Tombstone) {
	if prev, had := c.tombstones[t.Key()]; !had || t.Deleted.After(prev) {
		c.tombstones[t.Key()] = t.Deleted
	}
}

// Contents is what a state directory records, read without changing it
// (for tools and tests that look at a node's state from outside weftd).
type Contents struct {
	Attachments []Attachment
	CNI         *api.CNIInterface
	Tombstones  []Tombstone
	// Problems are the torn or corrupt parts found (and skipped).
	Problems []string
}

// Read loads dir's snapshot and journals as the next Open would, without
// writing anything.
func Read(dir string) (Contents, error) {
	l, err := load(dir)
	if err != nil {
		return Contents{}, err
	}
	problems := slices.Clone(l.problems)
	for _, c := range l.corrupt {
		problems = append(problems, fmt.Sprintf("%s %s is corrupt (%v)", c.what, c.path, c.err))
	}
	return Contents{Attachments: l.sorted(), CNI: l.cni, Tombstones: l.sortedTombstones(), Problems: problems}, nil
}
