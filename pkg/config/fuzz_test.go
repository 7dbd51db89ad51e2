package config

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse checks that no input makes Parse panic, and that whatever it
// accepts is internally consistent.
func FuzzParse(f *testing.F) {
	seedTestdata(f)
	f.Add([]byte(`{"cluster": {"id": "c1"}}`))
	f.Add([]byte("remotes: [{id: c2, podCIDRs: [10.2.0.0/33]}]\n"))
	env := testEnv("c1-n1", "")
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseWith(data, env)
		if err != nil {
			if cfg != nil {
				t.Fatal("config returned with an error")
			}
			var ve *ValidationError
			if errors.As(err, &ve) && len(ve.Errors) == 0 {
				t.Fatal("empty ValidationError")
			}
			// What weftd shows for a refused file: one problem at
			// least, each with a fix; the salvage never panics either.
			ps := Explain(&FileError{Path: "/etc/weft/weft.yaml", Data: data, Err: err})
			if len(ps) == 0 {
				t.Fatal("a refused file explained by no problem")
			}
			for _, p := range ps {
				if p.Fix == "" || p.Reason == "" {
					t.Fatalf("problem without a reason or fix: %+v", p)
				}
			}
			var st Startup
			salvage(data, &st)
			return
		}
		if len(cfg.Parsed.PodCIDRs) == 0 || !cfg.Parsed.VTEPCIDR.IsValid() || len(cfg.Parsed.Nodes) != len(cfg.Cluster.Nodes) {
			t.Fatalf("accepted config with inconsistent Parsed: %+v", cfg.Parsed)
		}
		// Validation is deterministic: validating again succeeds.
		if err := cfg.Validate(); err != nil {
			t.Fatalf("re-validate: %v", err)
		}
	})
}

// seedTestdata adds the example configs to f's corpus.
func seedTestdata(f *testing.F) {
	for _, name := range []string{"valid.yaml", "minimal.yaml"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}
