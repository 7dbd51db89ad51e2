package nftbackend

import (
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// batch queues one netlink transaction on a Conn and counts the messages it
// queues, the way google/nftables splits them (it does not expose its
// queue): one per table, chain, set and rule operation, and one per ~64 KiB
// of set elements.
type batch struct {
	cc       *nftables.Conn
	table    *nftables.Table
	named    map[string]*nftables.Set // sets created in this batch
	messages int
}

func newBatch(cc *nftables.Conn, table *nftables.Table) *batch {
	return &batch{cc: cc, table: table, named: map[string]*nftables.Set{}}
}

// use makes the next operations act on table (one transaction may write
// both of weft's tables). Set names are per table.
func (b *batch) use(table *nftables.Table) {
	b.table = table
	b.named = map[string]*nftables.Set{}
}

func (b *batch) addTable() {
	b.cc.AddTable(b.table)
	b.messages++
}

func (b *batch) delTable() {
	b.cc.DelTable(b.table)
	b.messages++
}

func (b *batch) addChain(s chainSpec) *nftables.Chain {
	hook, prio, policy := s.hook, s.priority, s.policy
	c := b.cc.AddChain(&nftables.Chain{
		Name: s.name, Table: b.table, Type: s.typ,
		Hooknum: &hook, Priority: &prio, Policy: &policy,
	})
	b.messages++
	return c
}

func (b *batch) addRule(c *nftables.Chain, r desiredRule) {
	b.cc.AddRule(&nftables.Rule{
		Table: b.table, Chain: c,
		Exprs:    r.build(b),
		UserData: ruleUserData(r.tag()),
	})
	b.messages++
}

func (b *batch) addSet(s *nftables.Set, elems []nftables.SetElement) error {
	if err := b.cc.AddSet(s, elems); err != nil {
		return err
	}
	if !s.Anonymous {
		b.named[s.Name] = s
	}
	b.messages += 1 + elementMessages(elems)
	return nil
}

func (b *batch) addElements(s *nftables.Set, elems []nftables.SetElement) error {
	if len(elems) == 0 {
		return nil
	}
	if err := b.cc.SetAddElements(s, elems); err != nil {
		return err
	}
	b.messages += elementMessages(elems)
	return nil
}

func (b *batch) delElements(s *nftables.Set, elems []nftables.SetElement) error {
	if len(elems) == 0 {
		return nil
	}
	if err := b.cc.SetDeleteElements(s, elems); err != nil {
		return err
	}
	b.messages += elementMessages(elems)
	return nil
}

// lookupAddr matches the address at offset of the network header (the
// family's saddr or daddr) against a named set.
func (b *batch) lookupAddr(offset uint32, set string, invert bool) []expr.Any {
	n := uint32(4)
	if b.table.Family == nftables.TableFamilyIPv6 {
		n = 16
	}
	l := &expr.Lookup{SourceRegister: 1, SetName: set, Invert: invert}
	if s, ok := b.named[set]; ok {
		l.SetID = s.ID
	}
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: n},
		l,
	}
}

// matchPorts matches the port already in register 1.
func (b *batch) matchPorts(ports []uint16) []expr.Any {
	if len(ports) == 1 {
		return []expr.Any{&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: portKey(ports[0])}}
	}
	elems := make([]nftables.SetElement, len(ports))
	for i, p := range ports {
		elems[i] = nftables.SetElement{Key: portKey(p)}
	}
	return []expr.Any{b.anonLookup(nftables.TypeInetService, elems)}
}

func (b *batch) anonLookup(t nftables.SetDatatype, elems []nftables.SetElement) *expr.Lookup {
	s := &nftables.Set{Table: b.table, Anonymous: true, Constant: true, KeyType: t}
	// AddSet only fails on a marshalling error, which the Conn also
	// records and returns from Flush.
	_ = b.addSet(s, elems)
	return &expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID}
}

func portKey(p uint16) []byte { return []byte{byte(p >> 8), byte(p)} }

// maxElemBatch mirrors google/nftables' split of element lists.
const maxElemBatch = 1<<16 - 1 - 1024

func elementMessages(elems []nftables.SetElement) int {
	if len(elems) == 0 {
		return 0
	}
	n, size := 1, 0
	for _, e := range elems {
		item := unix.NLA_HDRLEN + unix.NLA_HDRLEN + unix.NLA_HDRLEN + align4(len(e.Key))
		if e.IntervalEnd {
			item += unix.NLA_HDRLEN + 4
		}
		if size+item > maxElemBatch {
			n++
			size = 0
		}
		size += item
	}
	return n
}

func align4(n int) int { return (n + 3) &^ 3 }
