package pathprobe

import (
	"bytes"
	"errors"
	"testing"
)

func TestDecode(t *testing.T) {
	good := packet{kind: kindRequest, id: 7, seq: 42, sent: 1e18}.encode(nil)
	mut := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	tests := []struct {
		name string
		in   []byte
		ok   bool
	}{
		{"request", good, true},
		{"reply", mut(func(b []byte) []byte { b[5] = kindReply; return b }), true},
		{"empty", nil, false},
		{"short", good[:31], false},
		{"long", append(bytes.Clone(good), 0), false},
		{"magic", mut(func(b []byte) []byte { b[0] = 'X'; return b }), false},
		{"version", mut(func(b []byte) []byte { b[4] = 2; return b }), false},
		{"kind", mut(func(b []byte) []byte { b[5] = 9; return b }), false},
		{"reserved", mut(func(b []byte) []byte { b[7] = 1; return b }), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := decode(tc.in)
			if tc.ok != (err == nil) {
				t.Fatalf("decode err = %v, want ok %v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, errNotProbe) {
				t.Fatalf("err = %v, want errNotProbe", err)
			}
			if tc.ok && (p.id != 7 || p.seq != 42 || p.sent != 1e18) {
				t.Fatalf("decoded %+v", p)
			}
		})
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(packet{kind: kindRequest, id: 1, seq: 2, sent: 3}.encode(nil))
	f.Add([]byte("WFTP"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := decode(b)
		if err != nil {
			return
		}
		if got := p.encode(nil); !bytes.Equal(got, b) {
			t.Fatalf("re-encoded %x, want %x", got, b)
		}
	})
}
