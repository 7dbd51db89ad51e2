package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Problem is one thing wrong with the configuration file, said so that an
// operator can fix it without reading weft's source: the field (its path
// in the file, or "line N" for a syntax error, or "--config" for a file
// that cannot be read), the value found there, what is wrong with it, and
// what to write instead.
type Problem struct {
	Field  string `json:"field"`
	Value  string `json:"value"`
	Reason string `json:"reason"`
	Fix    string `json:"fix"`
}

// NotSet is the Value of a field the file does not set.
const NotSet = "(not set)"

var (
	yamlLine    = regexp.MustCompile(`line (\d+)`)
	pathElement = regexp.MustCompile(`([^.\[\]]+)|\[(\d+)\]`)
	pathIndex   = regexp.MustCompile(`\[\d+\]`)
)

// Explain turns an error of LoadWith, LoadStartup or a Watcher into
// problems, in the order found. Errors of other kinds give one problem
// with the error as its reason.
func Explain(err error) []Problem {
	if err == nil {
		return nil
	}
	var fe *FileError
	if !errors.As(err, &fe) {
		return []Problem{{Reason: err.Error(), Fix: "see weftd logs"}}
	}
	if fe.Read {
		return []Problem{{Field: "--config", Value: fe.Path, Reason: fe.Err.Error(),
			Fix: fmt.Sprintf("create %s, or point weftd run --config at the file (in Kubernetes: the ConfigMap weft-config, key weft.yaml, mounted at its directory)", fe.Path)}}
	}
	var ve *ValidationError
	if errors.As(fe.Err, &ve) {
		doc, _ := genericDoc(fe.Data)
		out := make([]Problem, 0, len(ve.Errors))
		for _, e := range ve.Errors {
			out = append(out, Problem{Field: e.Path, Value: valueAt(doc, e.Path), Reason: e.Reason, Fix: fixFor(e.Path, e.Reason, fe.Path)})
		}
		return out
	}
	msg := fe.Err.Error()
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		n, _ := strconv.Atoi(m[1])
		return []Problem{{Field: "line " + m[1], Value: lineOf(fe.Data, n), Reason: msg,
			Fix: fmt.Sprintf("correct the YAML syntax at line %d of %s (indentation, a missing ':' or space after it, an unclosed [ or {, a tab used for indentation)", n, fe.Path)}}
	}
	return []Problem{{Field: "(file)", Value: firstLine(fe.Data), Reason: msg,
		Fix: fmt.Sprintf("write a YAML or JSON mapping into %s, with the keys of the schema in README (Configuration)", fe.Path)}}
}

// valueAt returns the JSON form of the value at path in doc, or NotSet.
func valueAt(doc map[string]any, path string) string {
	var cur any = doc
	for _, m := range pathElement.FindAllStringSubmatch(path, -1) {
		switch {
		case m[1] != "":
			obj, ok := cur.(map[string]any)
			if !ok {
				return NotSet
			}
			if cur, ok = obj[m[1]]; !ok {
				return NotSet
			}
		default:
			i, _ := strconv.Atoi(m[2])
			l, ok := cur.([]any)
			if !ok || i >= len(l) {
				return NotSet
			}
			cur = l[i]
		}
	}
	if cur == nil {
		return NotSet
	}
	b, err := json.Marshal(cur)
	if err != nil {
		return NotSet
	}
	const max = 120
	if len(b) > max {
		return string(b[:max]) + "…"
	}
	return string(b)
}

