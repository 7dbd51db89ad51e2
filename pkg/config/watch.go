package config

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Watcher defaults.
const (
	DefaultDebounce   = 50 * time.Millisecond
	DefaultWriteStall = time.Second
	DefaultWatchPoll  = 10 * time.Second
)

// Watcher follows a configuration file and reports each new valid
// configuration. It watches the file's directory rather than the file: a
// Kubernetes ConfigMap volume updates by atomically renaming a "..data"
// symlink and deleting the old timestamped directory, so a watch on the
// file (or on what it resolved to) would go silent after the first update.
// Editors that write in place or rename a new file over the old one are
// seen through the same directory watch. What changed is decided by
// comparing content, never by event type, so missed or coalesced events
// cannot leave a stale config; the event type only decides when to read.
//
// A file that is complete when its event arrives (renamed into place, the
// ConfigMap swap, closed by its writer) is read at once and applied if
// valid: waiting for the burst to end would be most of what a reload
// costs. A problem is reported only by the read after the burst (Debounce
// of quiet, or WriteStall while a writer still has the file open), so a
// half-written file never reaches status, and is never applied: events of
// a write under way (truncate, a chunk written) do not trigger a read.
type Watcher struct {
	// Env is passed to ParseWith for the defaults. Zero value = OSEnv().
	Env Env
	// Last is the configuration currently in force. When nil, Watch reports
	// the file's first valid content through onChange.
	Last *Config
	// LastData is the file content Last was parsed from, if known: the
	// first read then skips the parse when the file is unchanged (weftd
	// has just parsed it at start).
	LastData []byte
	// Debounce is how long events must stay quiet before the read that
	// settles a burst (and reports a refusal).
	Debounce time.Duration
	// WriteStall is how long that read waits instead while the file was
	// written in place and not closed yet (a writer pausing between
	// chunks). Zero = DefaultWriteStall.
	WriteStall time.Duration
	// Poll is the period of a fallback re-read that repairs missed events
	// (an inotify queue overflow, a watched directory replaced wholesale).
	// A re-read with unchanged content costs one read and one hash.
	// Zero = DefaultWatchPoll; negative disables.
	Poll   time.Duration
	Logger *slog.Logger
}

// Watch follows path until ctx is done. onChange receives every valid
// configuration that differs from the last one reported (or from w.Last);
// onError receives each new problem (unreadable or invalid file), after
// which the caller keeps its last good configuration. Both run on Watch's
// goroutine, one at a time. Watch returns nil when ctx ends, or an error
// when no inotify watch can be created at all.
func (w *Watcher) Watch(ctx context.Context, path string, onChange func(*Config), onError func(error)) error {
	debounce := w.Debounce
	if debounce <= 0 {
		debounce = DefaultDebounce
	}
	stall := w.WriteStall
	if stall <= 0 {
		stall = DefaultWriteStall
	}
	stall = max(stall, debounce)
	poll := w.Poll
	if poll == 0 {
		poll = DefaultWatchPoll
	}
	env := w.Env
	if env.Getenv == nil && env.Hostname == nil {
		env = OSEnv()
	}
	log := w.Logger
	if log == nil {
		log = slog.Default()
	}

	fw, err := newDirWatch()
	if err != nil {
		return fmt.Errorf("watch config %s: %w", path, err)
	}
	defer fw.Close()
	dir := filepath.Dir(path)
	s := &watchState{path: path, dir: dir, env: env, last: w.Last, fw: fw, log: log,
		onChange: onChange, onError: onError}
	if w.Last != nil && w.LastData != nil {
		s.seen = contentKey(w.LastData)
	}
	// The watch is in place before the first read so no update between
	// the two can be missed. A directory that does not exist yet (a
	// ConfigMap volume not mounted, a typo being fixed) is not the end of
	// the watch: it is retried every second, with a read each time, so
	// the file is picked up once it appears.
	if err := fw.Add(dir); err != nil {
		log.Warn("config directory not watchable yet, retrying every second", "dir", dir, "err", err)
	}
	s.check()
	// While the directory is not watched it is retried every second; a
	// watched one needs no timer, so an idle weftd does not wake for it.
	var retry *time.Ticker
	var retryC <-chan time.Time
	followWatch := func() {
		switch w := s.watching(); {
		case w && retry != nil:
			retry.Stop()
			retry, retryC = nil, nil
		case !w && retry == nil:
			retry = time.NewTicker(time.Second)
			retryC = retry.C
		}
	}
	followWatch()
	defer func() {
		if retry != nil {
			retry.Stop()
		}
	}()

	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var lastEvent time.Time
	writing := false // written in place, not closed since: a writer is at work
	var tick <-chan time.Time
	if poll > 0 {
		t := time.NewTicker(poll)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-fw.events:
			if !ok {
				return nil
			}
			if !s.relevant(ev.Name) {
				// Other files in the directory (a log written next to
				// the config, an editor's swap file) are not news; logging
				// them could even feed back into the watch.
				continue
			}
			log.Debug("config directory event", "event", ev.String())
			lastEvent = time.Now()
			timer.Reset(debounce)
			if ev.complete() {
				writing = false
				s.checkTentative()
			} else if ev.inPlaceWrite() {
				writing = true
			}
		case err := <-fw.errs:
			// Typically an overflowed event queue: re-read rather than trust
			// what was seen.
			log.Warn("config watch error", "path", path, "err", err)
			writing = false
			timer.Reset(debounce)
		case <-timer.C:
			if quiet := time.Since(lastEvent); writing && quiet < stall {
				timer.Reset(stall - quiet)
				continue
			}
			writing = false
			s.check()
		case <-tick:
			s.rewatch()
			followWatch()
			if writing && time.Since(lastEvent) < stall {
				continue // the write under way ends with its own read
			}
			s.check()
		case <-fw.lost:
			followWatch()
		case <-retryC:
			if !s.watching() {
				s.rewatch()
				s.check()
			}
			followWatch()
		}
	}
}

