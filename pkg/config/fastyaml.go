package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"
)

// plainYAML decodes the plain subset of YAML that configuration files are
// written in — block mappings and sequences, one-line flow lists and
// mappings of scalars, plain scalars of address-like characters, simply
// quoted strings, decimal integers, comments — into the generic value the
// JSON path yields (map[string]any, []any, string, json.Number, nil). It
// exists for speed: sigs.k8s.io/yaml converts 20,000 CIDRs through a full
// YAML 1.1 parser, a JSON encoding and a JSON decoding, most of what a
// reload costs. Anything outside the subset (tabs, anchors, tags, block
// scalars, escapes, duplicate keys, a scalar YAML would read as a bool,
// float, timestamp or octal, a multi-line scalar, a document marker, ...)
// returns ok false and takes the full parser, which also writes every
// error message: plainYAML never refuses a file, it only declines it.
// Where it accepts, its result is what the full parser gives
// (FuzzPlainYAML checks that).
func plainYAML(data []byte) (v any, ok bool) {
	p := plainParser{}
	if !p.split(data) || len(p.lines) == 0 {
		return nil, false
	}
	v, ok = p.block(p.lines[0].indent)
	if !ok || p.i != len(p.lines) {
		return nil, false
	}
	if _, isMap := v.(map[string]any); !isMap {
		return nil, false
	}
	return v, true
}

type plainLine struct {
	indent int
	text   string // without indentation, trailing comment and spaces
}

type plainParser struct {
	lines []plainLine
	i     int
	depth int
}

// split cuts data into content lines, declining any byte outside printable
// ASCII (a tab, a CR, a BOM, non-ASCII text) and document markers. The
// lines are slices of one copy of data: no allocation per line.
func (p *plainParser) split(data []byte) bool {
	all := string(data)
	p.lines = make([]plainLine, 0, bytes.Count(data, []byte{'\n'})+1)
	for len(all) > 0 {
		var raw string
		if i := strings.IndexByte(all, '\n'); i >= 0 {
			raw, all = all[:i], all[i+1:]
		} else {
			raw, all = all, ""
		}
		indent := 0
		for indent < len(raw) && raw[indent] == ' ' {
			indent++
		}
		text := raw[indent:]
		end := len(text)
		for j := 0; j < len(text); j++ {
			c := text[j]
			if c < 0x20 || c >= 0x7f {
				return false
			}
			if c == '#' && end == len(text) && (j == 0 || text[j-1] == ' ') {
				end = j // a comment; what follows is checked for bytes only
			}
		}
		text = strings.TrimRight(text[:end], " ")
		if len(text) == 0 {
			continue
		}
		if c := text[0]; (c == '-' || c == '.') && len(text) >= 3 && text[1] == c && text[2] == c || c == '%' {
			return false
		}
		p.lines = append(p.lines, plainLine{indent: indent, text: text})
	}
	return true
}

// maxPlainDepth bounds the nesting plainYAML reads (a config nests four
// deep); deeper documents take the full parser and its own limits.
const maxPlainDepth = 32

// block parses the mapping or sequence whose lines start at indent.
func (p *plainParser) block(indent int) (any, bool) {
	if p.depth++; p.depth > maxPlainDepth {
		return nil, false
	}
	defer func() { p.depth-- }()
	if isSeqItem(p.lines[p.i].text) {
		return p.sequence(indent)
	}
	return p.mapping(indent)
}

func isSeqItem(t string) bool { return t == "-" || strings.HasPrefix(t, "- ") }

// keyAt splits "key: rest" / "key:"; ok false when t is no mapping entry.
func keyAt(t string) (key, rest string, ok bool) {
	i := strings.IndexByte(t, ':')
	if i <= 0 || (i+1 < len(t) && t[i+1] != ' ') {
		return "", "", false
	}
	return t[:i], strings.TrimLeft(t[i+1:], " "), true
}

func (p *plainParser) mapping(indent int) (any, bool) {
	m := map[string]any{}
	for p.i < len(p.lines) && p.lines[p.i].indent == indent {
		k, rest, ok := keyAt(p.lines[p.i].text)
		if !ok || !plainKey(k) {
			return nil, false
		}
		if _, dup := m[k]; dup {
			return nil, false // the full parser names the duplicate
		}
		p.i++
		v, ok := p.value(indent, rest, true)
		if !ok {
			return nil, false
		}
		m[k] = v
	}
	return m, p.dedented(indent)
}

