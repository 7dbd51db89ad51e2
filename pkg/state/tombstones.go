package state

import (
	"context"
	"sort"
	"time"

	"github.com/weft-net/weft/pkg/api"
)

// MaxTombstones bounds the DELs remembered to order spooled ADDs. Past it
// the oldest quarter is forgotten: a spooled ADD older than thousands of
// later DELs has long been replayed or dropped (the spool is bounded).
const MaxTombstones = 4096

// Tombstone records that the plugin saw a DEL of an attachment at Deleted
// (its clock, as in api.Event.Time). It is durable (the DEL's journal
// record, then the snapshot), so a spooled ADD replayed by the next weftd,
// after a restart, is ordered against it as exactly as by this one; an ADD's
// write does not grow with the DELs remembered (one record either way).
type Tombstone struct {
	ContainerID string    `json:"containerID"`
	IfName      string    `json:"ifName"`
	Deleted     time.Time `json:"deleted"`
}

// Key returns the identity of the deleted attachment.
func (t Tombstone) Key() api.AttachmentKey {
	return api.AttachmentKey{ContainerID: t.ContainerID, IfName: t.IfName}
}

// DeleteAt forgets an attachment for a live DEL seen at at, and remembers
// the DEL durably (see Replay). It returns whether the attachment was
// known, once both are on disk. A DEL no newer than the one remembered, of
// an attachment not recorded, writes nothing.
func (s *Store) DeleteAt(ctx context.Context, k api.AttachmentKey, at time.Time) (bool, error) {
	return s.deleteAt(ctx, k, at, false)
}

// ReplayDelete is DeleteAt for a spooled DEL: a record made by an ADD
// later than at stays (live events are ordered by arrival, spooled ones by
// the time the plugin saw them).
func (s *Store) ReplayDelete(ctx context.Context, k api.AttachmentKey, at time.Time) (bool, error) {
	return s.deleteAt(ctx, k, at, true)
}

func (s *Store) deleteAt(ctx context.Context, k api.AttachmentKey, at time.Time, spooled bool) (bool, error) {
	s.mu.Lock()
	cur, known := s.attachments[k]
	if known && spooled && cur.Added.After(at) {
		known = false
	}
	prev, had := s.tombstones[k]
	newer := !had || at.After(prev)
	if !known && !newer {
		s.mu.Unlock()
		return false, nil
	}
	r := record{Op: opDel, K: &k, Forget: known}
	if newer {
		r.Tomb = &at
	}
	g := s.mutateLocked(r)
	s.mu.Unlock()
	return known, s.commit(ctx, g)
}

// Replay records a from a spooled ADD the plugin made at at, unless a
// later event already decided: a DEL of the same attachment at or after
// at, or a record from a later ADD. The check and the insert are under one
// lock, the one DeleteAt takes, so a live DEL cannot fall between them and
// be undone. It returns whether a was recorded, once durable.
func (s *Store) Replay(ctx context.Context, a Attachment, at time.Time) (bool, error) {
	k := a.Key()
	s.mu.Lock()
	if t, ok := s.tombstones[k]; ok && !at.After(t) {
		s.mu.Unlock()
		return false, nil
	}
	if cur, ok := s.attachments[k]; ok && cur.Added.After(at) {
		s.mu.Unlock()
		return false, nil
	}
	g := s.mutateLocked(record{Op: opPut, A: &a})
	s.mu.Unlock()
	return true, s.commit(ctx, g)
}

// Tombstones returns the remembered DELs, oldest first.
func (s *Store) Tombstones() []Tombstone {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sortedTombstones()
}

func (c *contents) sortedTombstones() []Tombstone {
	if len(c.tombstones) == 0 {
		return nil
	}
	out := make([]Tombstone, 0, len(c.tombstones))
	for k, t := range c.tombstones {
		out = append(out, Tombstone{ContainerID: k.ContainerID, IfName: k.IfName, Deleted: t})
	}
	sortTombstones(out)
	return out
}

func sortTombstones(out []Tombstone) {
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Deleted.Equal(out[j].Deleted) {
			return out[i].Deleted.Before(out[j].Deleted)
		}
		if out[i].ContainerID != out[j].ContainerID {
			return out[i].ContainerID < out[j].ContainerID
		}
		return out[i].IfName < out[j].IfName
	})
}

// pruneTombstones forgets the oldest quarter once there are more than
// MaxTombstones: amortised O(1) per DEL. It is deterministic (by time, then
// key), so a replayed journal prunes exactly what the live store did.
func (c *contents) pruneTombstones() {
	if len(c.tombstones) <= MaxTombstones {
		return
	}
	all := c.sortedTombstones()
	for _, t := range all[:len(all)-MaxTombstones*3/4] {
		delete(c.tombstones, t.Key())
	}
}
