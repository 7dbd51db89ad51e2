// Package ociimage writes a container image as an OCI image-layout tar
// archive (what `ctr images import` and `docker load` read) from files on
// disk, without a container engine or a registry: weft's own image from its
// static binaries, and a pause image, for the end-to-end cluster's
// containerd nodes.
//
// The image has uncompressed layers: one per directory tree (a root file
// system extracted from Debian packages, say) and one for the files; every
// entry has a fixed time and owner, so the same inputs give the same digests.
package ociimage

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// File is one regular file of the image.
type File struct {
	// Path inside the image, absolute (/usr/local/bin/weftd).
	Path string
	// Src is the file on disk whose bytes it gets.
	Src string
	// Mode is the permission bits (0o755 for binaries).
	Mode int64
}

// Image describes the image to write.
type Image struct {
	// Ref is the full reference the importer names the image
	// (ghcr.io/weft-net/weft:v0.1.0).
	Ref        string
	Entrypoint []string
	Cmd        []string
	Env        []string
	Files      []File
	// Dirs are extra empty directories (/tmp, /etc).
	Dirs []string
	// Trees are directories on disk each copied whole to / as a layer of
	// its own, below the files' layer: directories, regular files and
	// symbolic links with their permission bits (setuid included), owned
	// by root.
	Trees []string
}

// Media types of the OCI image spec v1.
const (
	mediaIndex    = "application/vnd.oci.image.index.v1+json"
	mediaManifest = "application/vnd.oci.image.manifest.v1+json"
	mediaConfig   = "application/vnd.oci.image.config.v1+json"
	mediaLayer    = "application/vnd.oci.image.layer.v1.tar"
)

// epoch is the time of every tar entry: reproducible digests.
var epoch = time.Unix(0, 0).UTC()

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *platform         `json:"platform,omitempty"`
}

type platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

type blob struct {
	digest string
	data   []byte
}

func newBlob(data []byte) blob {
	sum := sha256.Sum256(data)
	return blob{digest: "sha256:" + hex.EncodeToString(sum[:]), data: data}
}

