package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"
)

var durationType = reflect.TypeOf(Duration{})

// decode turns YAML or JSON bytes into a Config without defaults or
// validation. Unknown fields and wrong types are reported with their full
// path (json's own errors name neither the list index nor every problem).
func decode(data []byte) (*Config, error) {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return nil, fmt.Errorf("configuration is empty")
	}
	// JSON is decoded as JSON: YAML 1.1 refuses tab indentation, which is
	// common in hand-written JSON.
	isJSON := trimmed[0] == '{' && json.Valid(trimmed)

	var generic any
	jsonBytes := trimmed
	fast := false
	if !isJSON {
		// The plain YAML files are written in, read without the full
		// parser; anything else takes it.
		generic, fast = plainYAML(data)
	}
	if !fast {
		if !isJSON {
			var err error
			// Strict: YAML forbids duplicate keys, and silently taking one
			// of them would hide an operator's mistake.
			jsonBytes, err = yaml.YAMLToJSONStrict(data)
			if err != nil {
				return nil, fmt.Errorf("parse YAML: %w", err)
			}
		}
		dec := json.NewDecoder(bytes.NewReader(jsonBytes))
		dec.UseNumber()
		if err := dec.Decode(&generic); err != nil {
			return nil, fmt.Errorf("parse JSON: %w", err)
		}
	}
	if generic == nil {
		return nil, fmt.Errorf("configuration is empty")
	}

	var errs errorList
	// YAML scalars such as `id: 1` are numbers to the YAML parser but are
	// meant as strings; sigs.k8s.io/yaml coerces them for string fields.
	sc := shapeChecker{coerce: !isJSON, errs: &errs}
	sc.check(generic, reflect.TypeOf(Config{}), "")
	if err := errs.err(); err != nil {
		return nil, err
	}

	cfg := &Config{}
	if isJSON {
		d := json.NewDecoder(bytes.NewReader(jsonBytes))
		d.DisallowUnknownFields()
		if err := d.Decode(cfg); err != nil {
			return nil, fmt.Errorf("decode JSON: %w", err)
		}
		return cfg, nil
	}
	// Without a scalar to coerce, the generic value is what
	// sigs.k8s.io/yaml would decode: storing it spares a second YAML parse
	// (and a JSON round trip), most of the cost of a file with 20,000
	// CIDRs. A coerced scalar needs the YAML's own text ("01" must stay
	// "01"), which only the target-guided conversion keeps.
	if !sc.coerced {
		if err := fill(generic, reflect.ValueOf(cfg).Elem()); err != nil {
			return nil, fmt.Errorf("decode YAML: %w", err)
		}
		return cfg, nil
	}
	if err := yaml.UnmarshalStrict(data, cfg); err != nil {
		return nil, fmt.Errorf("decode YAML: %w", err)
	}
	return cfg, nil
}

// check compares a generic JSON value with the Go type it will be
// decoded into and records every unknown key and type mismatch. Keys must
// match exactly: encoding/json would accept "NodeName" for "nodeName".
type shapeChecker struct {
	coerce  bool // YAML: numbers and booleans are accepted for strings
	coerced bool // such a scalar was seen
	errs    *errorList
}

func (sc *shapeChecker) check(v any, t reflect.Type, path string) {
	errs := sc.errs
	if v == nil {
		return // null leaves the field at its zero value, i.e. the default
	}
	if t == durationType {
		s, ok := v.(string)
		if !ok {
			errs.add(path, fmt.Sprintf("%s is not a duration (write it as a string such as \"30s\")", describe(v)))
			return
		}
		if _, err := parseDuration(s); err != nil {
			errs.add(path, err.Error())
		}
		return
	}
	switch t.Kind() {
	case reflect.Pointer:
		sc.check(v, t.Elem(), path)
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			errs.add(path, fmt.Sprintf("expected a mapping, got %s", describe(v)))
			return
		}
		fields := jsonFields(t)
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			f, ok := fields[k]
			if !ok {
				errs.add(joinPath(path, k), "unknown field")
				continue
			}
			sc.check(m[k], f.Type, joinPath(path, k))
		}
	case reflect.Slice:
		l, ok := v.([]any)
		if !ok {
			errs.add(path, fmt.Sprintf("expected a list, got %s", describe(v)))
			return
		}
		for i, e := range l {
			if _, ok := e.(string); ok && t.Elem().Kind() == reflect.String {
				continue // the common case, 20,000 times: no path to build
			}
			sc.check(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
		}
	case reflect.String:
		switch v.(type) {
		case string:
		case json.Number, bool:
			if !sc.coerce {
				errs.add(path, fmt.Sprintf("expected a string, got %s", describe(v)))
			}
			sc.coerced = true
		default:
			errs.add(path, fmt.Sprintf("expected a string, got %s", describe(v)))
		}
	case reflect.Int, reflect.Int64, reflect.Int32, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, ok := v.(json.Number)
		if !ok {
			errs.add(path, fmt.Sprintf("expected an integer, got %s", describe(v)))
			return
		}
		lo, hi := intRange(t)
		i, err := strconv.ParseInt(n.String(), 10, 64)
		if err != nil {
			errs.add(path, fmt.Sprintf("expected an integer, got %s", n))
			return
		}
		if i < lo || (i >= 0 && uint64(i) > hi) {
			errs.add(path, fmt.Sprintf("%s is out of range (%d..%d)", n, lo, hi))
		}
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			errs.add(path, fmt.Sprintf("expected true or false, got %s", describe(v)))
		}
	default:
		// Every field of Config is one of the kinds above; a new kind must
		// be taught here rather than silently accepted.
		errs.add(path, fmt.Sprintf("internal: unsupported field type %s", t))
	}
}

func intRange(t reflect.Type) (int64, uint64) {
	switch t.Kind() {
	case reflect.Uint16:
		return 0, math.MaxUint16
	case reflect.Uint32:
		return 0, math.MaxUint32
	case reflect.Uint64:
		return 0, math.MaxInt64
	case reflect.Int32:
		return math.MinInt32, math.MaxInt32
	default:
		return math.MinInt64, math.MaxInt64
	}
}

func jsonFields(t reflect.Type) map[string]reflect.StructField {
	out := make(map[string]reflect.StructField, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f
	}
	return out
}

func describe(v any) string {
	switch x := v.(type) {
	case string:
		return strconv.Quote(x)
	case json.Number:
		return x.String()
	case bool:
		return strconv.FormatBool(x)
	case []any:
		return "a list"
	case map[string]any:
		return "a mapping"
	default:
		return fmt.Sprintf("%v", x)
	}
}
