package ociimage

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// readTar returns every regular file of a tar archive by name.
func readTar(t *testing.T, data []byte) (map[string][]byte, map[string]*tar.Header) {
	t.Helper()
	files, hdrs := map[string][]byte{}, map[string]*tar.Header{}
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files, hdrs
		}
		if err != nil {
			t.Fatal(err)
		}
		hdrs[h.Name] = h
		if h.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			files[h.Name] = b
		}
	}
}

func blobOf(t *testing.T, files map[string][]byte, digest string) []byte {
	t.Helper()
	b, ok := files["blobs/sha256/"+strings.TrimPrefix(digest, "sha256:")]
	if !ok {
		t.Fatalf("blob %s missing", digest)
	}
	sum := sha256.Sum256(b)
	if "sha256:"+hex.EncodeToString(sum[:]) != digest {
		t.Fatalf("blob %s: content hashes to %x", digest, sum)
	}
	return b
}

// The archive is what an importer walks: index -> manifest -> config and
// layer, every blob under its own digest, the name in the annotation
// containerd reads, the files with their modes in the layer; the same
// inputs give the same bytes.
func TestWrite(t *testing.T) {
	src := filepath.Join(t.TempDir(), "weftd")
	if err := os.WriteFile(src, []byte("binary"), 0o600); err != nil {
		t.Fatal(err)
	}
	img := Image{
		Ref: "ghcr.io/weft-net/weft:v0.1.0", Entrypoint: []string{"weftd"}, Cmd: []string{"run"},
		Dirs:  []string{"/tmp"},
		Files: []File{{Path: "/usr/local/bin/weftd", Src: src, Mode: 0o755}},
	}
	var a, b bytes.Buffer
	if err := Write(&a, img, "amd64"); err != nil {
		t.Fatal(err)
	}
	if err := Write(&b, img, "amd64"); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Error("two writes of the same image differ")
	}
	files, _ := readTar(t, a.Bytes())
	var idx struct {
		Manifests []descriptor `json:"manifests"`
	}
	if err := json.Unmarshal(files["index.json"], &idx); err != nil || len(idx.Manifests) != 1 {
		t.Fatalf("index.json %s: %v", files["index.json"], err)
	}
	if got := idx.Manifests[0].Annotations["io.containerd.image.name"]; got != img.Ref {
		t.Errorf("image name annotation %q, want %q", got, img.Ref)
	}
	var man struct {
		Config descriptor   `json:"config"`
		Layers []descriptor `json:"layers"`
	}
	if err := json.Unmarshal(blobOf(t, files, idx.Manifests[0].Digest), &man); err != nil || len(man.Layers) != 1 {
		t.Fatalf("manifest: %v", err)
	}
	var cfg struct {
		Config struct{ Entrypoint, Cmd []string }
		RootFS struct {
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	if err := json.Unmarshal(blobOf(t, files, man.Config.Digest), &cfg); err != nil {
		t.Fatal(err)
	}
	if strings.Join(cfg.Config.Entrypoint, " ") != "weftd" || strings.Join(cfg.Config.Cmd, " ") != "run" {
		t.Errorf("config entrypoint %v cmd %v", cfg.Config.Entrypoint, cfg.Config.Cmd)
	}
	if len(cfg.RootFS.DiffIDs) != 1 || cfg.RootFS.DiffIDs[0] != man.Layers[0].Digest {
		t.Errorf("diff IDs %v, want the uncompressed layer's digest %s", cfg.RootFS.DiffIDs, man.Layers[0].Digest)
	}
	layer, hdrs := readTar(t, blobOf(t, files, man.Layers[0].Digest))
	if string(layer["usr/local/bin/weftd"]) != "binary" || hdrs["usr/local/bin/weftd"].Mode != 0o755 {
		t.Errorf("layer file usr/local/bin/weftd: %q mode %o", layer["usr/local/bin/weftd"], hdrs["usr/local/bin/weftd"].Mode)
	}
	for _, d := range []string{"usr/", "usr/local/", "usr/local/bin/", "tmp/"} {
		if h, ok := hdrs[d]; !ok || h.Typeflag != tar.TypeDir {
			t.Errorf("layer lacks directory %s", d)
		}
	}
}

func TestWriteRefusesBadInput(t *testing.T) {
	for _, tc := range []struct {
		name string
		img  Image
		want string
	}{
		{"no tag", Image{Ref: "weft"}, "want name:tag"},
		{"relative file", Image{Ref: "w:1", Files: []File{{Path: "bin/x", Src: "/dev/null"}}}, "absolute path"},
		{"missing source", Image{Ref: "w:1", Files: []File{{Path: "/x", Src: "/nonexistent/x"}}}, "layer file /x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Write(io.Discard, tc.img, "amd64")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// A tree becomes its own layer below the files': directories, files with
// their permission bits (setuid kept), symbolic links as links, all owned
// by root at the fixed time; a device or FIFO is refused by name.
func TestWriteTree(t *testing.T) {
	tree := t.TempDir()
	if err := os.MkdirAll(filepath.Join(tree, "usr/sbin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, "usr/sbin/multi"), []byte("elf"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(tree, "usr/sbin/multi"), 0o755|os.ModeSetuid); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("multi", filepath.Join(tree, "usr/sbin/iptables-nft")); err != nil {
		t.Fatal(err)
	}
	var a bytes.Buffer
	if err := Write(&a, Image{Ref: "w:1", Trees: []string{tree}}, "amd64"); err != nil {
		t.Fatal(err)
	}
	files, _ := readTar(t, a.Bytes())
	var idx struct{ Manifests []descriptor }
	if err := json.Unmarshal(files["index.json"], &idx); err != nil {
		t.Fatal(err)
	}
	var man struct{ Layers []descriptor }
	if err := json.Unmarshal(blobOf(t, files, idx.Manifests[0].Digest), &man); err != nil || len(man.Layers) != 2 {
		t.Fatalf("manifest layers %v (%v), want the tree's and the files'", man.Layers, err)
	}
	layer, hdrs := readTar(t, blobOf(t, files, man.Layers[0].Digest))
	if h := hdrs["usr/sbin/multi"]; h == nil || h.Mode != 0o4755 || string(layer["usr/sbin/multi"]) != "elf" || h.Uid != 0 || !h.ModTime.Equal(epoch) {
		t.Errorf("usr/sbin/multi: %+v", h)
	}
	if h := hdrs["usr/sbin/iptables-nft"]; h == nil || h.Typeflag != tar.TypeSymlink || h.Linkname != "multi" {
		t.Errorf("usr/sbin/iptables-nft: %+v, want a link to multi", h)
	}
	if h := hdrs["usr/sbin/"]; h == nil || h.Typeflag != tar.TypeDir {
		t.Errorf("usr/sbin/: %+v", h)
	}

	if err := syscall.Mkfifo(filepath.Join(tree, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Write(io.Discard, Image{Ref: "w:1", Trees: []string{tree}}, "amd64"); err == nil || !strings.Contains(err.Error(), "fifo") {
		t.Errorf("tree with a FIFO: err = %v, want one naming it", err)
	}
}
