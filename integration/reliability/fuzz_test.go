package reliability

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Promise 7: every parser on weft's trust boundary has a fuzz target with a
// seed corpus in testdata/fuzz. This test replays each corpus (the fuzzing
// itself is `make fuzz`, 10 s per target; `make test` runs it for 5 s).
func TestFuzzCorpora(t *testing.T) {
	defer run.sum.TrackSkip(t, PFuzz)() // its cases are subtests; a skip before them counts too
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go tool not in PATH")
	}
	targets := []struct{ pkg, fn, what string }{
		{"pkg/cniplugin", "FuzzParseConfig", "plugin config and prevResult"},
		{"pkg/apiserver", "FuzzDecodeEvent", "daemon request decoding and validation"},
		{"pkg/config", "FuzzParse", "config file loader"},
		{"pkg/cidrset", "FuzzMerge", "CIDR merge for nft interval sets"},
		{"pkg/pathprobe", "FuzzDecode", "health-check probe decoding (the responder's input)"},
	}
	seeds := 0
	for _, tg := range targets {
		t.Run(tg.fn, func(t *testing.T) {
			defer run.sum.Track(t, PFuzz)()
			dir := filepath.Join("..", "..", tg.pkg, "testdata", "fuzz", tg.fn)
			ents, err := os.ReadDir(dir)
			if err != nil || len(ents) == 0 {
				t.Fatalf("%s (%s): no seed corpus in %s: %v", tg.fn, tg.what, dir, err)
			}
			seeds += len(ents)
			cmd := exec.Command("go", "test", "-count=1", "-run", "^"+tg.fn+"$", "./"+tg.pkg)
			cmd.Dir = filepath.Join("..", "..")
			out, err := cmd.CombinedOutput()
			if err != nil || !strings.Contains(string(out), "ok") {
				t.Fatalf("replaying the %s corpus: %v\n%s", tg.fn, err, out)
			}
		})
	}
	run.sum.Figure(PFuzz, "%d targets, %d seed files replayed (make fuzz: 10 s each)", len(targets), seeds)
}
