package iptbackend

import (
	"regexp"
	"sort"
	"strings"
)

// dump is what an iptables-save run shows.
type dump struct {
	tables map[string]*table
	// incompatible lists the tables iptables could not parse (native nft
	// expressions written by another tool).
	incompatible []string
}

type table struct {
	chains   map[string]bool   // every declared chain
	policies map[string]string // built-in chain → policy
	rules    map[string][]string
}

func newTable() *table {
	return &table{chains: map[string]bool{}, policies: map[string]string{}, rules: map[string][]string{}}
}

// iptables-nft-save prints this instead of a table it cannot parse.
var incompatibleRe = regexp.MustCompile("Table `([^']+)' is incompatible")

// parseSave reads iptables-save output. A rule is kept as the text after
// "-A CHAIN ", which is iptables' canonical form of the rule spec.
func parseSave(out string) dump {
	d := dump{tables: map[string]*table{}}
	var cur *table
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimRight(line, "\r")
		switch {
		case strings.HasPrefix(line, "#"):
			if m := incompatibleRe.FindStringSubmatch(line); m != nil {
				d.incompatible = append(d.incompatible, m[1])
			}
		case strings.HasPrefix(line, "*"):
			cur = newTable()
			d.tables[strings.TrimSpace(line[1:])] = cur
		case cur == nil:
		case strings.HasPrefix(line, ":"):
			f := strings.Fields(line[1:])
			if len(f) == 0 {
				continue
			}
			cur.chains[f[0]] = true
			if len(f) > 1 && f[1] != "-" {
				cur.policies[f[0]] = f[1]
			}
		case strings.HasPrefix(line, "-A "):
			rest := line[3:]
			chain, spec, _ := strings.Cut(rest, " ")
			cur.rules[chain] = append(cur.rules[chain], spec)
		case line == "COMMIT":
			cur = nil
		}
	}
	sort.Strings(d.incompatible)
	return d
}

func (d dump) isIncompatible(t string) bool {
	for _, x := range d.incompatible {
		if x == t {
			return true
		}
	}
	return false
}

// target returns the chain a rule jumps or goes to, "" if none.
func target(spec string) string {
	f := strings.Fields(spec)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "-j" || f[i] == "-g" || f[i] == "--jump" || f[i] == "--goto" {
			return f[i+1]
		}
	}
	return ""
}

// countRules counts rule lines the way iptables-wrapper does (lines
// starting with "-").
func countRules(out string) int {
	n := 0
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "-") {
			n++
		}
	}
	return n
}
