// Package cniplugin is the logic of the `weft` chained CNI plugin: it parses
// the plugin configuration and prevResult, and turns each CNI verb into at
// most one request to weftd (or one spool write when weftd is away).
package cniplugin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/types/create"
)

// Defaults of the plugin configuration keys (DESIGN.md, "Plugin configuration").
const (
	DefaultSocket     = "/run/weft/weft.sock"
	DefaultSpoolDir   = "/run/weft/spool"
	DefaultTimeout    = 2 * time.Second
	MaxTimeout        = 60 * time.Second
	DefaultSpoolLimit = 4096
	MaxSpoolLimit     = 1 << 20

	FailOpen   = "open"
	FailClosed = "closed"

	// maxSocketPath is sun_path minus the terminating NUL.
	maxSocketPath = 107
)

// Config is the validated plugin configuration with defaults applied.
type Config struct {
	// PluginConf carries name, cniVersion, prevResult (parsed into
	// PrevResult, in the config's version) and cni.dev/valid-attachments.
	types.PluginConf

	Socket     string
	SpoolDir   string
	FailPolicy string
	Timeout    time.Duration
	LogFile    string
	SpoolLimit int

	// Attachments is the union of cni.dev/valid-attachments and
	// cni.dev/attachments (GC only), without duplicates.
	Attachments []types.GCAttachment

	// Prev is PrevResult converted to the current result type so that
	// addresses and interfaces can be read the same way for every version;
	// nil when there is no prevResult. PrevResult itself is what is printed.
	Prev *types100.Result

	// rawPrev is prevResult as it came on stdin, parsed by parsePrevResult.
	rawPrev json.RawMessage
}

// rawConfig is the stdin document. weft's own keys are decoded in a second
// step so that a wrong type is reported by key name with code 7.
type rawConfig struct {
	types.PluginConf
	Socket      json.RawMessage      `json:"socket"`
	SpoolDir    json.RawMessage      `json:"spoolDir"`
	FailPolicy  json.RawMessage      `json:"failPolicy"`
	Timeout     json.RawMessage      `json:"timeout"`
	LogFile     json.RawMessage      `json:"logFile"`
	SpoolLimit  json.RawMessage      `json:"spoolLimit"`
	Attachments []types.GCAttachment `json:"cni.dev/attachments"`
	// PrevResult shadows PluginConf's prevResult (a generic map that
	// version.ParsePrevResult would encode again only to decode it into
	// the result type): the bytes are decoded once, straight into it.
	PrevResult json.RawMessage `json:"prevResult"`
}

// ParseConfig decodes and validates the plugin configuration and its
// prevResult. Errors are *types.Error: code 6 when stdin or prevResult
// cannot be decoded, code 7 when a key has an invalid value (the message
// names the key).
func ParseConfig(stdin []byte) (*Config, error) {
	c, err := decodeConfig(stdin)
	if err != nil {
		return nil, err
	}
	if err := c.parsePrevResult(); err != nil {
		return nil, err
	}
	return c, nil
}

func invalid(key, format string, a ...any) *types.Error {
	return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("invalid weft config: %s: %s", key, fmt.Sprintf(format, a...)), "")
}

// decodeConfig does everything ParseConfig does except prevResult, which DEL
// must tolerate being broken.
func decodeConfig(stdin []byte) (*Config, error) {
	var raw rawConfig
	if err := json.Unmarshal(stdin, &raw); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return nil, invalid(te.Field, "must be a JSON %s, not %s", jsonKind(te.Type.Kind().String()), te.Value)
		}
		return nil, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("decode weft config: %v", err), "")
	}
	c := &Config{PluginConf: raw.PluginConf}
	if len(raw.PrevResult) > 0 && !isNull(raw.PrevResult) {
		if k := jsonValueKind(raw.PrevResult); k != "object" {
			return nil, invalid("prevResult", "must be a JSON object, not %s", k)
		}
		c.rawPrev = raw.PrevResult
	}
	var err error
	if c.Socket, err = stringKey("socket", raw.Socket, DefaultSocket); err != nil {
		return nil, err
	}
	if !filepath.IsAbs(c.Socket) {
		return nil, invalid("socket", "%q is not an absolute path", c.Socket)
	}
	if len(c.Socket) > maxSocketPath {
		return nil, invalid("socket", "%q is longer than %d bytes, the limit of a unix socket path", c.Socket, maxSocketPath)
	}
	if c.SpoolDir, err = stringKey("spoolDir", raw.SpoolDir, DefaultSpoolDir); err != nil {
		return nil, err
	}
	if !filepath.IsAbs(c.SpoolDir) {
		return nil, invalid("spoolDir", "%q is not an absolute path", c.SpoolDir)
	}
	if c.FailPolicy, err = stringKey("failPolicy", raw.FailPolicy, FailOpen); err != nil {
		return nil, err
	}
	if c.FailPolicy != FailOpen && c.FailPolicy != FailClosed {
		return nil, invalid("failPolicy", "%q is not %q or %q", c.FailPolicy, FailOpen, FailClosed)
	}
	timeout, err := stringKey("timeout", raw.Timeout, "")
	if err != nil {
		return nil, err
	}
	c.Timeout = DefaultTimeout
	if timeout != "" {
		d, perr := time.ParseDuration(timeout)
		if perr != nil {
			return nil, invalid("timeout", "%q is not a duration such as \"2s\"", timeout)
		}
		if d <= 0 || d > MaxTimeout {
			return nil, invalid("timeout", "%s is not in (0, %s]", d, MaxTimeout)
		}
		c.Timeout = d
	}
	if c.LogFile, err = stringKey("logFile", raw.LogFile, ""); err != nil {
		return nil, err
	}
	if c.LogFile != "" && !filepath.IsAbs(c.LogFile) {
		return nil, invalid("logFile", "%q is not an absolute path", c.LogFile)
	}
	c.SpoolLimit = DefaultSpoolLimit
	if len(raw.SpoolLimit) > 0 && !isNull(raw.SpoolLimit) {
		var n int
		if err := json.Unmarshal(raw.SpoolLimit, &n); err != nil {
			return nil, invalid("spoolLimit", "%s is not an integer", truncate(string(raw.SpoolLimit)))
		}
		if n < 1 || n > MaxSpoolLimit {
			return nil, invalid("spoolLimit", "%d is not in [1, %d]", n, MaxSpoolLimit)
		}
		c.SpoolLimit = n
	}
	c.Attachments = mergeAttachments(raw.ValidAttachments, raw.Attachments)
	return c, nil
}