func (p *plainParser) sequence(indent int) (any, bool) {
	l := []any{}
	for p.i < len(p.lines) && p.lines[p.i].indent == indent && isSeqItem(p.lines[p.i].text) {
		t := p.lines[p.i].text
		rest := strings.TrimLeft(strings.TrimPrefix(t, "-"), " ")
		if rest != "" {
			if isSeqItem(rest) {
				return nil, false
			}
			if _, _, isKey := keyAt(rest); isKey && rest[0] != '{' && rest[0] != '[' && rest[0] != '"' && rest[0] != '\'' {
				// "- key: value": a mapping whose keys line up with key.
				col := indent + len(t) - len(rest)
				p.lines[p.i] = plainLine{indent: col, text: rest}
				v, ok := p.mapping(col)
				if !ok {
					return nil, false
				}
				l = append(l, v)
				continue
			}
		}
		p.i++
		v, ok := p.value(indent, rest, false)
		if !ok {
			return nil, false
		}
		l = append(l, v)
	}
	return l, p.dedented(indent)
}

// value is what follows "key:" or "-" on a line at indent: a scalar or
// flow collection there, else the block on the next lines (for a key, a
// sequence may sit at the key's own indent), else null.
func (p *plainParser) value(indent int, rest string, ofKey bool) (any, bool) {
	if rest != "" {
		v, ok := flowValue(rest)
		// A more indented next line would continue a plain scalar.
		return v, ok && (p.i == len(p.lines) || p.lines[p.i].indent <= indent)
	}
	if p.i == len(p.lines) {
		return nil, true
	}
	next := p.lines[p.i]
	switch {
	case next.indent > indent:
		return p.block(next.indent)
	case ofKey && next.indent == indent && isSeqItem(next.text):
		return p.sequence(indent)
	}
	return nil, true
}

// dedented checks that a block ends where an enclosing one may continue,
// not deeper (a line at an indentation of its own, which YAML refuses; the
// enclosing blocks check the rest).
func (p *plainParser) dedented(indent int) bool {
	return p.i == len(p.lines) || p.lines[p.i].indent <= indent
}

// flowValue is a scalar, or a one-line flow list or mapping of scalars.
func flowValue(s string) (any, bool) {
	switch s[0] {
	case '[':
		if s[len(s)-1] != ']' {
			return nil, false
		}
		inner := strings.TrimSpace(s[1 : len(s)-1])
		l := []any{}
		if inner == "" {
			return l, true
		}
		for _, item := range splitFlow(inner) {
			item = strings.TrimSpace(item)
			if item == "" {
				return nil, false
			}
			var v any
			var ok bool
			if item[0] == '{' {
				v, ok = flowMapping(item)
			} else {
				v, ok = flowScalar(item)
			}
			if !ok {
				return nil, false
			}
			l = append(l, v)
		}
		return l, true
	case '{':
		return flowMapping(s)
	}
	return scalar(s, false)
}

// splitFlow splits a flow list's inside at the commas outside {...};
// nothing deeper is accepted.
func splitFlow(s string) []string {
	var out []string
	depth, start := 0, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '{':
			depth++
		case '}':
			depth--
		case ',':
			if depth == 0 {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	return append(out, s[start:])
}

func flowMapping(s string) (any, bool) {
	if len(s) < 2 || s[0] != '{' || s[len(s)-1] != '}' {
		return nil, false
	}
	m := map[string]any{}
	inner := strings.TrimSpace(s[1 : len(s)-1])
	if inner == "" {
		return m, true
	}
	for _, kv := range strings.Split(inner, ",") {
		k, rest, ok := keyAt(strings.TrimSpace(kv))
		if !ok || !plainKey(k) || rest == "" {
			return nil, false
		}
		if _, dup := m[k]; dup {
			return nil, false
		}
		v, ok := flowScalar(rest)
		if !ok {
			return nil, false
		}
		m[k] = v
	}
	return m, true
}

// flowScalar is a scalar inside [...] or {...}, where ':' and the flow
// indicators end a plain scalar.
func flowScalar(s string) (any, bool) { return scalar(s, true) }

// scalar reads a quoted string without escapes, a decimal integer, or a
// plain scalar that YAML 1.1 (as go.yaml.in/yaml/v2 resolves it) reads as
// a string.
func scalar(s string, flow bool) (any, bool) {
	if s == "" {
		return nil, false
	}
	if q := s[0]; q == '"' || q == '\'' {
		if len(s) < 2 || s[len(s)-1] != q {
			return nil, false
		}
		body := s[1 : len(s)-1]
		if strings.ContainsAny(body, "\"'\\#") {
			return nil, false
		}
		return body, true
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !(alnum || c == '/' || (i > 0 && (c == '.' || c == '-' || c == '_' || (c == ':' && !flow)))) {
			return nil, false
		}
	}
	if s[len(s)-1] == ':' {
		return nil, false
	}
	if c := s[0]; c >= '0' && c <= '9' {
		if strings.IndexByte(s, '_') >= 0 {
			return nil, false // YAML drops it from numbers
		}
		return digitScalar(s)
	}
	if yamlWord(s) {
		return nil, false // a bool or null to YAML 1.1
	}
	return s, true
}

// yamlFloat is go.yaml.in/yaml/v2's float syntax.
var yamlFloat = regexp.MustCompile(`^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`)

// digitScalar resolves a plain scalar starting with a digit as yaml/v2
// does (timestamp, integer in any base, float, binary, else string),
// declining all but canonical decimal integers and strings.
func digitScalar(s string) (any, bool) {
	if n, ok := decimal(s); ok {
		return n, true
	}
	if len(s) > 4 && s[4] == '-' {
		return nil, false // maybe a timestamp
	}
	if strings.ContainsAny(s, "/:") || strings.Count(s, ".") > 1 {
		return s, true // an address or a CIDR: no number has these
	}
	if _, err := strconv.ParseInt(s, 0, 64); err == nil {
		return nil, false // 0x10, 010, 0o7: not what JSON would read
	}
	if _, err := strconv.ParseUint(s, 0, 64); err == nil || yamlFloat.MatchString(s) || strings.HasPrefix(s, "0b") {
		return nil, false
	}
	return s, true
}

// decimal is a canonical decimal integer (what YAML and JSON read alike).
func decimal(s string) (json.Number, bool) {
	if len(s) > 18 || (len(s) > 1 && s[0] == '0') {
		return "", false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return "", false
		}
	}
	return json.Number(s), true
}

