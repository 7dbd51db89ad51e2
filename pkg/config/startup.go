package config

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"

	"sigs.k8s.io/yaml"
)

// Startup is what weftd needs before it has a valid configuration and
// keeps for the life of the process: where it serves the plugin (Socket),
// where it keeps its record (StateDir), which spool it drains (SpoolDir)
// and where the kubelet probes it (MetricsAddress, "" = disabled). NodeName
// and ClusterID name the node in status while no configuration is valid.
type Startup struct {
	NodeName, ClusterID string
	Socket              string
	SpoolDir            string
	StateDir            string
	MetricsAddress      string
}

// StartupOf is the Startup a valid cfg gives.
func StartupOf(cfg *Config) Startup {
	return Startup{NodeName: cfg.NodeName, ClusterID: cfg.Cluster.ID, Socket: cfg.Socket,
		SpoolDir: cfg.SpoolDir, StateDir: cfg.StateDir, MetricsAddress: cfg.Metrics()}
}

// LoadStartup is LoadWith for weftd run: besides the configuration (nil
// when the file cannot be read, parsed or validated) it always returns a
// usable Startup. From a valid file, Startup is the file's. Otherwise each
// field comes from the file where the file still decodes and that field is
// usable by itself (an absolute path, a host:port) — so a typo in a remote
// CIDR does not move the socket the plugin talks to — and else from env's
// defaults (weftd run's flags, then DESIGN.md's /run/weft/...).
func LoadStartup(path string, env Env) (*Config, Startup, error) {
	cfg, st, _, err := LoadStartupData(path, env)
	return cfg, st, err
}

// LoadStartupData is LoadStartup that also returns the bytes it read (nil
// when the file could not be read): given to Watcher.LastData, the
// watcher's first read does not parse the same content again.
func LoadStartupData(path string, env Env) (*Config, Startup, []byte, error) {
	data, rerr := os.ReadFile(path)
	var err error
	if rerr != nil {
		data, err = nil, &FileError{Path: path, Read: true, Err: rerr}
	} else if cfg, perr := ParseWith(data, env); perr != nil {
		err = &FileError{Path: path, Data: data, Err: perr}
	} else {
		return cfg, StartupOf(cfg), data, nil
	}
	st := Startup{Socket: env.socket(), SpoolDir: env.spoolDir(), StateDir: env.stateDir(), MetricsAddress: env.metrics()}
	if data != nil {
		salvage(data, &st)
	}
	if st.NodeName == "" && env.Getenv != nil {
		st.NodeName = env.Getenv("NODE_NAME")
	}
	if st.NodeName == "" && env.Hostname != nil {
		st.NodeName, _ = env.Hostname()
	}
	return nil, st, data, err
}

// salvage takes from a file that does not validate the Startup fields it
// gives usably.
func salvage(data []byte, st *Startup) {
	doc, ok := genericDoc(data)
	if !ok {
		return
	}
	str := func(key string) (string, bool) {
		v, ok := doc[key].(string)
		return v, ok
	}
	for key, dst := range map[string]*string{"socket": &st.Socket, "spoolDir": &st.SpoolDir, "stateDir": &st.StateDir} {
		if v, ok := str(key); ok && filepath.IsAbs(v) {
			*dst = v
		}
	}
	if v, ok := str("metricsAddress"); ok {
		if _, port, err := net.SplitHostPort(v); v == "" || (err == nil && port != "") {
			st.MetricsAddress = v
		}
	}
	if v, ok := str("nodeName"); ok {
		st.NodeName = v
	}
	if c, ok := doc["cluster"].(map[string]any); ok {
		if v, ok := c["id"].(string); ok {
			st.ClusterID = v
		}
	}
}

// genericDoc decodes YAML or JSON into a generic mapping, without the
// checks of decode: it serves what is usable of a file that is not.
func genericDoc(data []byte) (map[string]any, bool) {
	j, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, false
	}
	var doc map[string]any
	if err := json.Unmarshal(j, &doc); err != nil || doc == nil {
		return nil, false
	}
	return doc, true
}

// Differences lists the Startup fields (by their config key) that cfg sets
// otherwise than s: a running weftd cannot move them, so they take effect
// at its next start.
func (s Startup) Differences(cfg *Config) []string {
	var out []string
	for _, f := range []struct {
		key       string
		have, cfg string
	}{
		{"socket", s.Socket, cfg.Socket},
		{"spoolDir", s.SpoolDir, cfg.SpoolDir},
		{"stateDir", s.StateDir, cfg.StateDir},
		{"metricsAddress", s.MetricsAddress, cfg.Metrics()},
	} {
		if f.have != f.cfg {
			out = append(out, f.key)
		}
	}
	return out
}