// parsePrevResult parses prevResult in the config's version (what is printed
// back) and converts it to the current version (what is read). Like
// version.ParsePrevResult, a prevResult without a cniVersion is read in the
// config's.
func (c *Config) parsePrevResult() error {
	if c.rawPrev == nil {
		return nil
	}
	var v struct {
		CNIVersion string `json:"cniVersion"`
	}
	if err := json.Unmarshal(c.rawPrev, &v); err != nil {
		return types.NewError(types.ErrDecodingFailure, fmt.Sprintf("decode prevResult: could not parse prevResult: %v", err), "")
	}
	data := c.rawPrev
	if v.CNIVersion == "" {
		ver, err := json.Marshal(c.CNIVersion)
		if err != nil {
			return types.NewError(types.ErrDecodingFailure, fmt.Sprintf("decode prevResult: %v", err), "")
		}
		data = withVersion(c.rawPrev, ver)
	}
	res, err := create.Create(c.CNIVersion, data)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, fmt.Sprintf("decode prevResult: could not parse prevResult: %v", err), "")
	}
	prev, err := types100.NewResultFromResult(res)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, fmt.Sprintf("convert prevResult to %s: %v", types100.ImplementedSpecVersion, err), "")
	}
	c.PrevResult, c.Prev, c.rawPrev = res, prev, nil
	return nil
}

// withVersion is the JSON object obj with a leading "cniVersion" member set
// to ver (a JSON string); the decoder keeps the last of duplicate members,
// so one already present but empty is still the one that counts.
func withVersion(obj json.RawMessage, ver []byte) []byte {
	body := bytes.TrimSpace(obj)[1:] // after the '{'
	out := make([]byte, 0, len(obj)+len(ver)+16)
	out = append(out, `{"cniVersion":`...)
	out = append(out, ver...)
	if b := bytes.TrimSpace(body); len(b) > 0 && b[0] != '}' {
		out = append(out, ',')
	}
	return append(out, body...)
}

// jsonValueKind names the kind of a JSON value by its first byte.
func jsonValueKind(raw json.RawMessage) string {
	b := bytes.TrimSpace(raw)
	if len(b) == 0 {
		return "nothing"
	}
	switch b[0] {
	case '{':
		return "object"
	case '[':
		return "array"
	case '"':
		return "string"
	case 't', 'f':
		return "boolean"
	default:
		return "number"
	}
}

func stringKey(key string, raw json.RawMessage, def string) (string, error) {
	if len(raw) == 0 || isNull(raw) {
		return def, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", invalid(key, "%s is not a string", truncate(string(raw)))
	}
	if s == "" {
		return def, nil
	}
	return s, nil
}

func isNull(raw json.RawMessage) bool {
	return bytes.Equal(bytes.TrimSpace(raw), []byte("null"))
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

func jsonKind(goKind string) string {
	switch {
	case goKind == "map" || goKind == "struct":
		return "object"
	case goKind == "slice" || goKind == "array":
		return "array"
	case strings.HasPrefix(goKind, "int") || strings.HasPrefix(goKind, "uint") || strings.HasPrefix(goKind, "float"):
		return "number"
	case goKind == "bool":
		return "boolean"
	default:
		return goKind
	}
}

func mergeAttachments(lists ...[]types.GCAttachment) []types.GCAttachment {
	var out []types.GCAttachment
	seen := make(map[types.GCAttachment]bool)
	for _, l := range lists {
		for _, a := range l {
			if seen[a] {
				continue
			}
			seen[a] = true
			out = append(out, a)
		}
	}
	return out
}
