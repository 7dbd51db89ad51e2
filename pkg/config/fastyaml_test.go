package config

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// slowGeneric is the generic value of data through the full parser, as
// decode took it before plainYAML.
func slowGeneric(data []byte) (any, error) {
	j, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, err
	}
	var v any
	d := json.NewDecoder(bytes.NewReader(j))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

// samePlainYAML fails when plainYAML accepts data and reads it otherwise
// than the full parser, or when the Config filled from it differs from the
// one encoding/json decodes from the full parser's JSON.
func samePlainYAML(t *testing.T, data []byte) (accepted bool) {
	t.Helper()
	fast, ok := plainYAML(data)
	if !ok {
		return false
	}
	slow, err := slowGeneric(data)
	if err != nil {
		t.Fatalf("plainYAML accepted what the full parser refuses (%v):\n%s", err, data)
	}
	if !reflect.DeepEqual(fast, slow) {
		t.Fatalf("plainYAML reads\n%#v\nthe full parser\n%#v\nfrom:\n%s", fast, slow, data)
	}
	var errs errorList
	sc := shapeChecker{coerce: true, errs: &errs}
	sc.check(slow, reflect.TypeOf(Config{}), "")
	if errs.err() != nil || sc.coerced {
		return true
	}
	j, _ := yaml.YAMLToJSONStrict(data)
	var want, got Config
	d := json.NewDecoder(bytes.NewReader(j))
	d.DisallowUnknownFields()
	if err := d.Decode(&want); err != nil {
		t.Fatalf("decode JSON: %v", err)
	}
	if err := fill(fast, reflect.ValueOf(&got).Elem()); err != nil {
		t.Fatalf("fill: %v", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("fill gives\n%+v\nencoding/json\n%+v", got, want)
	}
	return true
}

// The forms configs are written in take the fast path (else the 20,000-CIDR
// reload is slow again without any test noticing), with the full parser's
// result.
func TestPlainYAMLTakesCommonFiles(t *testing.T) {
	harnessStyle, err := yaml.Marshal(map[string]any{
		"nodeName": "c1-n1", "routeTable": 240, "metricsAddress": "", "resyncInterval": "30s",
		"cluster": map[string]any{"id": "c1", "podCIDRs": []string{"10.1.0.0/16"}, "gateway": "c1-n1",
			"nodes": []any{map[string]any{"name": "c1-n1", "ip": "192.168.10.11"}}},
		"remotes": []any{map[string]any{"id": "c2", "gatewayIP": "192.168.20.11",
			"podCIDRs": []string{"10.2.0.0/24", "10.2.2.0/24", "fd00:2::/64"}}},
		"vxlan": map[string]any{"name": "vx-weft", "vni": 100, "port": 4800, "vtepCIDR": "240.0.0.0/8", "mtu": 0},
	})
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{"sigs.k8s.io/yaml.Marshal": harnessStyle, "scaleDoc": scaleDoc(200)}
	for _, name := range []string{"valid.yaml", "minimal.yaml"} {
		files[name] = readTestdata(t, name)
	}
	for name, data := range files {
		t.Run(name, func(t *testing.T) {
			if !samePlainYAML(t, data) {
				t.Fatalf("declined by plainYAML:\n%s", data)
			}
		})
	}
}

// Whatever plainYAML declines goes to the full parser; these are the cases
// where a reader of the subset could go wrong.
func TestPlainYAMLDeclinesOrAgrees(t *testing.T) {
	for _, doc := range []string{
		"a: yes\n", "a: No\n", "a: ~\n", "a: null\n", "on: 1\n", "a: 010\n", "a: 0x1F\n", "a: 1e3\n", "a: 1.5\n",
		"a: 2001-12-14\n", "a: 2001:db8::/32\n", "a: fd00::1\n", "a: 0b101\n", "a: 1_000\n", "a: -5\n",
		"a: 30s\n", "a: 127.0.0.1:9469\n", "a: '01'\n", "a: \"x: y\"\n", "a: 'it''s'\n", "a: \"a\\tb\"\n",
		"a: b\na: c\n", "a: {x: 1, x: 2}\n", "a:\n  - x\n  - y\nb: z\n", "a:\n- x\n- y\nb: z\n", "a:\n- x\n  y\n",
		"a: x\n  y\n", "a:\n  b: 1\n c: 2\n", "- a\n- b\n", "a: &x 1\nb: *x\n", "a: !!str 1\n", "a: |\n  x\n",
		"---\na: 1\n", "a: 1 # c\n# d\n", "a: b#c\n", "a: [x, y]\n", "a: [x, {b: c}]\n", "a: [fd00::1]\n",
		"a: {b: [c]}\n", "a:\n  -\n  - x\n", "a:\n  - b: 1\n    c: 2\n  - d: 3\n", "a:\n  -   b: 1\n      c: 2\n",
		"a:\n  - - x\n", "\ta: 1\n", "a: 1\r\n", "a: \"é\"\n", "a:\n", "a: []\nb: {}\n", "a: [ ]\n",
		"a: 12345678901234567890\n", "a: 0\nb: 00\n", "a: 1:20\n", "a: y\n", "a: Off\n", "a: c1-n1\n",
		"? a\n: b\n", "a : b\n", "a: b: c\n", "a: [b, c\n", "a: x # [y\n", "key: value\n  # comment\n",
		"a:\n  b:\n    - c\n  d: e\n", "a: 'x,y'\n", "a: [\"x,y\"]\n", "a: 'b'c'\n",
	} {
		t.Run(doc, func(t *testing.T) { samePlainYAML(t, []byte(doc)) })
	}
}

// FuzzPlainYAML: on any input plainYAML accepts, it reads what the full
// parser reads.
func FuzzPlainYAML(f *testing.F) {
	seedTestdata(f)
	f.Add(scaleDoc(3))
	f.Add([]byte("a:\n- x\n- y: 1\n  z: [p, q]\nb: 'c'\n"))
	f.Add([]byte(strings.Repeat("k: v\n", 3)))
	f.Fuzz(func(t *testing.T, data []byte) { samePlainYAML(t, data) })
}

func BenchmarkDecode20000(b *testing.B) {
	doc := scaleDoc(20000)
	b.Run("plainYAML", func(b *testing.B) {
		for b.Loop() {
			if _, err := decode(doc); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("fullParser", func(b *testing.B) {
		for b.Loop() {
			if _, err := slowGeneric(doc); err != nil {
				b.Fatal(err)
			}
		}
	})
}