// wants says, per field (list indices written []), what a valid value is.
var wants = map[string]string{
	"nodeName":                  "this node's name as listed in cluster.nodes (default: $NODE_NAME, then the hostname)",
	"nodeIP":                    "an IPv4 unicast address of this node, e.g. 192.168.10.12 (or remove it: taken from cluster.nodes, else the default-route interface)",
	"nodeIP6":                   "an IPv6 global or ULA address of this node (or remove it: taken from cluster.nodes[].ip6)",
	"cluster":                   "a mapping with id, podCIDRs, serviceCIDRs, gateway and nodes",
	"cluster.id":                "this cluster's id, e.g. c1, different from every remotes[].id",
	"cluster.podCIDRs":          "a list of this cluster's pod CIDRs, e.g. [10.1.0.0/16]",
	"cluster.podCIDRs[]":        cidrWant,
	"cluster.serviceCIDRs":      "a list of this cluster's service CIDRs, e.g. [10.101.0.0/16]",
	"cluster.serviceCIDRs[]":    cidrWant,
	"cluster.gateway":           "the name of the active gateway, one of cluster.nodes[].name",
	"cluster.nodes":             "a list of {name, ip}, one entry per node of this cluster",
	"cluster.nodes[]":           "a mapping {name: NODE, ip: UNDERLAY-IPv4, ip6: UNDERLAY-IPv6}, at least one of ip and ip6",
	"cluster.nodes[].name":      "the node's name, used once in the list",
	"cluster.nodes[].ip":        "the node's IPv4 underlay address, used once in the list",
	"cluster.nodes[].ip6":       "the node's IPv6 address (global or ULA), used once in the list; every node needs one if any node has no ip",
	"remotes":                   "a list of remote clusters {id, podCIDRs, serviceCIDRs, gatewayIP}",
	"remotes[]":                 "a mapping {id, podCIDRs, serviceCIDRs, gatewayIP}",
	"remotes[].id":              "the remote cluster's id, used once and different from cluster.id",
	"remotes[].podCIDRs":        "a list of the remote cluster's pod CIDRs, e.g. [10.2.0.0/16]",
	"remotes[].podCIDRs[]":      cidrWant,
	"remotes[].serviceCIDRs":    "a list of the remote cluster's service CIDRs",
	"remotes[].serviceCIDRs[]":  cidrWant,
	"remotes[].gatewayIP":       "the remote gateway's underlay address (required with cable: vxlan), IPv4 or IPv6, every remote's of the same family",
	"cable":                     "vxlan or none",
	"cniInterface":              `an interface name (at most 15 characters, no '/', ':' or spaces), or "" to discover it`,
	"vxlan.name":                "an interface name of at most 15 characters, different from cableVxlan.name (default vx-weft)",
	"vxlan.vni":                 "a VNI in 1..16777215 different from cableVxlan.vni (default 100)",
	"vxlan.port":                "a UDP port in 1..65535 different from cableVxlan.port (default 4800)",
	"vxlan.vtepCIDR":            "an IPv4 CIDR of /30 or shorter overlapping no pod or service CIDR (default 240.0.0.0/8)",
	"vxlan.vtepCIDR6":           "an IPv6 CIDR of /96../126 overlapping no other CIDR (default fd57:6566:7400::/96)",
	"vxlan.mtu":                 "0 (= underlay MTU − 50, − 70 over IPv6) or 68..65535",
	"cableVxlan.name":           "an interface name of at most 15 characters, different from vxlan.name (default vx-weft-cable)",
	"cableVxlan.vni":            "a VNI in 1..16777215 different from vxlan.vni (default 101)",
	"cableVxlan.port":           "a UDP port in 1..65535 different from vxlan.port (default 4801)",
	"cableVxlan.vtepCIDR":       "an IPv4 CIDR of /30 or shorter overlapping no other CIDR (default 241.0.0.0/8)",
	"cableVxlan.vtepCIDR6":      "an IPv6 CIDR of /96../126 overlapping no other CIDR (default fd57:6566:7400:1::/96)",
	"cableVxlan.mtu":            "0 (= underlay MTU − 50, − 70 over IPv6) or 68..65535",
	"packetFilter":              "auto, nftables or iptables",
	"iptablesMode":              `"" (detect), legacy or nft`,
	"mss.mode":                  "pmtu or fixed",
	"mss.value":                 "536..65495 with mode: fixed; 0 (or remove it) with mode: pmtu",
	"routeTable":                "a routing table number in 1..4294967295 other than 253, 254 and 255 (default 240)",
	"rulePriority":              "an ip rule priority in 1..32765 (default 240)",
	"socket":                    "an absolute path (default /run/weft/weft.sock; the plugin's conflist entry must name the same)",
	"spoolDir":                  "an absolute path (default /run/weft/spool; the plugin's conflist entry must name the same)",
	"stateDir":                  "an absolute path (default /run/weft)",
	"metricsAddress":            `host:port, e.g. 127.0.0.1:9469, or "" to disable /metrics, /healthz and /readyz`,
	"resyncInterval":            `a duration of at least 1s, e.g. "30s"`,
	"remotes[].healthCheckIP":   "the remote gateway's CNI interface address, IPv4 or IPv6, inside that remote's CIDRs of its family (the whole-path probe's target), or remove it",
	"remotes[].healthCheckIP6":  "a dual-stack remote gateway's CNI interface IPv6 address (its IPv4 one in healthCheckIP), inside that remote's IPv6 CIDRs, or remove it",
	"healthCheck.enabled":       "true or false (default true)",
	"healthCheck.protocol":      "icmp (default: echo requests the targets' kernels answer) or udp (weft's probes, answered by weftd on healthCheck.port)",
	"healthCheck.port":          "a UDP port in 1..65535 different from vxlan.port and cableVxlan.port (default 4803; used with protocol: udp)",
	"healthCheck.interval":      `a duration in 10ms..1m, e.g. "400ms" (default)`,
	"healthCheck.fastInterval":  `a duration from 10ms up to healthCheck.interval, e.g. "50ms" (default): the retry pace after a first miss`,
	"healthCheck.lossThreshold": "1..100 probes in a row unanswered before a target is down (default 3)",
}

