// Command ociimage writes an OCI image archive from files on disk (no
// container engine, no registry), for `make image`:
//
//	ociimage -o bin/weft-image.tar -ref ghcr.io/weft-net/weft:v0.1.0 \
//	    -entrypoint weftd -cmd run,--config=/etc/weft/weft.yaml \
//	    bin/weftd:/usr/local/bin/weftd bin/weft:/usr/local/bin/weft
//
// Each argument is SRC:PATH; files are executable (0755). -tree DIR (once
// or more) adds the whole of DIR at / as a layer below them (make image:
// the iptables user space from Debian's packages).
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strings"

	"github.com/weft-net/weft/integration/ociimage"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "ociimage:", err)
		os.Exit(1)
	}
}

func run() error {
	out := flag.String("o", "", "archive to write")
	ref := flag.String("ref", "", "image reference name:tag")
	entry := flag.String("entrypoint", "", "entrypoint, comma-separated")
	cmd := flag.String("cmd", "", "default arguments, comma-separated")
	dirs := flag.String("dirs", "/tmp,/etc,/run", "empty directories, comma-separated")
	var trees []string
	flag.Func("tree", "directory copied whole to / as a layer (repeatable)", func(s string) error {
		trees = append(trees, s)
		return nil
	})
	flag.Parse()
	if *out == "" {
		return fmt.Errorf("-o is required")
	}
	img := ociimage.Image{
		Ref:        *ref,
		Entrypoint: split(*entry),
		Cmd:        split(*cmd),
		Env:        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		Dirs:       split(*dirs),
		Trees:      trees,
	}
	for _, a := range flag.Args() {
		src, dst, ok := strings.Cut(a, ":")
		if !ok || src == "" || dst == "" {
			return fmt.Errorf("file %q: want SRC:PATH", a)
		}
		img.Files = append(img.Files, ociimage.File{Path: dst, Src: src, Mode: 0o755})
	}
	f, err := os.Create(*out)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	if err := ociimage.Write(w, img, runtime.GOARCH); err != nil {
		f.Close()
		os.Remove(*out)
		return err
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func split(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}
