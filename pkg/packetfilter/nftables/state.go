package nftbackend

import (
	"fmt"
	"slices"
	"strings"

	"github.com/google/nftables"
)

// kernelState is what weft's tables hold, as far as Apply cares.
type kernelState struct {
	tables map[*family]*tableState // only the tables that exist
}

// tableState is one of weft's tables as the kernel holds it.
type tableState struct {
	chains map[string]chainState
	sets   map[string]setState
	// unreadable notes why the table's content could not be read (a rule
	// the library cannot parse): the table is then rebuilt.
	unreadable string
}

type chainState struct {
	spec chainSpec
	base bool
	tags []string
}

type setState struct {
	ok        bool // the family's address type, interval, nothing else
	intervals []ival
}

// weftTable is table ip weft.
func weftTable() *nftables.Table { return ipv4.weftTable() }

// readState lists weft's tables: their chains, their rules' tags and the
// named sets with their elements.
func readState(cc *nftables.Conn) (*kernelState, error) {
	st := &kernelState{tables: map[*family]*tableState{}}
	tables, err := cc.ListTables()
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	for _, f := range families {
		if !slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == TableName && t.Family == f.table }) {
			continue
		}
		ts, err := readTable(cc, f)
		if err != nil {
			return nil, err
		}
		st.tables[f] = ts
	}
	return st, nil
}

func readTable(cc *nftables.Conn, f *family) (*tableState, error) {
	ts := &tableState{chains: map[string]chainState{}, sets: map[string]setState{}}
	table := f.weftTable()
	chains, err := cc.ListChainsOfTableFamily(f.table)
	if err != nil {
		return nil, fmt.Errorf("list %s chains: %w", f.name, err)
	}
	for _, c := range chains {
		if c.Table == nil || c.Table.Name != TableName {
			continue
		}
		cs := chainState{spec: chainSpec{name: c.Name, typ: c.Type}}
		if c.Hooknum != nil && c.Priority != nil {
			cs.base = true
			cs.spec.hook, cs.spec.priority = *c.Hooknum, *c.Priority
		}
		if c.Policy != nil {
			cs.spec.policy = *c.Policy
		}
		rules, err := cc.GetRules(table, c)
		if err != nil {
			ts.unreadable = fmt.Sprintf("rules of chain %s: %v", c.Name, err)
			continue
		}
		for _, r := range rules {
			cs.tags = append(cs.tags, ruleTag(r))
		}
		ts.chains[c.Name] = cs
	}
	sets, err := cc.GetSets(table)
	if err != nil {
		return nil, fmt.Errorf("list sets of table %s %s: %w", f.name, TableName, err)
	}
	for _, s := range sets {
		if s.Anonymous || strings.HasPrefix(s.Name, "__") {
			continue
		}
		ss := setState{ok: s.KeyType.Name == f.key.Name && s.Interval &&
			!s.IsMap && !s.HasTimeout && !s.Constant && !s.Concatenation && !s.Dynamic}
		elems, err := cc.GetSetElements(s)
		if err != nil {
			return nil, fmt.Errorf("list elements of set %s in table %s %s: %w", s.Name, f.name, TableName, err)
		}
		ss.intervals = elementsIntervals(f, elems)
		ts.sets[s.Name] = ss
	}
	return ts, nil
}

// mismatch says why the table's structure differs from d (empty: it does
// not; only set elements may differ). ts is nil for a missing table.
func (ts *tableState) mismatch(d *desiredTable) string {
	switch {
	case ts == nil:
		return "table missing"
	case ts.unreadable != "":
		return "unreadable " + ts.unreadable
	case len(ts.sets) != len(d.sets):
		return fmt.Sprintf("%d sets, want %d", len(ts.sets), len(d.sets))
	case len(ts.chains) != len(d.chains):
		return fmt.Sprintf("%d chains, want %d", len(ts.chains), len(d.chains))
	}
	for name := range d.sets {
		s, ok := ts.sets[name]
		if !ok {
			return "set " + name + " missing"
		}
		if !s.ok {
			return "set " + name + " has the wrong type or flags"
		}
	}
	for _, dc := range d.chains {
		c, ok := ts.chains[dc.spec.name]
		if !ok {
			return "chain " + dc.spec.name + " missing"
		}
		if !c.base || c.spec != dc.spec {
			return "chain " + dc.spec.name + " has the wrong type, hook, priority or policy"
		}
		want := make([]string, len(dc.rules))
		for i, r := range dc.rules {
			want[i] = r.tag()
		}
		if !slices.Equal(c.tags, want) {
			return "rules of chain " + dc.spec.name + " differ"
		}
	}
	return ""
}

// stateOf is the state d renders into, for the cache.
func stateOf(d *desired) *kernelState {
	st := &kernelState{tables: map[*family]*tableState{}}
	for _, dt := range d.tables {
		ts := &tableState{chains: map[string]chainState{}, sets: map[string]setState{}}
		for _, dc := range dt.chains {
			cs := chainState{spec: dc.spec, base: true}
			for _, r := range dc.rules {
				cs.tags = append(cs.tags, r.tag())
			}
			ts.chains[dc.spec.name] = cs
		}
		for name, ivs := range dt.sets {
			ts.sets[name] = setState{ok: true, intervals: ivs}
		}
		st.tables[dt.fam] = ts
	}
	return st
}

// diffIntervals returns the intervals to delete from have and to add to it
// to get want; both inputs are sorted.
func diffIntervals(have, want []ival) (del, add []ival) {
	i, j := 0, 0
	for i < len(have) || j < len(want) {
		if i < len(have) && j < len(want) && have[i] == want[j] {
			// The common case by far: one comparison of plain memory.
			i++
			j++
			continue
		}
		switch {
		case j == len(want) || (i < len(have) && compareIval(have[i], want[j]) < 0):
			del = append(del, have[i])
			i++
		case i == len(have) || compareIval(want[j], have[i]) < 0:
			add = append(add, want[j])
			j++
		default:
			i++
			j++
		}
	}
	return del, add
}
