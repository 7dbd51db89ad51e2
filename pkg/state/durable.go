package state

import (
	"fmt"
	"os"
	"path/filepath"
)

// WriteFile replaces dir/name with data durably: a temp file in dir,
// written, fsynced and renamed over the old one, then dir fsynced, so a
// crash or power cut leaves either the old or the new file (mode 0600).
func WriteFile(dir, name string, data []byte) error {
	if err := replaceFile(dir, name, "."+name+"-*.tmp", data, true); err != nil {
		return err
	}
	return syncPath(dir)
}

// replaceFile writes data to a temp file in dir (named after pattern) and
// renames it over dir/name, mode 0600, so a reader sees the old or the new
// file, never a part. With fsync the temp file is synced before the rename;
// the directory's sync is the caller's (the store does it in the
// background, WriteFile at once).
func replaceFile(dir, name, pattern string, data []byte, fsync bool) error {
	tmp, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return fmt.Errorf("create temp in %s: %w", dir, err)
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("chmod %s: %w", tmp.Name(), err)
	}
	if fsync {
		if err := tmp.Sync(); err != nil {
			tmp.Close()
			return fmt.Errorf("fsync %s: %w", tmp.Name(), err)
		}
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp.Name(), err)
	}
	path := filepath.Join(dir, name)
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("rename to %s: %w", path, err)
	}
	return nil
}
