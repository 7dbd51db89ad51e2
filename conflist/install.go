package conflist

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/weft-net/weft/pkg/cniplugin"
)

const (
	// BinaryName is the plugin's file name in the CNI bin dir.
	BinaryName = "weft"
	// tempPrefix names files being written. Runtimes only read .conf,
	// .conflist and .json files, and a name whose only dot is the leading
	// one has none of those extensions.
	tempPrefix = ".weft-tmp-"
	// backupSuffix keeps a single .conf that weft converted to a conflist,
	// so uninstall can put it back byte for byte. Runtimes ignore it.
	backupSuffix = ".weft-orig"
)

// confExts are the extensions runtimes read (containerd and CRI-O use
// libcni.ConfFiles with these).
var confExts = []string{".conf", ".conflist", ".json"}

// ErrNoPrimary means the conf dir has no primary CNI config yet.
var ErrNoPrimary = errors.New("no primary CNI configuration yet")

// ErrUnsupportedVersion means the primary CNI's config has a cniVersion the
// plugin does not speak. weft is not inserted (and is taken out, if an older
// install-cni put it there): the CNI library would fail every pod ADD with
// "incompatible CNI versions" before weft's failPolicy could apply.
var ErrUnsupportedVersion = errors.New("cniVersion not supported by the weft plugin")

// Supported reports whether the plugin speaks cniVersion v. An empty
// version is what the CNI library reads as 0.1.0.
func Supported(v string) bool {
	if v == "" {
		v = "0.1.0"
	}
	return slices.Contains(cniplugin.VersionInfo().SupportedVersions(), v)
}

// Options configure an Installer.
type Options struct {
	ConfDir string // /etc/cni/net.d
	BinDir  string // /opt/cni/bin
	// PluginSource is the weft binary to copy into BinDir; empty skips
	// the copy (the binary is managed elsewhere).
	PluginSource string
	Entry        Entry
	Log          *slog.Logger
	// Debounce is how long the directory must be quiet after an event
	// before Watch acts (a primary CNI writing its file in several
	// steps). Default 50ms.
	Debounce time.Duration
	// Resync is how often Watch re-checks without an event. Default 10s.
	Resync time.Duration
}

// Installer installs weft into one node's CNI configuration.
type Installer struct {
	o Options
}

// New returns an Installer.
func New(o Options) *Installer {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Debounce <= 0 {
		o.Debounce = 50 * time.Millisecond
	}
	if o.Resync <= 0 {
		o.Resync = 10 * time.Second
	}
	o.Entry = o.Entry.normalized()
	return &Installer{o: o}
}

// Skipped is a candidate file that weft left alone because it does not
// parse (half-written, or not a CNI config at all).
type Skipped struct {
	Path   string
	Reason string
}

// Result is what one Ensure found and did.
type Result struct {
	// Primary is the conflist weft is in.
	Primary string
	// Converted is the single .conf that became Primary, if any.
	Converted string
	Changed   bool
	Skipped   []Skipped
}

// InstallBinary copies PluginSource to BinDir/weft through a temp file in
// BinDir and a rename, so kubelet never executes a partial binary. An
// identical binary is left as it is.
func (in *Installer) InstallBinary() (changed bool, err error) {
	if in.o.PluginSource == "" {
		return false, nil
	}
	src, err := os.ReadFile(in.o.PluginSource)
	if err != nil {
		return false, fmt.Errorf("read plugin %s: %w", in.o.PluginSource, err)
	}
	dst := filepath.Join(in.o.BinDir, BinaryName)
	if cur, err := os.ReadFile(dst); err == nil && bytes.Equal(cur, src) {
		return false, nil
	}
	if err := os.MkdirAll(in.o.BinDir, 0o755); err != nil {
		return false, fmt.Errorf("create CNI bin dir: %w", err)
	}
	if err := writeAtomic(dst, src, 0o755, nil); err != nil {
		return false, fmt.Errorf("install plugin: %w", err)
	}
	in.o.Log.Info("plugin binary installed", "path", dst)
	return true, nil
}

type candidate struct {
	path   string
	data   []byte
	parsed *Parsed
}

