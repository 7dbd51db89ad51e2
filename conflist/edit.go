// Package conflist puts weft into a node's CNI configuration and takes it
// out again: it copies the plugin binary into the CNI bin dir, finds the
// primary CNI's config, appends weft as the last plugin of its chain and
// keeps it there while the primary CNI rewrites its file.
//
// Edits are made on the file's bytes, not on a re-marshalled document: the
// weft entry is spliced in after the last plugin, so key order, indentation
// and every other byte of the file stay as the primary CNI wrote them, and
// removing the entry gives back exactly the bytes that were there before.
// Files are written to a temp name the runtime ignores and renamed, so a
// runtime reading the directory never sees a partial file.
package conflist

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"

	"github.com/containernetworking/cni/libcni"
)

// PluginType is weft's plugin type in a conflist.
const PluginType = "weft"

// Entry is weft's plugin entry. Empty fields are left out so that the
// plugin's own defaults apply; the field order is the key order written.
type Entry struct {
	Type       string `json:"type"`
	Socket     string `json:"socket,omitempty"`
	SpoolDir   string `json:"spoolDir,omitempty"`
	FailPolicy string `json:"failPolicy,omitempty"`
	Timeout    string `json:"timeout,omitempty"`
	LogFile    string `json:"logFile,omitempty"`
}

func (e Entry) normalized() Entry {
	e.Type = PluginType
	return e
}

// span is a half-open byte range [start, end) of a file.
type span struct{ start, end int }

// layout is where things are in a conf file's bytes.
type layout struct {
	hasPlugins bool
	open       int    // offset of the plugins array's '['
	elems      []span // each plugin object, exactly as written
	types      []string
}

// scan parses data as one JSON object and records the spans of the
// top-level "plugins" array's elements. It fails on anything that is not a
// single well-formed JSON object.
func scan(data []byte) (*layout, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if t, err := dec.Token(); err != nil {
		return nil, fmt.Errorf("not JSON: %w", err)
	} else if t != json.Delim('{') {
		return nil, errors.New("not a JSON object")
	}
	l := &layout{}
	for dec.More() {
		kt, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("not JSON: %w", err)
		}
		key, _ := kt.(string)
		if key != "plugins" {
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return nil, fmt.Errorf("key %q: %w", key, err)
			}
			continue
		}
		if l.hasPlugins {
			return nil, errors.New(`duplicate "plugins" key`)
		}
		l.hasPlugins = true
		if t, err := dec.Token(); err != nil {
			return nil, fmt.Errorf("plugins: %w", err)
		} else if t != json.Delim('[') {
			return nil, errors.New("plugins is not an array")
		}
		l.open = int(dec.InputOffset()) - 1
		for dec.More() {
			var raw json.RawMessage
			if err := dec.Decode(&raw); err != nil {
				return nil, fmt.Errorf("plugins[%d]: %w", len(l.elems), err)
			}
			end := int(dec.InputOffset())
			var p struct {
				Type string `json:"type"`
			}
			if err := json.Unmarshal(raw, &p); err != nil {
				return nil, fmt.Errorf("plugins[%d] is not an object: %w", len(l.elems), err)
			}
			l.elems = append(l.elems, span{end - len(raw), end})
			l.types = append(l.types, p.Type)
		}
		if _, err := dec.Token(); err != nil { // ']'
			return nil, fmt.Errorf("plugins: %w", err)
		}
	}
	if _, err := dec.Token(); err != nil { // '}'
		return nil, fmt.Errorf("not JSON: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("data after the JSON object")
	}
	return l, nil
}

// Kind says what a conf file is.
type Kind int

const (
	// KindList is a conflist: a "plugins" array.
	KindList Kind = iota
	// KindSingle is a single plugin .conf.
	KindSingle
)

// Parsed is a conf file that the CNI library accepts.
type Parsed struct {
	Kind       Kind
	Name       string
	CNIVersion string
	Types      []string // plugin types in chain order
	layout     *layout
}

// OnlyWeft reports whether the file is weft's own: every plugin is weft.
func (p *Parsed) OnlyWeft() bool {
	for _, t := range p.Types {
		if t != PluginType {
			return false
		}
	}
	return len(p.Types) > 0
}

// HasWeft reports whether weft is in the chain.
func (p *Parsed) HasWeft() bool {
	for _, t := range p.Types {
		if t == PluginType {
			return true
		}
	}
	return false
}

// Parse checks data the way a runtime would (libcni) and records where its
// plugins are. A file that does not parse is not a CNI config: weft leaves
// it alone.
func Parse(data []byte) (*Parsed, error) {
	l, err := scan(data)
	if err != nil {
		return nil, err
	}
	if l.hasPlugins {
		list, err := libcni.ConfListFromBytes(data)
		if err != nil {
			return nil, err
		}
		if len(list.Plugins) == 0 {
			return nil, errors.New("no plugins in the list")
		}
		return &Parsed{Kind: KindList, Name: list.Name, CNIVersion: list.CNIVersion, Types: l.types, layout: l}, nil
	}
	conf, err := libcni.ConfFromBytes(data)
	if err != nil {
		return nil, err
	}
	if conf.Network.Type == "" {
		return nil, errors.New(`neither "plugins" nor "type"`)
	}
	if conf.Network.Name == "" {
		return nil, errors.New(`no "name"`)
	}
	return &Parsed{Kind: KindSingle, Name: conf.Network.Name, CNIVersion: conf.Network.CNIVersion,
		Types: []string{conf.Network.Type}, layout: l}, nil
}

