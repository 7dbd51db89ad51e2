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

// An echo request's reply (the kernel flips the type and keeps the rest)
// decodes to the probe; anything else is not an answer.
func TestEchoReply(t *testing.T) {
	p := packet{kind: kindRequest, id: 7, seq: 0x10042, sent: 1e18}
	for _, v6 := range []bool{false, true} {
		req := echoRequest(nil, v6, 0x5157, p)
		if !v6 && checksum(req) != 0 {
			t.Errorf("IPv4 echo request checksum does not verify: % x", req)
		}
		asReply := func(b []byte) []byte {
			b = bytes.Clone(b)
			b[0] = icmp4EchoReply
			if v6 {
				b[0] = icmp6EchoReply
			}
			return b
		}
		good := asReply(req)
		mut := func(f func(b []byte)) []byte { b := bytes.Clone(good); f(b); return b }
		tests := []struct {
			name  string
			in    []byte
			ident uint16
			ok    bool
		}{
			{"reply", good, 0x5157, true},
			{"another identifier", good, 0x5158, false},
			{"the request itself", req, 0x5157, false},
			{"code", mut(func(b []byte) { b[1] = 1 }), 0x5157, false},
			{"sequence differs from the payload's", mut(func(b []byte) { b[7]++ }), 0x5157, false},
			{"payload a reply", mut(func(b []byte) { b[icmpHeaderSize+5] = kindReply }), 0x5157, false},
			{"short", good[:len(good)-1], 0x5157, false},
			{"foreign payload", append(bytes.Clone(good[:icmpHeaderSize]), "abcdefghijklmnopqrstuvwxyz012345"...), 0x5157, false},
		}
		for _, tc := range tests {
			got, err := echoReply(tc.in, v6, tc.ident)
			if tc.ok != (err == nil) || (tc.ok && got != p) {
				t.Errorf("v6 %v %s: echoReply = %+v, %v; want ok %v", v6, tc.name, got, err, tc.ok)
			}
		}
	}
}
