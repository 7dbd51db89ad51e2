package metrics

import (
	"testing"
	"time"

	"github.com/weft-net/weft/pkg/api"
)

func TestPathMetrics(t *testing.T) {
	fs := &fakeStatus{st: api.Status{PathHealth: &api.PathHealth{Targets: []api.PathTarget{
		{Name: "gateway/c1-n1", Hop: "node-to-gateway", Up: true},
		{Name: "remote/c2", Hop: "node-to-remote", Up: false},
	}}}}
	m := New(fs.get)
	m.ObservePathRTT("gateway/c1-n1", 300*time.Microsecond)
	m.ObservePathRTT("gateway/c1-n1", 2*time.Millisecond)
	base := serve(t, NewMux(m, func() (bool, string) { return true, "" }))
	fams := scrape(t, base)
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"weft_path_up", map[string]string{"target": "gateway/c1-n1", "hop": "node-to-gateway"}, 1},
		{"weft_path_up", map[string]string{"target": "remote/c2", "hop": "node-to-remote"}, 0},
		{"weft_path_rtt_seconds", map[string]string{"target": "gateway/c1-n1"}, 2}, // sample count
	} {
		if v, ok := value(fams, c.name, c.labels); !ok || v != c.want {
			t.Errorf("%s%v = %v (present %v), want %v", c.name, c.labels, v, ok, c.want)
		}
	}
	fs.set(func(s *api.Status) { s.PathHealth = nil })
	if _, ok := value(scrape(t, base), "weft_path_up", nil); ok {
		t.Error("weft_path_up exported with the health check off")
	}
}