// Insert returns the conflist data with weft as its last plugin. When weft
// is already last with the same options, data is returned unchanged and
// changed is false. Existing weft entries elsewhere in the chain, or with
// other options, are replaced.
func Insert(data []byte, e Entry) (out []byte, changed bool, err error) {
	p, err := Parse(data)
	if err != nil {
		return nil, false, err
	}
	if p.Kind != KindList {
		return nil, false, errors.New("not a conflist")
	}
	if p.OnlyWeft() {
		return nil, false, errors.New("only weft in the chain: not a primary CNI's config")
	}
	want, err := json.Marshal(e.normalized())
	if err != nil {
		return nil, false, fmt.Errorf("encode weft entry: %w", err)
	}
	l := p.layout
	last := len(l.elems) - 1
	if l.types[last] == PluginType && countWeft(l.types) == 1 {
		same, err := jsonEqual(data[l.elems[last].start:l.elems[last].end], want)
		if err != nil {
			return nil, false, err
		}
		if same {
			return data, false, nil
		}
	}
	if countWeft(l.types) > 0 {
		if data, err = Remove(data); err != nil {
			return nil, false, err
		}
		if l, err = scan(data); err != nil {
			return nil, false, err
		}
	}
	return splice(data, l, e.normalized())
}

func countWeft(types []string) int {
	n := 0
	for _, t := range types {
		if t == PluginType {
			n++
		}
	}
	return n
}

// splice appends entry after the last plugin, copying the separator and
// indentation the file already uses between plugins.
func splice(data []byte, l *layout, e Entry) ([]byte, bool, error) {
	last := l.elems[len(l.elems)-1]
	gapStart := l.open + 1
	if len(l.elems) > 1 {
		gapStart = l.elems[len(l.elems)-2].end
	}
	sep := string(data[gapStart:last.start])
	if i := strings.LastIndexByte(sep, ','); i >= 0 {
		sep = sep[i+1:]
	}
	var text []byte
	var err error
	if nl := strings.LastIndexByte(sep, '\n'); nl >= 0 {
		prefix := sep[nl+1:]
		text, err = json.MarshalIndent(e, prefix, indentUnit(data[last.start:last.end], prefix))
	} else {
		text, err = json.Marshal(e)
	}
	if err != nil {
		return nil, false, fmt.Errorf("encode weft entry: %w", err)
	}
	out := make([]byte, 0, len(data)+len(sep)+len(text)+1)
	out = append(out, data[:last.end]...)
	out = append(out, ',')
	out = append(out, sep...)
	out = append(out, text...)
	out = append(out, data[last.end:]...)
	return out, true, nil
}

// indentUnit guesses one indentation step from a plugin object written
// with prefix before its first line: the extra whitespace of its second line.
func indentUnit(obj []byte, prefix string) string {
	s := string(obj)
	nl := strings.IndexByte(s, '\n')
	if nl < 0 {
		return "  "
	}
	line := s[nl+1:]
	ws := line[:len(line)-len(strings.TrimLeft(line, " \t"))]
	if strings.HasPrefix(ws, prefix) && len(ws) > len(prefix) {
		return ws[len(prefix):]
	}
	if strings.HasPrefix(prefix, "\t") {
		return "\t"
	}
	return "  "
}

// Remove returns data without any weft entry. Cutting from the end of the
// previous plugin to the end of weft's entry takes exactly what Insert
// added, so Remove(Insert(x)) == x.
func Remove(data []byte) ([]byte, error) {
	l, err := scan(data)
	if err != nil {
		return nil, err
	}
	if !l.hasPlugins {
		return data, nil
	}
	if countWeft(l.types) == len(l.types) && len(l.types) > 0 {
		return nil, errors.New("only weft in the chain: removing it would leave no plugin")
	}
	out := append([]byte(nil), data...)
	for i := len(l.elems) - 1; i >= 0; i-- {
		if l.types[i] != PluginType {
			continue
		}
		var cut span
		switch {
		case i > 0:
			cut = span{l.elems[i-1].end, l.elems[i].end}
		default:
			// weft first: take it and the separator up to the next plugin.
			cut = span{l.elems[0].start, l.elems[1].start}
		}
		out = append(out[:cut.start], out[cut.end:]...)
		// Elements before i keep their offsets; rescan only to be sure
		// the cut left a well-formed document.
		if l, err = scan(out); err != nil {
			return nil, fmt.Errorf("after removing weft: %w", err)
		}
	}
	return out, nil
}

// FromSingle converts a single plugin .conf into a conflist with that
// plugin as its only element: the plugin object is kept with its key order
// and re-indented; cniVersion and name are lifted to the list.
func FromSingle(data []byte) ([]byte, error) {
	p, err := Parse(data)
	if err != nil {
		return nil, err
	}
	if p.Kind != KindSingle {
		return nil, errors.New("not a single plugin config")
	}
	var plugin bytes.Buffer
	if err := json.Indent(&plugin, bytes.TrimSpace(data), "    ", "  "); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.WriteString("{\n")
	if p.CNIVersion != "" {
		v, _ := json.Marshal(p.CNIVersion)
		fmt.Fprintf(&b, "  \"cniVersion\": %s,\n", v)
	}
	n, _ := json.Marshal(p.Name)
	fmt.Fprintf(&b, "  \"name\": %s,\n  \"plugins\": [\n    ", n)
	b.Write(plugin.Bytes())
	b.WriteString("\n  ]\n}\n")
	return b.Bytes(), nil
}

func jsonEqual(a, b []byte) (bool, error) {
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		return false, err
	}
	if err := json.Unmarshal(b, &y); err != nil {
		return false, err
	}
	return reflect.DeepEqual(x, y), nil
}
