package conflist

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
)

var testEntry = Entry{Socket: "/run/weft/weft.sock", SpoolDir: "/run/weft/spool", FailPolicy: "open", Timeout: "2s"}

func readExample(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("examples", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// pluginsOf decodes the plugin list the way a runtime does.
func pluginsOf(t *testing.T, data []byte) (*libcni.NetworkConfigList, []map[string]any) {
	t.Helper()
	list, err := libcni.ConfListFromBytes(data)
	if err != nil {
		t.Fatalf("libcni rejects the result: %v\n%s", err, data)
	}
	var ps []map[string]any
	for _, p := range list.Plugins {
		var m map[string]any
		if err := json.Unmarshal(p.Bytes, &m); err != nil {
			t.Fatal(err)
		}
		ps = append(ps, m)
	}
	return list, ps
}

func TestInsertFormats(t *testing.T) {
	tests := []struct {
		name, in string
		// wantTail is the text expected right after the last original
		// plugin: the separator and indentation must match the file's.
		wantTail string
	}{
		{"compact", `{"name":"n","cniVersion":"1.0.0","plugins":[{"type":"ptp"}]}`,
			`{"type":"ptp"},{"type":"weft","timeout":"3s"}]}`},
		{"spaced", `{"name": "n", "cniVersion": "1.0.0", "plugins": [{"type": "a"}, {"type": "b"}]}`,
			`{"type": "b"}, {"type":"weft","timeout":"3s"}]}`},
		{"tabs", "{\n\t\"name\": \"n\",\n\t\"cniVersion\": \"0.3.1\",\n\t\"plugins\": [\n\t\t{\n\t\t\t\"type\": \"a\"\n\t\t}\n\t]\n}\n",
			"\t\t{\n\t\t\t\"type\": \"a\"\n\t\t},\n\t\t{\n\t\t\t\"type\": \"weft\",\n\t\t\t\"timeout\": \"3s\"\n\t\t}\n\t]\n}\n"},
		{"four spaces", "{\n    \"name\": \"n\",\n    \"cniVersion\": \"0.4.0\",\n    \"plugins\": [\n        {\n            \"type\": \"a\"\n        }\n    ]\n}",
			"        {\n            \"type\": \"a\"\n        },\n        {\n            \"type\": \"weft\",\n            \"timeout\": \"3s\"\n        }\n    ]\n}"},
	}
	e := Entry{Timeout: "3s"}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, changed, err := Insert([]byte(tt.in), e)
			if err != nil || !changed {
				t.Fatalf("Insert: changed %v, %v", changed, err)
			}
			if !strings.HasSuffix(string(out), tt.wantTail) {
				t.Errorf("got\n%s\nwant it to end with\n%s", out, tt.wantTail)
			}
			pluginsOf(t, out)
			back, err := Remove(out)
			if err != nil || string(back) != tt.in {
				t.Errorf("Remove(Insert(x)) != x: %v\n%q\n%q", err, back, tt.in)
			}
			again, changed, err := Insert(out, e)
			if err != nil || changed || string(again) != string(out) {
				t.Errorf("second Insert changed the file: %v %v", changed, err)
			}
		})
	}
}

func TestInsertReplacesStaleEntries(t *testing.T) {
	tests := []struct{ name, in string }{
		{"weft not last", `{"name":"n","cniVersion":"1.0.0","plugins":[{"type":"ptp"},{"type":"weft"},{"type":"portmap"}]}`},
		{"weft first", `{"name":"n","cniVersion":"1.0.0","plugins":[{"type":"weft"},{"type":"ptp"}]}`},
		{"other options", `{"name":"n","cniVersion":"1.0.0","plugins":[{"type":"ptp"},{"type":"weft","timeout":"9s"}]}`},
		{"twice", `{"name":"n","cniVersion":"1.0.0","plugins":[{"type":"weft"},{"type":"ptp"},{"type":"weft"}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, changed, err := Insert([]byte(tt.in), testEntry)
			if err != nil || !changed {
				t.Fatalf("Insert: changed %v, %v", changed, err)
			}
			_, ps := pluginsOf(t, out)
			n := 0
			for _, p := range ps {
				if p["type"] == PluginType {
					n++
				}
			}
			last := ps[len(ps)-1]
			if n != 1 || last["type"] != PluginType || last["timeout"] != "2s" || last["socket"] != testEntry.Socket {
				t.Errorf("want exactly one weft entry, last, with the new options:\n%s", out)
			}
		})
	}
}

func TestParseRefuses(t *testing.T) {
	tests := []struct{ name, in string }{
		{"half-written", `{"name":"k8s-pod-network","cniVersion":"1.0.0","plugins":[{"type":"calico",`},
		{"empty", ``},
		{"not an object", `["a"]`},
		{"no plugins no type", `{"name":"n","cniVersion":"1.0.0"}`},
		{"empty plugins", `{"name":"n","cniVersion":"1.0.0","plugins":[]}`},
		{"plugin without type", `{"name":"n","cniVersion":"1.0.0","plugins":[{"a":1}]}`},
		{"trailing garbage", `{"name":"n","cniVersion":"1.0.0","plugins":[{"type":"a"}]} {`},
		{"plugins not array", `{"name":"n","plugins":{"type":"a"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if p, err := Parse([]byte(tt.in)); err == nil {
				t.Errorf("Parse accepted %q: %+v", tt.in, p)
			}
			if _, _, err := Insert([]byte(tt.in), testEntry); err == nil {
				t.Errorf("Insert accepted %q", tt.in)
			}
		})
	}
}

func TestFromSingleKeepsThePlugin(t *testing.T) {
	orig := readExample(t, "10-bridge.conf")
	conv, err := FromSingle(orig)
	if err != nil {
		t.Fatal(err)
	}
	list, ps := pluginsOf(t, conv)
	if list.Name != "bridge" || list.CNIVersion != "0.4.0" || len(ps) != 1 || ps[0]["type"] != "bridge" || ps[0]["bridge"] != "cni0" {
		t.Errorf("converted list: %s", conv)
	}
	var a, b any
	_ = json.Unmarshal(orig, &a)
	_ = json.Unmarshal(list.Plugins[0].Bytes, &b)
	if !jsonEqualAny(a, b) {
		t.Errorf("plugin changed in conversion:\n%s\n%s", orig, list.Plugins[0].Bytes)
	}
}

func jsonEqualAny(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

func FuzzInsertRemove(f *testing.F) {
	for _, n := range []string{"10-calico.conflist", "10-flannel.conflist"} {
		b, err := os.ReadFile(filepath.Join("examples", n))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"name":"n","cniVersion":"1.0.0","plugins":[{"type":"a"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse(data)
		if err != nil || p.Kind != KindList || p.HasWeft() {
			return
		}
		out, _, err := Insert(data, testEntry)
		if err != nil {
			t.Fatalf("Insert of a parsed list: %v", err)
		}
		if _, err := Parse(out); err != nil {
			t.Fatalf("Insert result does not parse: %v\n%s", err, out)
		}
		back, err := Remove(out)
		if err != nil || string(back) != string(data) {
			t.Fatalf("Remove(Insert(x)) != x: %v", err)
		}
	})
}
