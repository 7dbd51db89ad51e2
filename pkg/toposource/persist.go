package toposource

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/weft-net/weft/pkg/state"
)

// PersistFile is the name of the last topology seen, in stateDir.
const PersistFile = "topology.json"

type envelope struct {
	Version  int             `json:"version"`
	Checksum string          `json:"checksum"` // sha256 of Data
	Data     json.RawMessage `json:"data"`
}

// Persist writes t durably to dir/topology.json, so that a weftd started
// while the API server is unreachable can run with it.
func Persist(dir string, t Topology) error {
	data, err := json.Marshal(t)
	if err != nil {
		return fmt.Errorf("encode topology: %w", err)
	}
	sum := sha256.Sum256(data)
	doc, err := json.Marshal(envelope{Version: 1, Checksum: hex.EncodeToString(sum[:]), Data: data})
	if err != nil {
		return fmt.Errorf("encode topology: %w", err)
	}
	if err := state.WriteFile(dir, PersistFile, doc); err != nil {
		return fmt.Errorf("persist topology: %w", err)
	}
	return nil
}

// ErrNotPersisted is returned by LoadPersisted when no topology was saved.
var ErrNotPersisted = errors.New("no persisted topology")

// LoadPersisted reads what Persist wrote. A missing file is
// ErrNotPersisted; a torn or corrupt one is an error naming the file (the
// caller then waits for the API, as on a first start).
func LoadPersisted(dir string) (Topology, error) {
	path := filepath.Join(dir, PersistFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return Topology{}, ErrNotPersisted
	}
	if err != nil {
		return Topology{}, fmt.Errorf("read %s: %w", path, err)
	}
	var env envelope
	if err := json.Unmarshal(b, &env); err != nil {
		return Topology{}, fmt.Errorf("%s is corrupt: %w", path, err)
	}
	sum := sha256.Sum256(env.Data)
	if env.Version != 1 || hex.EncodeToString(sum[:]) != env.Checksum {
		return Topology{}, fmt.Errorf("%s is corrupt: version %d, checksum mismatch or torn write", path, env.Version)
	}
	var t Topology
	if err := json.Unmarshal(env.Data, &t); err != nil {
		return Topology{}, fmt.Errorf("%s is corrupt: %w", path, err)
	}
	return t, nil
}
