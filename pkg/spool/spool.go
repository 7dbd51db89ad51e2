// Package spool is the directory where the CNI plugin leaves the events it
// could not deliver to weftd, one file per event, and where weftd picks them
// up in order. A file is only ever visible under its final name once it is
// complete (written to a temp name, fsynced, renamed), so a reader never sees
// a partial event; the names sort in the order the events were committed.
package spool

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/weft-net/weft/pkg/api"
)

// ErrFull is returned by Write when the spool already holds limit events;
// the event is dropped and counted in the drop counter.
var ErrFull = errors.New("spool full")

const (
	tempPrefix  = ".tmp-"
	lockName    = ".lock"
	droppedName = "dropped"
	suffix      = ".json"
	// stampDigits is wide enough for any int64 nanosecond timestamp, so
	// lexical order of names is numeric order of their stamps.
	stampDigits = 20
	// maxEventBytes bounds what List reads per file; an event is a few
	// hundred bytes, anything bigger is not ours.
	maxEventBytes = 1 << 20
)

// Entry is one spooled event.
type Entry struct {
	Name  string
	Event api.Event
}

// Skipped is a file in the spool that is not a readable event (torn,
// truncated, garbage, foreign). The reader decides what to do with it.
type Skipped struct {
	Name   string
	Reason string
}

// Write commits ev to the spool directory dir, creating it (0700) when
// missing, and returns the file name. When the directory already holds limit
// events it returns ErrFull and increments the drop counter.
func Write(dir string, limit int, ev api.Event) (string, error) {
	if limit < 1 {
		return "", fmt.Errorf("spool %s: limit %d must be at least 1", dir, limit)
	}
	data, err := json.Marshal(ev)
	if err != nil {
		return "", fmt.Errorf("encode spool event: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create spool dir %s: %w", dir, err)
	}
	// The slow part (write + fsync) happens before taking the lock so that
	// concurrent plugins only serialise on the cheap count-and-rename.
	tmp, err := writeTemp(dir, data)
	if err != nil {
		return "", err
	}
	committed := false
	defer func() {
		if !committed {
			_ = os.Remove(tmp)
		}
	}()

	unlock, err := lockDir(dir)
	if err != nil {
		return "", err
	}
	defer unlock()

	names, err := eventNames(dir)
	if err != nil {
		return "", err
	}
	if len(names) >= limit {
		if err := addDropped(dir, 1); err != nil {
			return "", fmt.Errorf("%w (and counting the drop failed: %w)", ErrFull, err)
		}
		return "", fmt.Errorf("%w: %s holds %d events (limit %d)", ErrFull, dir, len(names), limit)
	}
	// The stamp is taken under the lock and kept strictly above the newest
	// existing one, so name order is commit order even if the wall clock
	// steps back.
	stamp := time.Now().UnixNano()
	if n := len(names); n > 0 {
		if last, ok := stampOf(names[n-1]); ok && last >= stamp {
			stamp = last + 1
		}
	}
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	name := fmt.Sprintf("%0*d-%d-%s%s", stampDigits, stamp, os.Getpid(), hex.EncodeToString(rnd[:]), suffix)
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return "", fmt.Errorf("commit spool event %s: %w", name, err)
	}
	committed = true
	if err := syncDir(dir); err != nil {
		return name, err
	}
	return name, nil
}

// List returns the spooled events, oldest first, and the files that are not
// readable events. Temp files of writers in progress are ignored. A missing
// directory is an empty spool.
func List(dir string) ([]Entry, []Skipped, error) {
	names, err := eventNames(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	var entries []Entry
	var skipped []Skipped
	for _, name := range names {
		ev, reason := readEvent(filepath.Join(dir, name))
		if reason != "" {
			if reason == "vanished" {
				// Removed by a concurrent reader between ReadDir and open.
				continue
			}
			skipped = append(skipped, Skipped{Name: name, Reason: reason})
			continue
		}
		entries = append(entries, Entry{Name: name, Event: ev})
	}
	return entries, skipped, nil
}

// Remove deletes one spool file by name; removing a missing file is not an
// error, so replay can be repeated after a crash.
func Remove(dir, name string) error {
	if name == "" || name != filepath.Base(name) || name == "." || name == ".." || name == lockName || name == droppedName {
		return fmt.Errorf("remove spool file %q: not a spool file name", name)
	}
	if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove spool file %s: %w", name, err)
	}
	return nil
}

