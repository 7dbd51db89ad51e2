// Package errsum joins errors into one whose message stays bounded: a count
// and the first few messages. A pass over 20,000 routes whose device is
// missing fails 20,000 times; joined in full the message is megabytes, and
// it travels into conditions, lastReconcile, the CHECK reason and the log,
// past the API client's 1 MiB cap, so `weftd status` would fail exactly when
// the operator needs it. Every error is still kept for errors.Is and
// errors.As.
package errsum

import (
	"fmt"
	"strings"
)

const (
	// Shown is how many messages a summary quotes.
	Shown = 5
	// MaxLine caps one quoted message, in bytes.
	MaxLine = 1024
	// MaxText caps a whole summary, in bytes.
	MaxText = Shown*(MaxLine+2) + 128
)

// List is a joined error with a bounded message.
type List struct {
	errs []error
}

// Join returns nil when every err is nil, the error itself when only one is
// not nil, and a *List otherwise. Unlike errors.Join its message is bounded
// (see List.Error).
func Join(errs ...error) error {
	var out []error
	for _, err := range errs {
		if err != nil {
			out = append(out, err)
		}
	}
	switch len(out) {
	case 0:
		return nil
	case 1:
		return Bound(out[0])
	}
	return &List{errs: out}
}

// Error is "N errors; first 5: a; b; c; d; e; … (N-5 more)", each message
// cut to MaxLine.
func (l *List) Error() string {
	msgs := make([]string, 0, min(len(l.errs), Shown))
	for _, err := range l.errs[:min(len(l.errs), Shown)] {
		msgs = append(msgs, err.Error())
	}
	return summarise(len(l.errs), msgs, "errors")
}

// Unwrap exposes every error to errors.Is and errors.As.
func (l *List) Unwrap() []error { return l.errs }

// Len is the number of errors joined.
func (l *List) Len() int { return len(l.errs) }

// Bound returns err with a message no longer than MaxText: an error whose
// text is short is returned as is; a longer one (an errors.Join of many,
// whose lines are its errors) is wrapped so that its message is summarised
// and errors.Is/As still see the original.
func Bound(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := err.(*List); ok {
		return err
	}
	msg := err.Error()
	if len(msg) <= MaxLine && !strings.Contains(msg, "\n") {
		return err
	}
	return &bounded{err: err, msg: Text(msg)}
}

type bounded struct {
	err error
	msg string
}

func (b *bounded) Error() string { return b.msg }
func (b *bounded) Unwrap() error { return b.err }

// Text bounds free text: one line is cut to MaxLine; several lines (the
// errors.Join convention, one error a line) become a count and the first
// few lines.
func Text(s string) string {
	if !strings.Contains(s, "\n") {
		return cut(s, MaxLine)
	}
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) == 1 {
		return cut(lines[0], MaxLine)
	}
	return summarise(len(lines), lines[:min(len(lines), Shown)], "problems")
}

// Strings summarises a list of messages the way List.Error does.
func Strings(msgs []string, noun string) string {
	if len(msgs) == 1 {
		return cut(msgs[0], MaxLine)
	}
	return summarise(len(msgs), msgs[:min(len(msgs), Shown)], noun)
}

func summarise(n int, first []string, noun string) string {
	if n == 0 {
		return ""
	}
	var b strings.Builder
	if n > len(first) {
		fmt.Fprintf(&b, "%d %s; first %d: ", n, noun, len(first))
	} else {
		fmt.Fprintf(&b, "%d %s: ", n, noun)
	}
	for i, m := range first {
		if i > 0 {
			b.WriteString("; ")
		}
		// A quoted message is one line; a nested join says its own count.
		b.WriteString(cut(Text(m), MaxLine))
	}
	if n > len(first) {
		fmt.Fprintf(&b, "; … (%d more)", n-len(first))
	}
	return cut(b.String(), MaxText)
}

// cut shortens s to at most n bytes, on a rune boundary, marking the cut.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const mark = " …[cut]"
	end := n - len(mark)
	for end > 0 && !utf8Start(s[end]) {
		end--
	}
	return s[:end] + mark
}

func utf8Start(b byte) bool { return b&0xC0 != 0x80 }
