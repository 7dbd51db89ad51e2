package nftbackend

import (
	"fmt"
	"slices"
	"strings"

	"github.com/google/nftables"

	"github.com/weft-net/weft/pkg/cidrset"
)

// kernelState is what weft's table holds, as far as Apply cares.
type kernelState struct {
	tableExists bool
	chains      map[string]chainState
	sets        map[string]setState
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
	ok        bool // ipv4_addr, interval, nothing else
	intervals []cidrset.Interval
}

func weftTable() *nftables.Table {
	return &nftables.Table{Name: TableName, Family: nftables.TableFamilyIPv4}
}

// readState lists weft's table: its chains, their rules' tags and the
// named sets with their elements.
func readState(cc *nftables.Conn) (*kernelState, error) {
	st := &kernelState{chains: map[string]chainState{}, sets: map[string]setState{}}
	tables, err := cc.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return nil, fmt.Errorf("list ip tables: %w", err)
	}
	for _, t := range tables {
		if t.Name == TableName {
			st.tableExists = true
		}
	}
	if !st.tableExists {
		return st, nil
	}
	table := weftTable()
	chains, err := cc.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return nil, fmt.Errorf("list ip chains: %w", err)
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
			st.unreadable = fmt.Sprintf("rules of chain %s: %v", c.Name, err)
			continue
		}
		for _, r := range rules {
			cs.tags = append(cs.tags, ruleTag(r))
		}
		st.chains[c.Name] = cs
	}
	sets, err := cc.GetSets(table)
	if err != nil {
		return nil, fmt.Errorf("list sets of table ip %s: %w", TableName, err)
	}
	for _, s := range sets {
		if s.Anonymous || strings.HasPrefix(s.Name, "__") {
			continue
		}
		ss := setState{ok: s.KeyType.Name == nftables.TypeIPAddr.Name && s.Interval &&
			!s.IsMap && !s.HasTimeout && !s.Constant && !s.Concatenation && !s.Dynamic}
		elems, err := cc.GetSetElements(s)
		if err != nil {
			return nil, fmt.Errorf("list elements of set %s: %w", s.Name, err)
		}
		ss.intervals = elementsIntervals(elems)
		st.sets[s.Name] = ss
	}
	return st, nil
}

// mismatch says why the table's structure differs from d (empty: it does
// not; only set elements may differ).
func (st *kernelState) mismatch(d *desired) string {
	switch {
	case !st.tableExists:
		return "table missing"
	case st.unreadable != "":
		return "unreadable " + st.unreadable
	case len(st.sets) != len(d.sets):
		return fmt.Sprintf("%d sets, want %d", len(st.sets), len(d.sets))
	case len(st.chains) != len(d.chains):
		return fmt.Sprintf("%d chains, want %d", len(st.chains), len(d.chains))
	}
	for name := range d.sets {
		s, ok := st.sets[name]
		if !ok {
			return "set " + name + " missing"
		}
		if !s.ok {
			return "set " + name + " has the wrong type or flags"
		}
	}
	for _, dc := range d.chains {
		c, ok := st.chains[dc.spec.name]
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
	st := &kernelState{tableExists: true, chains: map[string]chainState{}, sets: map[string]setState{}}
	for _, dc := range d.chains {
		cs := chainState{spec: dc.spec, base: true}
		for _, r := range dc.rules {
			cs.tags = append(cs.tags, r.tag())
		}
		st.chains[dc.spec.name] = cs
	}
	for name, ivs := range d.sets {
		st.sets[name] = setState{ok: true, intervals: ivs}
	}
	return st
}

// diffIntervals returns the intervals to delete from have and to add to it
// to get want; both inputs are sorted.
func diffIntervals(have, want []cidrset.Interval) (del, add []cidrset.Interval) {
	i, j := 0, 0
	for i < len(have) || j < len(want) {
		switch {
		case j == len(want) || (i < len(have) && less(have[i], want[j])):
			del = append(del, have[i])
			i++
		case i == len(have) || less(want[j], have[i]):
			add = append(add, want[j])
			j++
		default:
			i++
			j++
		}
	}
	return del, add
}

func less(a, b cidrset.Interval) bool {
	if a.Start != b.Start {
		return a.Start < b.Start
	}
	return a.End < b.End
}