// plainKey is a key spelled as a plain identifier that YAML reads as a
// string.
func plainKey(k string) bool {
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || (i > 0 && (c >= '0' && c <= '9' || c == '_' || c == '-'))) {
			return false
		}
	}
	// YAML refuses an implicit key over 1024 characters; config keys are
	// short, the full parser names a long one.
	return k != "" && len(k) <= 128 && !yamlWord(k)
}

// yamlWord reports the words YAML 1.1 resolves to a bool or null.
func yamlWord(s string) bool {
	switch strings.ToLower(s) {
	case "y", "yes", "n", "no", "true", "false", "on", "off", "null":
		return true
	}
	return false
}

// fill stores a generic value that shapeChecker accepted into dst, as
// encoding/json would decode its JSON text: present keys only, null leaves
// a value as it is (a pointer or list: nil). It spares the JSON encoding
// and decoding of a YAML file; a JSON file keeps encoding/json itself,
// whose merging of duplicate keys fill would not reproduce.
func fill(v any, dst reflect.Value) error {
	t := dst.Type()
	if v == nil {
		if k := t.Kind(); k == reflect.Pointer || k == reflect.Slice {
			dst.SetZero()
		}
		return nil
	}
	if t == durationType {
		d, err := parseDuration(v.(string))
		if err != nil {
			return err
		}
		dst.Set(reflect.ValueOf(Duration{d}))
		return nil
	}
	switch t.Kind() {
	case reflect.Pointer:
		if dst.IsNil() {
			dst.Set(reflect.New(t.Elem()))
		}
		return fill(v, dst.Elem())
	case reflect.Struct:
		fields := jsonFields(t)
		for k, e := range v.(map[string]any) {
			f, ok := fields[k]
			if !ok {
				return fmt.Errorf("internal: unknown field %q", k)
			}
			if err := fill(e, dst.FieldByIndex(f.Index)); err != nil {
				return err
			}
		}
	case reflect.Slice:
		l := v.([]any)
		if t.Elem().Kind() == reflect.String {
			ss := make([]string, len(l))
			for i, e := range l {
				ss[i], _ = e.(string)
			}
			dst.Set(reflect.ValueOf(ss).Convert(t))
			return nil
		}
		out := reflect.MakeSlice(t, len(l), len(l))
		for i, e := range l {
			if err := fill(e, out.Index(i)); err != nil {
				return err
			}
		}
		dst.Set(out)
	case reflect.String:
		s, ok := v.(string)
		if !ok {
			return fmt.Errorf("internal: %s for a string", describe(v))
		}
		dst.SetString(s)
	case reflect.Int, reflect.Int64, reflect.Int32:
		i, err := strconv.ParseInt(string(v.(json.Number)), 10, 64)
		if err != nil {
			return err
		}
		dst.SetInt(i)
	case reflect.Uint16, reflect.Uint32, reflect.Uint64:
		i, err := strconv.ParseUint(string(v.(json.Number)), 10, 64)
		if err != nil {
			return err
		}
		dst.SetUint(i)
	case reflect.Bool:
		b, ok := v.(bool)
		if !ok {
			return fmt.Errorf("internal: %s for a bool", describe(v))
		}
		dst.SetBool(b)
	default:
		return fmt.Errorf("internal: unsupported field type %s", t)
	}
	return nil
}