// RemoveStaleTemp deletes temp files older than olderThan: the leftovers of
// writers that died between create and rename. Readers ignore temp files,
// so this only reclaims space; weftd calls it when it drains the spool.
func RemoveStaleTemp(dir string, olderThan time.Duration) (int, error) {
	des, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read spool dir %s: %w", dir, err)
	}
	cutoff := time.Now().Add(-olderThan)
	removed := 0
	for _, de := range des {
		if !strings.HasPrefix(de.Name(), tempPrefix) {
			continue
		}
		fi, err := de.Info()
		if err != nil || fi.ModTime().After(cutoff) {
			continue // vanished (renamed by its writer) or still young
		}
		if err := os.Remove(filepath.Join(dir, de.Name())); err == nil {
			removed++
		}
	}
	return removed, nil
}

// Dropped returns how many events were dropped because the spool was full.
func Dropped(dir string) (uint64, error) {
	return readDropped(dir)
}

func readEvent(path string) (api.Event, string) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return api.Event{}, "vanished"
	}
	if err != nil {
		return api.Event{}, fmt.Sprintf("open: %v", err)
	}
	defer f.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(io.LimitReader(f, maxEventBytes+1)); err != nil {
		return api.Event{}, fmt.Sprintf("read: %v", err)
	}
	if buf.Len() > maxEventBytes {
		return api.Event{}, fmt.Sprintf("larger than %d bytes", maxEventBytes)
	}
	var ev api.Event
	dec := json.NewDecoder(&buf)
	if err := dec.Decode(&ev); err != nil {
		return api.Event{}, fmt.Sprintf("decode: %v", err)
	}
	if dec.More() {
		return api.Event{}, "trailing data after the event"
	}
	if ev.Verb != api.VerbAdd && ev.Verb != api.VerbDel {
		return api.Event{}, fmt.Sprintf("verb %q is not ADD or DEL", ev.Verb)
	}
	if ev.ContainerID == "" {
		return api.Event{}, "containerID is empty"
	}
	return ev, ""
}

// eventNames lists committed event files, sorted (os.ReadDir sorts by name).
func eventNames(dir string) ([]string, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read spool dir %s: %w", dir, err)
	}
	names := make([]string, 0, len(des))
	for _, de := range des {
		n := de.Name()
		if strings.HasPrefix(n, ".") || !strings.HasSuffix(n, suffix) || !de.Type().IsRegular() {
			continue
		}
		names = append(names, n)
	}
	return names, nil
}

func stampOf(name string) (int64, bool) {
	if len(name) < stampDigits {
		return 0, false
	}
	v, err := strconv.ParseInt(name[:stampDigits], 10, 64)
	return v, err == nil
}

func writeTemp(dir string, data []byte) (string, error) {
	f, err := os.CreateTemp(dir, tempPrefix+"*")
	if err != nil {
		return "", fmt.Errorf("create spool temp file in %s: %w", dir, err)
	}
	name := f.Name()
	fail := func(what string, err error) (string, error) {
		f.Close()
		os.Remove(name)
		return "", fmt.Errorf("%s spool temp file %s: %w", what, name, err)
	}
	// CreateTemp already uses 0600; Chmod guards against an odd umask-free
	// implementation ever widening it.
	if err := f.Chmod(0o600); err != nil {
		return fail("chmod", err)
	}
	if _, err := f.Write(data); err != nil {
		return fail("write", err)
	}
	if err := f.Sync(); err != nil {
		return fail("sync", err)
	}
	if err := f.Close(); err != nil {
		os.Remove(name)
		return "", fmt.Errorf("close spool temp file %s: %w", name, err)
	}
	return name, nil
}

// lockDir takes an exclusive flock on dir/.lock. flock locks belong to the
// open file description, so goroutines of one process exclude each other as
// well as separate plugin processes do.
func lockDir(dir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, lockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open spool lock in %s: %w", dir, err)
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock spool %s: %w", dir, err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

func readDropped(dir string) (uint64, error) {
	data, err := os.ReadFile(filepath.Join(dir, droppedName))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read spool drop counter: %w", err)
	}
	s := strings.TrimSpace(string(data))
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse spool drop counter %q: %w", s, err)
	}
	return n, nil
}

// addDropped must be called with the directory lock held.
func addDropped(dir string, delta uint64) error {
	n, err := readDropped(dir)
	if err != nil {
		// A corrupt counter restarts from zero rather than blocking drops
		// from being counted at all.
		n = 0
	}
	tmp, err := writeTemp(dir, []byte(strconv.FormatUint(n+delta, 10)+"\n"))
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, droppedName)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("update spool drop counter: %w", err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open spool dir %s for sync: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync spool dir %s: %w", dir, err)
	}
	return nil
}
