package errsum

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"testing"
)

func routeErrs(n int) []error {
	out := make([]error, n)
	for i := range out {
		out[i] = fmt.Errorf("route 10.%d.%d.0/24 via 240.168.10.11 dev vx-weft: device: %w", 200+i/256, i%256, fs.ErrNotExist)
	}
	return out
}

func TestJoin(t *testing.T) {
	tests := []struct {
		name  string
		errs  []error
		want  string // exact message, or "" to check only bounds
		count string // prefix the message must start with
	}{
		{name: "none", errs: []error{nil, nil}},
		{name: "one", errs: []error{nil, errors.New("boom")}, want: "boom"},
		{name: "three", errs: []error{errors.New("a"), errors.New("b"), errors.New("c")}, want: "3 errors: a; b; c"},
		{name: "twenty thousand", errs: routeErrs(20000), count: "20000 errors; first 5: route 10.200.0.0/24"},
		{name: "nested join", errs: []error{errors.New("list interfaces: x"), fmt.Errorf("apply data plane: %w", errors.Join(routeErrs(20000)...))}, count: "2 errors: list interfaces: x; 20000 problems; first 5: apply data plane: route"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Join(tt.errs...)
			if tt.want == "" && tt.count == "" {
				if err != nil {
					t.Fatalf("Join of nils = %v", err)
				}
				return
			}
			msg := err.Error()
			if tt.want != "" && msg != tt.want {
				t.Fatalf("message = %q, want %q", msg, tt.want)
			}
			if !strings.HasPrefix(msg, tt.count) {
				t.Fatalf("message = %.300q…, want prefix %q", msg, tt.count)
			}
			if len(msg) > MaxText {
				t.Fatalf("message is %d bytes, cap %d", len(msg), MaxText)
			}
		})
	}
}

func TestEveryErrorStillVisible(t *testing.T) {
	errs := routeErrs(20000)
	sentinel := errors.New("the last one")
	errs = append(errs, sentinel)
	err := Join(errs...)
	if !errors.Is(err, sentinel) || !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("errors.Is lost an error past the ones quoted")
	}
	if l := err.(*List); l.Len() != 20001 {
		t.Fatalf("Len = %d", l.Len())
	}
	if !strings.HasSuffix(err.Error(), "… (19996 more)") {
		t.Fatalf("message does not say how many are not quoted: %q", err.Error()[len(err.Error())-60:])
	}
}

func TestBound(t *testing.T) {
	short := errors.New("short")
	if Bound(short) != short {
		t.Fatal("a short error must come back as is")
	}
	long := fmt.Errorf("apply: %w", errors.Join(routeErrs(20000)...))
	b := Bound(long)
	if len(b.Error()) > MaxText || !strings.HasPrefix(b.Error(), "20000 problems; first 5: apply: route") {
		t.Fatalf("bounded message %d bytes: %.200q", len(b.Error()), b.Error())
	}
	if !errors.Is(b, fs.ErrNotExist) {
		t.Fatal("Bound hid the wrapped errors")
	}
	huge := errors.New(strings.Repeat("x", 10*MaxLine))
	if got := Bound(huge).Error(); len(got) > MaxLine || !strings.HasSuffix(got, "…[cut]") {
		t.Fatalf("one long line: %d bytes, suffix %q", len(got), got[len(got)-10:])
	}
}

func TestTextAndStrings(t *testing.T) {
	if got := Text("one line"); got != "one line" {
		t.Fatal(got)
	}
	if got := Text("a\nb\n"); got != "2 problems: a; b" {
		t.Fatal(got)
	}
	many := make([]string, 9000)
	for i := range many {
		many[i] = fmt.Sprintf("node n%d maps to VTEP 240.0.0.1 already used", i)
	}
	got := Strings(many, "problems")
	if len(got) > MaxText || !strings.HasPrefix(got, "9000 problems; first 5: node n0 ") {
		t.Fatalf("%.200q", got)
	}
	// Cutting never splits a rune.
	if s := cut(strings.Repeat("é", MaxLine), MaxLine); !strings.HasSuffix(s, "é …[cut]") {
		t.Fatalf("cut split a rune: %q", s[len(s)-12:])
	}
}