// Write writes img as an OCI archive to w, for architecture arch (amd64).
func Write(w io.Writer, img Image, arch string) error {
	if img.Ref == "" || !strings.Contains(img.Ref, ":") {
		return fmt.Errorf("image reference %q: want name:tag", img.Ref)
	}
	var layers []blob
	for _, t := range img.Trees {
		data, err := treeTar(t)
		if err != nil {
			return err
		}
		layers = append(layers, newBlob(data))
	}
	layer, err := layerTar(img)
	if err != nil {
		return err
	}
	layers = append(layers, newBlob(layer))
	diffIDs := make([]string, len(layers))
	layerDescs := make([]descriptor, len(layers))
	for i, lb := range layers {
		diffIDs[i] = lb.digest
		layerDescs[i] = descriptor{MediaType: mediaLayer, Digest: lb.digest, Size: int64(len(lb.data))}
	}
	cfg, err := json.Marshal(map[string]any{
		"architecture": arch,
		"os":           "linux",
		"created":      epoch.Format(time.RFC3339),
		"config": map[string]any{
			"Entrypoint": img.Entrypoint,
			"Cmd":        img.Cmd,
			"Env":        img.Env,
		},
		// Uncompressed layers: a diff ID is the layer's digest.
		"rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs},
	})
	if err != nil {
		return fmt.Errorf("image config: %w", err)
	}
	cb := newBlob(cfg)
	man, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     mediaManifest,
		"config":        descriptor{MediaType: mediaConfig, Digest: cb.digest, Size: int64(len(cb.data))},
		"layers":        layerDescs,
	})
	if err != nil {
		return fmt.Errorf("image manifest: %w", err)
	}
	mb := newBlob(man)
	tag := img.Ref[strings.LastIndex(img.Ref, ":")+1:]
	idx, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     mediaIndex,
		"manifests": []descriptor{{
			MediaType: mediaManifest, Digest: mb.digest, Size: int64(len(mb.data)),
			Annotations: map[string]string{
				// containerd's importer names the image after this one…
				"io.containerd.image.name": img.Ref,
				// …other tools after the tag.
				"org.opencontainers.image.ref.name": tag,
			},
			Platform: &platform{Architecture: arch, OS: "linux"},
		}},
	})
	if err != nil {
		return fmt.Errorf("image index: %w", err)
	}
	tw := tar.NewWriter(w)
	entries := []struct {
		name string
		data []byte
	}{
		{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{"index.json", idx},
	}
	for _, b := range append(layers, cb, mb) {
		entries = append(entries, struct {
			name string
			data []byte
		}{"blobs/sha256/" + strings.TrimPrefix(b.digest, "sha256:"), b.data})
	}
	for _, d := range []string{"blobs", "blobs/sha256"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: epoch}); err != nil {
			return fmt.Errorf("write archive: %w", err)
		}
	}
	for _, e := range entries {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: e.name, Mode: 0o644, Size: int64(len(e.data)), ModTime: epoch}); err != nil {
			return fmt.Errorf("write archive: %w", err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return fmt.Errorf("write archive: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("write archive: %w", err)
	}
	return nil
}

// layerTar is the image's file system: every parent directory, the extra
// directories and the files, in path order.
func layerTar(img Image) ([]byte, error) {
	dirs := map[string]bool{}
	addParents := func(p string) {
		for d := path.Dir(p); d != "/" && d != "."; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	for _, d := range img.Dirs {
		if !path.IsAbs(d) {
			return nil, fmt.Errorf("image directory %q: want an absolute path", d)
		}
		dirs[path.Clean(d)] = true
		addParents(path.Clean(d))
	}
	for _, f := range img.Files {
		if !path.IsAbs(f.Path) {
			return nil, fmt.Errorf("image file %q: want an absolute path", f.Path)
		}
		addParents(path.Clean(f.Path))
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	names := make([]string, 0, len(dirs))
	for d := range dirs {
		names = append(names, d)
	}
	sort.Strings(names)
	for _, d := range names {
		mode := int64(0o755)
		if d == "/tmp" {
			mode = 0o1777
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(d, "/") + "/", Mode: mode, ModTime: epoch}); err != nil {
			return nil, fmt.Errorf("layer: %w", err)
		}
	}
	files := append([]File(nil), img.Files...)
	sort.Slice(files, func(i, j int) bool { return files[i].Path < files[j].Path })
	for _, f := range files {
		data, err := os.ReadFile(f.Src)
		if err != nil {
			return nil, fmt.Errorf("layer file %s: %w", f.Path, err)
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(path.Clean(f.Path), "/"), Mode: f.Mode, Size: int64(len(data)), ModTime: epoch}); err != nil {
			return nil, fmt.Errorf("layer: %w", err)
		}
		if _, err := tw.Write(data); err != nil {
			return nil, fmt.Errorf("layer: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	return buf.Bytes(), nil
}

// treeTar is the layer of the directory tree root, in path order (WalkDir's
// lexical order), with fixed times and root ownership.
func treeTar(root string) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		m := fi.Mode()
		h := &tar.Header{Name: filepath.ToSlash(rel), Mode: int64(m.Perm()), ModTime: epoch}
		for bit, v := range map[fs.FileMode]int64{fs.ModeSetuid: 0o4000, fs.ModeSetgid: 0o2000, fs.ModeSticky: 0o1000} {
			if m&bit != 0 {
				h.Mode |= v
			}
		}
		switch {
		case m.IsDir():
			h.Typeflag, h.Name = tar.TypeDir, h.Name+"/"
		case m&fs.ModeSymlink != 0:
			if h.Linkname, err = os.Readlink(p); err != nil {
				return err
			}
			h.Typeflag = tar.TypeSymlink
		case m.IsRegular():
			h.Typeflag, h.Size = tar.TypeReg, fi.Size()
		default:
			return fmt.Errorf("%s: %s is neither a directory, a regular file nor a symbolic link", p, m.Type())
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if h.Typeflag != tar.TypeReg {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		if n, err := io.Copy(tw, f); err != nil || n != h.Size {
			return fmt.Errorf("%s: copied %d of %d bytes: %v", p, n, h.Size, err)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("layer of tree %s: %w", root, err)
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("layer of tree %s: %w", root, err)
	}
	return buf.Bytes(), nil
}