type watchState struct {
	path, dir string
	env       Env
	last      *Config
	seen      string // hash of the last content (or error) handled
	refused   bool   // the last content handled was refused
	targetDir string // directory of the file the path resolves to, also watched
	fw        *dirWatch
	log       *slog.Logger
	onChange  func(*Config)
	onError   func(error)
}

func (s *watchState) check() { s.read(false) }

// checkTentative reads the file on an event that leaves it complete, in
// the middle of a burst: a good configuration is taken at once, a refusal
// is left to the read at the end of the burst (another writer may not be
// done).
func (s *watchState) checkTentative() { s.read(true) }

func (s *watchState) read(tentative bool) {
	s.watchTarget()
	data, err := os.ReadFile(s.path)
	var key string
	if err != nil {
		key = "error:" + err.Error()
	} else {
		key = contentKey(data)
	}
	if key == s.seen {
		return
	}
	if err != nil {
		if !tentative {
			s.seen = key
			s.report(&FileError{Path: s.path, Read: true, Err: err})
		}
		return
	}
	cfg, err := ParseWith(data, s.env)
	if err != nil {
		if !tentative {
			s.seen = key
			s.report(&FileError{Path: s.path, Data: data, Err: err})
		}
		return
	}
	s.seen = key
	// An unchanged config is no news (e.g. a comment changed), unless the
	// file was refused in between: then the good file coming back must
	// clear the refusal.
	if s.last != nil && s.last.Equal(cfg) && !s.refused {
		return
	}
	s.refused = false
	s.last = cfg
	s.log.Info("configuration changed", "path", s.path)
	if s.onChange != nil {
		s.onChange(cfg)
	}
}

// contentKey identifies a content read: the same bytes are not parsed twice.
func contentKey(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

func (s *watchState) report(err error) {
	s.refused = true
	if s.onError == nil {
		s.log.Warn("configuration refused", "err", err)
		return
	}
	// The callback reports it (weftd: a bounded summary in status and
	// the log); a file of thousands of bad CIDRs is not logged twice.
	s.log.Debug("configuration refused", "err", err)
	s.onError(err)
}

// watchTarget also watches the directory the file resolves to, so an
// in-place write to a symlink target outside dir is seen. In a ConfigMap
// volume that directory vanishes on every update; the directory watch on
// dir covers that.
func (s *watchState) watchTarget() {
	real, err := filepath.EvalSymlinks(s.path)
	if err != nil {
		return
	}
	td := filepath.Dir(real)
	if td == s.targetDir {
		return
	}
	if s.targetDir != "" && s.targetDir != s.dir {
		_ = s.fw.Remove(s.targetDir) // may already be gone with its directory
	}
	s.targetDir = ""
	if td == s.dir {
		s.targetDir = td
		return
	}
	if err := s.fw.Add(td); err == nil {
		s.targetDir = td
	}
}

// relevant reports whether an event on name can change what path reads:
// the file itself, the ConfigMap volume's "..data" and "..<timestamp>"
// entries, or anything in the directory the path currently resolves to.
func (s *watchState) relevant(name string) bool {
	base := filepath.Base(name)
	if base == filepath.Base(s.path) || strings.HasPrefix(base, "..") {
		return true
	}
	return s.targetDir != "" && s.targetDir != s.dir && filepath.Dir(name) == s.targetDir
}

// watching reports whether the directory watch is in place.
func (s *watchState) watching() bool { return s.fw.Watching(s.dir) }

// rewatch restores the directory watch if the directory was removed and
// recreated (the kernel drops a watch with its inode).
func (s *watchState) rewatch() {
	if s.watching() {
		return
	}
	if err := s.fw.Add(s.dir); err != nil {
		s.log.Debug("config directory not watchable yet", "dir", s.dir, "err", err)
	}
}

// Watch follows path with a zero Watcher: the first valid content is
// reported through onChange.
func Watch(ctx context.Context, path string, onChange func(*Config), onError func(error)) error {
	return (&Watcher{}).Watch(ctx, path, onChange, onError)
}
