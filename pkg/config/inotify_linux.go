package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// dirWatch is the config watcher's view of inotify on a few directories.
// fsnotify hides the two facts the watcher needs to read a change at once
// without ever reading a half-written file: whether a new name was renamed
// into place (IN_MOVED_TO, complete by construction) or created empty
// (IN_CREATE, still being written), and when a writer closed the file
// (IN_CLOSE_WRITE). So the watcher reads the inotify descriptor itself.
type dirWatch struct {
	f      *os.File
	fd     int
	mu     sync.Mutex
	dirs   map[int]string // watch descriptor → directory
	wds    map[string]int
	events chan dirEvent
	errs   chan error
	// lost is signalled when the kernel drops a watch (its directory was
	// deleted or unmounted): the watcher then retries until it is back.
	lost chan struct{}
	done chan struct{}
	once sync.Once
}

// dirEvent is one inotify event on Name (the directory joined with the
// entry's name, or the directory itself).
type dirEvent struct {
	Name string
	Mask uint32
}

// Events the watcher asks for: every way a directory entry can start or
// stop resolving to other content.
const dirWatchMask = unix.IN_CREATE | unix.IN_MOVED_TO | unix.IN_MOVED_FROM | unix.IN_DELETE |
	unix.IN_MODIFY | unix.IN_ATTRIB | unix.IN_CLOSE_WRITE | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF

var errWatchOverflow = errors.New("inotify event queue overflowed")

func newDirWatch() (*dirWatch, error) {
	// Non-blocking, so the runtime poller serves Read and Close unblocks it.
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("inotify_init1: %w", err)
	}
	w := &dirWatch{f: os.NewFile(uintptr(fd), "inotify"), fd: fd, dirs: map[int]string{}, wds: map[string]int{},
		events: make(chan dirEvent, 64), errs: make(chan error, 1), lost: make(chan struct{}, 1), done: make(chan struct{})}
	go w.read()
	return w, nil
}

// Add watches dir (again: a directory recreated under the same name is a
// new inode and needs a new watch).
func (w *dirWatch) Add(dir string) error {
	wd, err := unix.InotifyAddWatch(w.fd, dir, dirWatchMask)
	if err != nil {
		return fmt.Errorf("watch %s: %w", dir, err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if old, ok := w.wds[dir]; ok && old != wd {
		delete(w.dirs, old)
	}
	w.dirs[wd], w.wds[dir] = dir, wd
	return nil
}

// Remove stops watching dir; a directory already gone is not an error.
func (w *dirWatch) Remove(dir string) error {
	w.mu.Lock()
	wd, ok := w.wds[dir]
	delete(w.wds, dir)
	delete(w.dirs, wd)
	w.mu.Unlock()
	if !ok {
		return nil
	}
	if _, err := unix.InotifyRmWatch(w.fd, uint32(wd)); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("unwatch %s: %w", dir, err)
	}
	return nil
}

// Watching reports whether dir has a live watch.
func (w *dirWatch) Watching(dir string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, ok := w.wds[dir]
	return ok
}

// Close ends the watch; Events is closed once the reader has stopped.
func (w *dirWatch) Close() error {
	err := os.ErrClosed
	w.once.Do(func() {
		close(w.done)
		err = w.f.Close()
	})
	return err
}

func (w *dirWatch) read() {
	defer close(w.events)
	buf := make([]byte, 64*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))
	for {
		n, err := w.f.Read(buf)
		if err != nil {
			if !errors.Is(err, os.ErrClosed) {
				select {
				case w.errs <- fmt.Errorf("read inotify: %w", err):
				default:
				}
			}
			return
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			raw := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			end := off + unix.SizeofInotifyEvent + int(raw.Len)
			if end > n {
				break
			}
			name := string(buf[off+unix.SizeofInotifyEvent : end])
			for len(name) > 0 && name[len(name)-1] == 0 {
				name = name[:len(name)-1]
			}
			off = end
			if raw.Mask&unix.IN_Q_OVERFLOW != 0 {
				select {
				case w.errs <- errWatchOverflow:
				default:
				}
				continue
			}
			w.mu.Lock()
			dir, ok := w.dirs[int(raw.Wd)]
			if raw.Mask&unix.IN_IGNORED != 0 && ok {
				// The kernel dropped the watch (its directory was deleted).
				delete(w.dirs, int(raw.Wd))
				if w.wds[dir] == int(raw.Wd) {
					delete(w.wds, dir)
					select {
					case w.lost <- struct{}{}:
					default:
					}
				}
			}
			w.mu.Unlock()
			if !ok || raw.Mask&unix.IN_IGNORED != 0 {
				continue
			}
			if name != "" {
				dir = filepath.Join(dir, name)
			}
			select {
			case w.events <- dirEvent{Name: dir, Mask: raw.Mask}:
			case <-w.done:
				return
			}
		}
	}
}

// complete reports whether ev leaves a finished file at its name: renamed
// into place (an editor's save, the ConfigMap "..data" swap), closed by
// its writer, or a symlink created (atomic by nature). An entry created
// empty, a write under way, a deletion or an attribute change are not:
// reading then could see half a file.
func (ev dirEvent) complete() bool {
	if ev.Mask&(unix.IN_MOVED_TO|unix.IN_CLOSE_WRITE) != 0 {
		return true
	}
	if ev.Mask&unix.IN_CREATE != 0 {
		fi, err := os.Lstat(ev.Name)
		return err == nil && fi.Mode()&os.ModeSymlink != 0
	}
	return false
}

// inPlaceWrite reports whether ev is content written into an existing
// file (a truncate, a chunk): its writer may not be done.
func (ev dirEvent) inPlaceWrite() bool { return ev.Mask&unix.IN_MODIFY != 0 }

func (ev dirEvent) String() string {
	var ops []string
	for _, o := range []struct {
		m uint32
		s string
	}{{unix.IN_CREATE, "create"}, {unix.IN_MOVED_TO, "moved-to"}, {unix.IN_MOVED_FROM, "moved-from"},
		{unix.IN_DELETE, "delete"}, {unix.IN_MODIFY, "modify"}, {unix.IN_ATTRIB, "attrib"},
		{unix.IN_CLOSE_WRITE, "close-write"}, {unix.IN_DELETE_SELF, "delete-self"}, {unix.IN_MOVE_SELF, "move-self"}} {
		if ev.Mask&o.m != 0 {
			ops = append(ops, o.s)
		}
	}
	return fmt.Sprintf("%s %v", ev.Name, ops)
}
