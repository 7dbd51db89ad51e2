package ociimage

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weft-net/weft/pkg/netnstest"
)

// unpack writes the image's layers, lowest first, into dir, as a runtime's
// snapshotter would (no whiteouts: these layers have none).
func unpack(t *testing.T, archive []byte, dir string) {
	t.Helper()
	files, _ := readTar(t, archive)
	var idx struct {
		Manifests []descriptor `json:"manifests"`
	}
	if err := json.Unmarshal(files["index.json"], &idx); err != nil || len(idx.Manifests) != 1 {
		t.Fatalf("index.json: %v", err)
	}
	var man struct{ Layers []descriptor }
	if err := json.Unmarshal(blobOf(t, files, idx.Manifests[0].Digest), &man); err != nil {
		t.Fatal(err)
	}
	for _, l := range man.Layers {
		tr := tar.NewReader(bytes.NewReader(blobOf(t, files, l.Digest)))
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(dir, h.Name)
			switch h.Typeflag {
			case tar.TypeDir:
				err = os.MkdirAll(p, os.FileMode(h.Mode).Perm())
			case tar.TypeSymlink:
				_ = os.Remove(p)
				err = os.Symlink(h.Linkname, p)
			case tar.TypeReg:
				var b []byte
				if b, err = io.ReadAll(tr); err == nil {
					err = os.WriteFile(p, b, os.FileMode(h.Mode).Perm())
				}
			default:
				t.Fatalf("layer entry %s: type %c", h.Name, h.Typeflag)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
	}
}

// The image carries what the iptables backend execs, runnable on its own:
// root (debroot.sh, as make image and the Dockerfile build it) unpacked from
// the archive, chrooted into inside a throwaway namespace, runs the four
// binaries weftd execs against the kernel: nft and legacy save, and an nft
// restore whose MASQUERADE rule needs the xtables extensions, libc and the
// loader from the layer.
func TestImageRunsIptables(t *testing.T) {
	netnstest.RequireRoot(t)
	for _, tool := range []string{"apt-get", "dpkg-deb", "chroot"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found: this test needs a Debian host", tool)
		}
	}
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	tree := filepath.Join(t.TempDir(), "root")
	cmd := exec.Command("sh", filepath.Join(repo, "integration/debroot/debroot.sh"),
		filepath.Join(repo, ".tools/debs"), tree, "iptables")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("debroot.sh: %v\n%s", err, out)
	}
	bin := filepath.Join(t.TempDir(), "weftd")
	if err := os.WriteFile(bin, []byte("#!/bin/false\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	img := Image{Ref: "weft:test", Entrypoint: []string{"weftd"}, Trees: []string{tree},
		Files: []File{{Path: "/usr/local/bin/weftd", Src: bin, Mode: 0o755}}}
	var a, b bytes.Buffer
	if err := Write(&a, img, "amd64"); err != nil {
		t.Fatal(err)
	}
	if err := Write(&b, img, "amd64"); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Error("two writes of the same tree differ")
	}
	root := t.TempDir()
	unpack(t, a.Bytes(), root)
	if _, err := os.Stat(filepath.Join(root, "usr/local/bin/weftd")); err != nil {
		t.Errorf("files layer missing over the tree: %v", err)
	}

	ns := netnstest.New(t)
	run := func(stdin string, argv ...string) string {
		t.Helper()
		c := exec.Command("ip", append([]string{"netns", "exec", ns.Name, "chroot", root}, argv...)...)
		c.Stdin = strings.NewReader(stdin)
		out, err := c.CombinedOutput()
		if err != nil {
			t.Fatalf("%s in the image: %v\n%s", strings.Join(argv, " "), err, out)
		}
		return string(out)
	}
	for _, bin := range []string{"iptables-nft-save", "iptables-nft-restore", "iptables-legacy-save", "iptables-legacy-restore"} {
		if out := run("", "/usr/sbin/"+bin, "--version"); !strings.Contains(out, "v1.") {
			t.Errorf("%s --version: %q", bin, out)
		}
	}
	run("*nat\n:WEFT-TEST - [0:0]\n-A WEFT-TEST -s 10.0.0.0/8 -j MASQUERADE\nCOMMIT\n",
		"/usr/sbin/iptables-nft-restore", "-w", "5", "--noflush")
	if out := run("", "/usr/sbin/iptables-nft-save", "-t", "nat"); !strings.Contains(out, "-A WEFT-TEST -s 10.0.0.0/8 -j MASQUERADE") {
		t.Errorf("iptables-nft-save after the restore lacks the rule:\n%s", out)
	}
	if out := run("", "/usr/sbin/iptables-legacy", "-t", "nat", "-S"); !strings.Contains(out, "-P POSTROUTING ACCEPT") {
		t.Errorf("iptables-legacy -t nat -S: %q", out)
	}
	run("", "/usr/sbin/iptables-legacy-save")
}
