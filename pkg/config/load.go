package config

import (
	"os"
	"time"
)

// Default values (DESIGN.md, "Daemon configuration").
const (
	DefaultCable          = CableVXLAN
	DefaultPacketFilter   = PacketFilterAuto
	DefaultMSSMode        = MSSModePMTU
	DefaultRouteTable     = 240
	DefaultRulePriority   = 240
	DefaultSocket         = "/run/weft/weft.sock"
	DefaultSpoolDir       = "/run/weft/spool"
	DefaultStateDir       = "/run/weft"
	DefaultMetricsAddress = "127.0.0.1:9469"
	DefaultResyncInterval = 30 * time.Second
)

// Enumerated values of the configuration.
const (
	CableVXLAN = "vxlan"
	CableNone  = "none"

	PacketFilterAuto     = "auto"
	PacketFilterNftables = "nftables"
	PacketFilterIptables = "iptables"

	IptablesModeDetect = ""
	IptablesModeLegacy = "legacy"
	IptablesModeNft    = "nft"

	MSSModePMTU  = "pmtu"
	MSSModeFixed = "fixed"
)

// The default IPv6 VTEP ranges: ULA (RFC 4193) with the global ID
// 57:6566:74 ("Weft"), subnets 0 and 1, /96 so that a node's whole IPv4
// address (dual stack over an IPv4 underlay) or the low 32 bits of its IPv6
// address are the host part.
const (
	DefaultVTEPCIDR6      = "fd57:6566:7400::/96"
	DefaultCableVTEPCIDR6 = "fd57:6566:7400:1::/96"
)

// DefaultVXLAN is the node-to-gateway device; DefaultCableVXLAN the
// gateway-to-gateway one. They differ in every field so both can coexist on
// a gateway.
var (
	DefaultVXLAN      = VXLAN{Name: "vx-weft", VNI: 100, Port: 4800, VTEPCIDR: "240.0.0.0/8", VTEPCIDR6: DefaultVTEPCIDR6}
	DefaultCableVXLAN = VXLAN{Name: "vx-weft-cable", VNI: 101, Port: 4801, VTEPCIDR: "241.0.0.0/8", VTEPCIDR6: DefaultCableVTEPCIDR6}
)

// Env is what the defaults depend on outside the file. It is passed in so
// tests do not depend on the machine's hostname or environment.
type Env struct {
	Getenv   func(string) string
	Hostname func() (string, error)

	// Defaults for the daemon's own paths and metrics address when the
	// file names none (weftd run's flags); "" / nil = the built-in
	// defaults above. They are also what weftd uses while the file cannot
	// be read (see LoadStartup).
	Socket, SpoolDir, StateDir string
	MetricsAddress             *string
}

func (e Env) socket() string   { return cmpOr(e.Socket, DefaultSocket) }
func (e Env) spoolDir() string { return cmpOr(e.SpoolDir, DefaultSpoolDir) }
func (e Env) stateDir() string { return cmpOr(e.StateDir, DefaultStateDir) }
func (e Env) metrics() string {
	if e.MetricsAddress != nil {
		return *e.MetricsAddress
	}
	return DefaultMetricsAddress
}

func cmpOr(s, def string) string {
	if s != "" {
		return s
	}
	return def
}

// OSEnv reads the real process environment and hostname.
func OSEnv() Env {
	return Env{Getenv: os.Getenv, Hostname: os.Hostname}
}

// Load reads, defaults and validates the configuration file at path.
func Load(path string) (*Config, error) {
	return LoadWith(path, OSEnv())
}

// LoadWith is Load with an explicit environment.
func LoadWith(path string, env Env) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &FileError{Path: path, Read: true, Err: err}
	}
	cfg, err := ParseWith(data, env)
	if err != nil {
		return nil, &FileError{Path: path, Data: data, Err: err}
	}
	return cfg, nil
}

// FileError is a configuration file that could not be read (Read), or
// whose content (Data) does not parse or validate. Explain turns it into
// problems an operator can act on.
type FileError struct {
	Path string
	Read bool
	Data []byte
	Err  error
}

func (e *FileError) Error() string {
	if e.Read {
		return "read config: " + e.Err.Error()
	}
	return "config " + e.Path + ": " + e.Err.Error()
}

func (e *FileError) Unwrap() error { return e.Err }

// Parse decodes YAML or JSON, applies the defaults and validates. Unknown
// fields are errors. A validation failure is a *ValidationError listing
// every problem.
func Parse(data []byte) (*Config, error) {
	return ParseWith(data, OSEnv())
}

// ParseWith is Parse with an explicit environment.
func ParseWith(data []byte, env Env) (*Config, error) {
	cfg, err := decode(data)
	if err != nil {
		return nil, err
	}
	cfg.SetDefaults(env)
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// SetDefaults fills every unset field. Zero means unset, except for the
// fields where zero has a meaning of its own (vxlan mtu 0 = underlay MTU −
// 50, mss value, iptablesMode "" = detect) and metricsAddress, where only a
// missing key means default and an explicit "" disables the endpoint.
// nodeIP is not defaulted here: Validate takes it from cluster.nodes when
// this node is listed, else the daemon resolves it at run time.
func (c *Config) SetDefaults(env Env) {
	if c.NodeName == "" && env.Getenv != nil {
		c.NodeName = env.Getenv("NODE_NAME")
	}
	if c.NodeName == "" && env.Hostname != nil {
		if h, err := env.Hostname(); err == nil {
			c.NodeName = h
		}
	}
	if c.Cable == "" {
		c.Cable = DefaultCable
	}
	defaultVXLAN(&c.VXLAN, DefaultVXLAN)
	defaultVXLAN(&c.CableVXLAN, DefaultCableVXLAN)
	if c.PacketFilter == "" {
		c.PacketFilter = DefaultPacketFilter
	}
	if c.MSS.Mode == "" {
		c.MSS.Mode = DefaultMSSMode
	}
	if c.RouteTable == 0 {
		c.RouteTable = DefaultRouteTable
	}
	if c.RulePriority == 0 {
		c.RulePriority = DefaultRulePriority
	}
	if c.Socket == "" {
		c.Socket = env.socket()
	}
	if c.SpoolDir == "" {
		c.SpoolDir = env.spoolDir()
	}
	if c.StateDir == "" {
		c.StateDir = env.stateDir()
	}
	if c.MetricsAddress == nil {
		a := env.metrics()
		c.MetricsAddress = &a
	}
	if c.ResyncInterval.Duration == 0 {
		c.ResyncInterval.Duration = DefaultResyncInterval
	}
	c.HealthCheck.setDefaults()
	c.defaultTopology()
}

func defaultVXLAN(v *VXLAN, d VXLAN) {
	if v.Name == "" {
		v.Name = d.Name
	}
	if v.VNI == 0 {
		v.VNI = d.VNI
	}
	if v.Port == 0 {
		v.Port = d.Port
	}
	if v.VTEPCIDR == "" {
		v.VTEPCIDR = d.VTEPCIDR
	}
	if v.VTEPCIDR6 == "" {
		v.VTEPCIDR6 = d.VTEPCIDR6
	}
}

// Metrics returns the metrics listen address; "" means disabled.
func (c *Config) Metrics() string {
	if c.MetricsAddress == nil {
		return DefaultMetricsAddress
	}
	return *c.MetricsAddress
}

// IsGateway reports whether this node is the cluster's active gateway.
func (c *Config) IsGateway() bool {
	return c.NodeName != "" && c.NodeName == c.Cluster.Gateway
}