const cidrWant = "an IPv4 or IPv6 CIDR with its host bits zero, e.g. 10.2.0.0/16 or fd00:2::/56; it must not overlap another cluster's CIDRs (the route would be ambiguous)"

// fixFor says what to do about one field error.
func fixFor(path, reason, file string) string {
	if reason == "unknown field" {
		fix := fmt.Sprintf("remove %s from %s, or correct its spelling", path, file)
		if keys := knownKeys(path); len(keys) > 0 {
			fix += " (known keys here: " + strings.Join(keys, ", ") + ")"
		}
		return fix
	}
	if strings.HasSuffix(reason, ipv6NotReady) {
		// Rewriting an IPv6 value as IPv4 is not what the operator wants.
		return fmt.Sprintf("remove %s from %s until weft carries IPv6; the cluster's IPv6 traffic meanwhile goes where the primary CNI sends it, without weft", path, file)
	}
	if want, ok := wants[pathIndex.ReplaceAllString(path, "[]")]; ok {
		return fmt.Sprintf("set %s in %s to %s", path, file, want)
	}
	return fmt.Sprintf("correct %s in %s (schema: README, Configuration)", path, file)
}

// knownKeys lists the keys Config accepts next to the last element of path.
func knownKeys(path string) []string {
	t := reflect.TypeOf(Config{})
	elems := pathElement.FindAllStringSubmatch(path, -1)
	for _, m := range elems[:max(len(elems)-1, 0)] {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
			t = t.Elem()
		}
		if m[1] == "" {
			continue
		}
		if t.Kind() != reflect.Struct {
			return nil
		}
		f, ok := jsonFields(t)[m[1]]
		if !ok {
			return nil
		}
		t = f.Type
	}
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || t == durationType {
		return nil
	}
	var keys []string
	for k := range jsonFields(t) {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func lineOf(data []byte, n int) string {
	lines := strings.Split(string(data), "\n")
	if n < 1 || n > len(lines) {
		return ""
	}
	return strings.TrimRight(lines[n-1], "\r")
}

func firstLine(data []byte) string {
	s, _, _ := strings.Cut(strings.TrimSpace(string(data)), "\n")
	if len(s) > 80 {
		s = s[:80] + "…"
	}
	return s
}