// candidates lists the conf files in the order runtimes pick them, parsed;
// files that do not parse are returned as skipped.
func (in *Installer) candidates() ([]candidate, []Skipped, error) {
	ents, err := os.ReadDir(in.o.ConfDir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil, nil
		}
		return nil, nil, fmt.Errorf("read conf dir: %w", err)
	}
	var names []string
	for _, e := range ents {
		if e.IsDir() || !isConfName(e.Name()) {
			continue
		}
		names = append(names, e.Name())
	}
	sort.Strings(names)
	var cs []candidate
	var skipped []Skipped
	for _, n := range names {
		path := filepath.Join(in.o.ConfDir, n)
		data, err := os.ReadFile(path)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // removed since the listing
			}
			skipped = append(skipped, Skipped{path, err.Error()})
			continue
		}
		p, err := Parse(data)
		if err != nil {
			skipped = append(skipped, Skipped{path, err.Error()})
			continue
		}
		if p.Kind == KindList && !strings.HasSuffix(n, ".conflist") {
			// Runtimes parse .conf/.json as a single plugin: a list in
			// one is not what the runtime would use.
			skipped = append(skipped, Skipped{path, "a plugin list in a " + filepath.Ext(n) + " file"})
			continue
		}
		if p.Kind == KindSingle && strings.HasSuffix(n, ".conflist") {
			skipped = append(skipped, Skipped{path, `a .conflist without "plugins"`})
			continue
		}
		cs = append(cs, candidate{path, data, p})
	}
	return cs, skipped, nil
}

func isConfName(n string) bool {
	if strings.HasPrefix(n, tempPrefix) {
		return false
	}
	ext := filepath.Ext(n)
	for _, e := range confExts {
		if ext == e {
			return true
		}
	}
	return false
}

// Ensure puts weft last in the primary CNI's conflist: the
// lexicographically first conf file that parses and is not weft's own. A
// single .conf is converted to a conflist of the same base name (the
// original is kept as NAME.weft-orig for uninstall). Files that do not
// parse are never touched, only reported. Running it again changes nothing.
func (in *Installer) Ensure() (Result, error) {
	cs, skipped, err := in.candidates()
	res := Result{Skipped: skipped}
	if err != nil {
		return res, err
	}
	for _, s := range skipped {
		in.o.Log.Warn("conf file left alone: it does not parse", "path", s.Path, "reason", s.Reason)
	}
	var primary *candidate
	for i := range cs {
		if !cs[i].parsed.OnlyWeft() {
			primary = &cs[i]
			break
		}
	}
	if primary == nil {
		return res, ErrNoPrimary
	}
	if v := primary.parsed.CNIVersion; !Supported(v) {
		return in.unsupported(primary, res)
	}
	mode, owner := fileMode(primary.path)
	if primary.parsed.Kind == KindSingle {
		return in.convert(primary, mode, owner, res)
	}
	out, changed, err := Insert(primary.data, in.o.Entry)
	if err != nil {
		return res, fmt.Errorf("insert weft into %s: %w", primary.path, err)
	}
	res.Primary, res.Changed = primary.path, changed
	if !changed {
		return res, nil
	}
	// Parse what is about to be written as the runtime will, so that
	// a bug here can never hand kubelet a broken chain.
	if _, err := Parse(out); err != nil {
		return res, fmt.Errorf("insert weft into %s: result does not parse: %w", primary.path, err)
	}
	if err := writeAtomic(primary.path, out, mode, owner); err != nil {
		return res, fmt.Errorf("write %s: %w", primary.path, err)
	}
	in.o.Log.Info("weft inserted as the last plugin", "path", primary.path, "network", primary.parsed.Name,
		"cniVersion", primary.parsed.CNIVersion)
	return res, nil
}

// unsupported leaves the primary's file as it is, except for taking weft out
// of it if it is there (put there by an install-cni from before this check):
// a chain with weft at an unsupported version fails every pod ADD.
func (in *Installer) unsupported(primary *candidate, res Result) (Result, error) {
	v := primary.parsed.CNIVersion
	res.Primary = primary.path
	err := fmt.Errorf("%w: %s says cniVersion %q; weft speaks %s; pods keep starting through the primary CNI without weft, which waits for a file it can join",
		ErrUnsupportedVersion, primary.path, v, strings.Join(cniplugin.VersionInfo().SupportedVersions(), ", "))
	if primary.parsed.HasWeft() && !primary.parsed.OnlyWeft() {
		if _, rerr := in.removeFrom(*primary); rerr != nil {
			return res, fmt.Errorf("%w (and taking weft out of it failed: %w)", err, rerr)
		}
		res.Changed = true
		in.o.Log.Warn("weft taken out of a conflist whose cniVersion it does not support", "path", primary.path, "cniVersion", v)
	}
	return res, err
}

