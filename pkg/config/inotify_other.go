//go:build !linux

package config

import (
	"errors"
	"fmt"
)

// weftd runs on Linux only; elsewhere the package builds (for its parser
// and validation) but a watch cannot start.
type dirWatch struct {
	events chan dirEvent
	errs   chan error
	lost   chan struct{}
}

type dirEvent struct {
	Name string
	Mask uint32
}

func newDirWatch() (*dirWatch, error) {
	return nil, errors.New("config watch needs Linux inotify")
}

func (w *dirWatch) Add(dir string) error { return fmt.Errorf("watch %s: unsupported", dir) }
func (w *dirWatch) Remove(string) error  { return nil }
func (w *dirWatch) Watching(string) bool { return false }
func (w *dirWatch) Close() error         { return nil }
func (ev dirEvent) complete() bool       { return false }
func (ev dirEvent) inPlaceWrite() bool   { return false }
func (ev dirEvent) String() string       { return ev.Name }
