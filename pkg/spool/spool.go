// Package spool is the directory where the CNI plugin leaves the events it
// could not deliver to weftd, one file per event, and where weftd picks them
// up in order. A file is only ever visible under its final name once it is
// complete (written to a temp name, fsynced, renamed), so a reader never sees
// a partial event; the names sort in the order the events were committed.
package spool

import (
	"bytes"
	"context"
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

// Written describes a committed event.
type Written struct {
	// Name is the file name in the spool directory.
	Name string
	// Unlocked is true when the directory lock could not be taken within
	// the caller's deadline (another writer holds it: stuck, or frozen) and
	// the event was committed without it: the event is safe, but the count
	// bound and the order against writers in flight are best-effort.
	Unlocked bool
}

// Write commits ev to the spool directory dir, creating it (0700) when
// missing. When the directory already holds limit events it returns ErrFull
// and increments the drop counter.
//
// Write is on the pod start-up path, so it never outlives ctx: the
// directory lock is polled rather than waited for, and file-system calls
// that do not return in time (a hung disk) are abandoned with an error. A
// lock that stays taken until shortly before the deadline is given up on,
// and the event is committed unlocked (see Written.Unlocked): one stuck
// writer must not turn into every pod failing to start. Without a deadline
// Write waits for the lock as long as it takes.
func Write(ctx context.Context, dir string, limit int, ev api.Event) (Written, error) {
	if limit < 1 {
		return Written{}, fmt.Errorf("spool %s: limit %d must be at least 1", dir, limit)
	}
	data, err := json.Marshal(ev)
	if err != nil {
		return Written{}, fmt.Errorf("encode spool event: %w", err)
	}
	type result struct {
		w   Written
		err error
	}
	done := make(chan result, 1)
	go func() {
		w, err := write(ctx, dir, limit, data)
		done <- result{w, err}
	}()
	select {
	case r := <-done:
		return r.w, r.err
	case <-ctx.Done():
		// The goroutine may still be blocked in the kernel; it commits
		// nothing after this (write checks ctx before the rename), and the
		// plugin process exits soon anyway.
		return Written{}, fmt.Errorf("spool %s: file system did not answer in time: %w", dir, ctx.Err())
	}
}

func write(ctx context.Context, dir string, limit int, data []byte) (Written, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Written{}, fmt.Errorf("create spool dir %s: %w", dir, err)
	}
	// The slow part (write + fsync) happens before taking the lock so that
	// concurrent plugins only serialise on the cheap count-and-rename.
	tmp, err := writeTemp(dir, data, true)
	if err != nil {
		return Written{}, err
	}
	committed := false
	defer func() {
		if !committed {
			_ = os.Remove(tmp)
		}
	}()

	unlock, err := lockDir(ctx, dir)
	switch {
	case errors.Is(err, errLockBusy):
		unlock = func() {}
	case err != nil:
		return Written{}, err
	}
	w := Written{Unlocked: errors.Is(err, errLockBusy)}
	name, err := commit(ctx, dir, limit, tmp, !w.Unlocked)
	unlock()
	if err != nil {
		return Written{}, err
	}
	committed = true
	w.Name = name
	// The directory entry's fsync happens after the lock is released: no
	// writer ever waits for another one's disk.
	if err := syncDir(dir); err != nil {
		return w, err
	}
	return w, nil
}

// commit counts the spool, picks the next name and renames tmp to it. With
// locked false the count and the order are best-effort, and a drop is not
// counted (the counter is a read-modify-write that needs the lock).
func commit(ctx context.Context, dir string, limit int, tmp string, locked bool) (string, error) {
	names, err := eventNames(dir)
	if err != nil {
		return "", err
	}
	if len(names) >= limit {
		if locked {
			if err := addDropped(dir, 1); err != nil {
				return "", fmt.Errorf("%w (and counting the drop failed: %w)", ErrFull, err)
			}
		}
		return "", fmt.Errorf("%w: %s holds %d events (limit %d)", ErrFull, dir, len(names), limit)
	}
	// The stamp is taken under the lock (when there is one) and kept
	// strictly above the newest existing one, so name order is commit order
	// even if the wall clock steps back.
	stamp := time.Now().UnixNano()
	if n := len(names); n > 0 {
		if last, ok := stampOf(names[n-1]); ok && last >= stamp {
			stamp = last + 1
		}
	}
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	name := fmt.Sprintf("%0*d-%d-%s%s", stampDigits, stamp, os.Getpid(), hex.EncodeToString(rnd[:]), suffix)
	if err := ctx.Err(); err != nil {
		// Write has already reported the deadline to its caller.
		return "", err
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return "", fmt.Errorf("commit spool event %s: %w", name, err)
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

func writeTemp(dir string, data []byte, sync bool) (string, error) {
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
	if sync {
		if err := f.Sync(); err != nil {
			return fail("sync", err)
		}
	}
	if err := f.Close(); err != nil {
		os.Remove(name)
		return "", fmt.Errorf("close spool temp file %s: %w", name, err)
	}
	return name, nil
}

// errLockBusy: the lock was still held when the caller's deadline came near.
var errLockBusy = errors.New("spool lock busy")

// lockSlack is what lockDir leaves of the caller's time for committing
// without the lock once it gives up waiting: a fraction of what is left,
// at most lockSlackMax.
const (
	lockSlackFraction = 4
	lockSlackMax      = 200 * time.Millisecond
)

// lockDir takes an exclusive flock on dir/.lock. flock locks belong to the
// open file description, so goroutines of one process exclude each other as
// well as separate plugin processes do. flock(2) cannot time out, so the
// lock is polled (LOCK_NB, backing off to 10 ms); with a deadline in ctx it
// returns errLockBusy once the deadline is closer than the slack that
// committing without the lock needs.
func lockDir(ctx context.Context, dir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, lockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open spool lock in %s: %w", dir, err)
	}
	giveUp := time.Time{}
	if dl, ok := ctx.Deadline(); ok {
		giveUp = dl.Add(-min(time.Until(dl)/lockSlackFraction, lockSlackMax))
	}
	wait := 100 * time.Microsecond
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("lock spool %s: %w", dir, err)
		}
		if !giveUp.IsZero() && time.Now().Add(wait).After(giveUp) {
			f.Close()
			return nil, errLockBusy
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 10*time.Millisecond)
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
	// No fsync under the lock: the counter is informational.
	tmp, err := writeTemp(dir, []byte(strconv.FormatUint(n+delta, 10)+"\n"), false)
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