// convert turns the single .conf primary into NAME.conflist with weft.
func (in *Installer) convert(primary *candidate, mode fs.FileMode, owner *owner, res Result) (Result, error) {
	base := strings.TrimSuffix(primary.path, filepath.Ext(primary.path))
	list := base + ".conflist"
	backup := primary.path + backupSuffix
	if _, err := os.Stat(list); err == nil {
		if _, err := os.Stat(backup); err != nil {
			return res, fmt.Errorf("convert %s: %s exists and weft did not write it", primary.path, list)
		}
	}
	conv, err := FromSingle(primary.data)
	if err != nil {
		return res, fmt.Errorf("convert %s: %w", primary.path, err)
	}
	out, _, err := Insert(conv, in.o.Entry)
	if err != nil {
		return res, fmt.Errorf("convert %s: %w", primary.path, err)
	}
	// Order matters for a runtime reading in between: the backup first,
	// then the conflist (the .conf still sorts first, so the runtime keeps
	// using it), then the .conf goes and the conflist takes over.
	if err := writeAtomic(backup, primary.data, mode, owner); err != nil {
		return res, fmt.Errorf("keep %s: %w", primary.path, err)
	}
	if err := writeAtomic(list, out, mode, owner); err != nil {
		return res, fmt.Errorf("write %s: %w", list, err)
	}
	if err := os.Remove(primary.path); err != nil {
		return res, fmt.Errorf("remove converted %s: %w", primary.path, err)
	}
	in.o.Log.Info("single conf converted to a conflist with weft", "from", primary.path, "to", list,
		"original", backup)
	res.Primary, res.Converted, res.Changed = list, primary.path, true
	return res, nil
}

// Install copies the binary, then waits until the primary CNI's config
// exists and weft is in it. It returns once weft is in place, or when ctx
// ends.
func (in *Installer) Install(ctx context.Context) (Result, error) {
	if _, err := in.InstallBinary(); err != nil {
		return Result{}, err
	}
	if err := os.MkdirAll(in.o.ConfDir, 0o755); err != nil {
		return Result{}, fmt.Errorf("create conf dir: %w", err)
	}
	var last Result
	err := in.watch(ctx, func() bool {
		res, err := in.Ensure()
		last = res
		switch {
		case errors.Is(err, ErrNoPrimary):
			in.o.Log.Info("waiting for the primary CNI's configuration", "dir", in.o.ConfDir)
			return false
		case errors.Is(err, ErrUnsupportedVersion):
			in.o.Log.Error("not inserting weft", "err", err)
			return false
		case err != nil:
			in.o.Log.Warn("install into the CNI configuration failed, retrying", "err", err)
			return false
		}
		return true
	})
	if err != nil {
		return last, err
	}
	return last, nil
}

// Watch keeps weft in the primary CNI's config until ctx ends: when the
// primary CNI rewrites its file without weft (on every restart, for many),
// weft is put back within Debounce of the directory settling.
func (in *Installer) Watch(ctx context.Context) error {
	err := in.watch(ctx, func() bool {
		res, err := in.Ensure()
		switch {
		case errors.Is(err, ErrNoPrimary):
			in.o.Log.Warn("no primary CNI configuration in the conf dir", "dir", in.o.ConfDir)
		case errors.Is(err, ErrUnsupportedVersion):
			in.o.Log.Error("not inserting weft", "err", err)
		case err != nil:
			in.o.Log.Warn("keeping weft in the CNI configuration failed, retrying", "err", err)
		case res.Changed:
			in.o.Log.Info("weft re-inserted after the CNI configuration changed", "path", res.Primary)
		}
		return false
	})
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// watch calls check now, then after each settled burst of changes in the
// conf dir and every Resync, until check returns true or ctx ends.
func (in *Installer) watch(ctx context.Context, check func() bool) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch conf dir: %w", err)
	}
	defer w.Close()
	if err := w.Add(in.o.ConfDir); err != nil {
		return fmt.Errorf("watch conf dir %s: %w", in.o.ConfDir, err)
	}
	resync := time.NewTicker(in.o.Resync)
	defer resync.Stop()
	var settle <-chan time.Time
	var settleTimer *time.Timer
	for {
		if settle == nil {
			if check() {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev, ok := <-w.Events:
			if !ok {
				return errors.New("conf dir watch closed")
			}
			if strings.HasPrefix(filepath.Base(ev.Name), tempPrefix) {
				continue // our own writes in progress
			}
			if settleTimer != nil {
				settleTimer.Stop()
			}
			settleTimer = time.NewTimer(in.o.Debounce)
			settle = settleTimer.C
			continue
		case err, ok := <-w.Errors:
			if !ok {
				return errors.New("conf dir watch closed")
			}
			in.o.Log.Warn("conf dir watch error; checking now", "err", err)
		case <-settle:
		case <-resync.C:
		}
		settle = nil
	}
}

// UninstallResult lists what Uninstall changed.
type UninstallResult struct {
	Edited   []string // conflists weft was removed from
	Restored []string // single .conf files put back
	Skipped  []Skipped
	Binary   bool // the plugin binary was removed
}

// Uninstall takes weft out of every conf file in the conf dir, then
// removes the plugin binary — in that order, so no conflist ever names a
// missing binary (which would fail every pod DEL). A conflist weft
// converted from a single .conf is put back as that .conf, byte for byte,
// unless something else changed it since. If weft cannot be removed from
// some file, the binary stays and an error is returned.
func (in *Installer) Uninstall() (UninstallResult, error) {
	var res UninstallResult
	cs, skipped, err := in.candidates()
	res.Skipped = skipped
	if err != nil {
		return res, err
	}
	var errs []error
	for _, c := range cs {
		if !c.parsed.HasWeft() {
			continue
		}
		if c.parsed.OnlyWeft() {
			errs = append(errs, fmt.Errorf("%s holds only weft; remove it by hand", c.path))
			continue
		}
		restored, err := in.removeFrom(c)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if restored != "" {
			res.Restored = append(res.Restored, restored)
		} else {
			res.Edited = append(res.Edited, c.path)
		}
	}
	if len(errs) > 0 {
		return res, fmt.Errorf("weft stays installed: %w", errors.Join(errs...))
	}
	for _, s := range skipped {
		// A file that does not parse might name weft; keep the binary
		// rather than break a chain the runtime may be able to read.
		if data, err := os.ReadFile(s.Path); err == nil && bytes.Contains(data, []byte(`"`+PluginType+`"`)) {
			return res, fmt.Errorf("weft stays installed: %s does not parse and may name weft: %s", s.Path, s.Reason)
		}
	}
	bin := filepath.Join(in.o.BinDir, BinaryName)
	if err := os.Remove(bin); err == nil {
		res.Binary = true
		in.o.Log.Info("plugin binary removed", "path", bin)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return res, fmt.Errorf("remove plugin %s: %w", bin, err)
	}
	return res, nil
}

// removeFrom takes weft out of one conflist; it returns the .conf path when
// it put back a converted single conf.
func (in *Installer) removeFrom(c candidate) (string, error) {
	out, err := Remove(c.data)
	if err != nil {
		return "", fmt.Errorf("remove weft from %s: %w", c.path, err)
	}
	mode, owner := fileMode(c.path)
	base := strings.TrimSuffix(c.path, filepath.Ext(c.path))
	for _, ext := range []string{".conf", ".json"} {
		single, backup := base+ext, base+ext+backupSuffix
		orig, err := os.ReadFile(backup)
		if err != nil {
			continue
		}
		conv, cerr := FromSingle(orig)
		if cerr != nil || !bytes.Equal(conv, out) {
			// Changed by someone else since: keep their conflist.
			in.o.Log.Info("converted conflist was changed since; keeping it without weft", "path", c.path)
			break
		}
		if err := writeAtomic(single, orig, mode, owner); err != nil {
			return "", fmt.Errorf("restore %s: %w", single, err)
		}
		if err := os.Remove(c.path); err != nil {
			return "", fmt.Errorf("remove %s after restoring %s: %w", c.path, single, err)
		}
		_ = os.Remove(backup)
		in.o.Log.Info("single conf restored", "path", single)
		return single, nil
	}
	if err := writeAtomic(c.path, out, mode, owner); err != nil {
		return "", fmt.Errorf("write %s: %w", c.path, err)
	}
	for _, ext := range []string{".conf", ".json"} {
		_ = os.Remove(base + ext + backupSuffix)
	}
	in.o.Log.Info("weft removed from conflist", "path", c.path)
	return "", nil
}

type owner struct{ uid, gid int }

// fileMode returns path's permission bits and owner, so a rewrite keeps
// them; a missing file gets 0644.
func fileMode(path string) (fs.FileMode, *owner) {
	st, err := os.Stat(path)
	if err != nil {
		return 0o644, nil
	}
	var o *owner
	if s, ok := st.Sys().(*syscall.Stat_t); ok {
		o = &owner{int(s.Uid), int(s.Gid)}
	}
	return st.Mode().Perm(), o
}

// writeAtomic writes data to a temp file in path's directory, fsyncs it,
// and renames it over path, then fsyncs the directory.
func writeAtomic(path string, data []byte, mode fs.FileMode, o *owner) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, tempPrefix+"*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = os.Remove(tmp)
		}
	}()
	if _, err = io.Copy(f, bytes.NewReader(data)); err == nil {
		err = f.Chmod(mode)
	}
	if err == nil && o != nil && os.Geteuid() == 0 {
		err = f.Chown(o.uid, o.gid)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}
