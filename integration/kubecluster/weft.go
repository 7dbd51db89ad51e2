package kubecluster

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/weft-net/weft/pkg/netnstest"
	"github.com/weft-net/weft/pkg/state"
)

// Attachment is what weftd's state file records for one pod interface (the
// fields the tests look at).
type Attachment struct {
	ContainerID  string `json:"containerID"`
	IfName       string `json:"ifName"`
	Netns        string `json:"netns"`
	PodNamespace string `json:"podNamespace"`
	PodName      string `json:"podName"`
}

// Attachments reads the attachments weftd has recorded on the node, from
// its state directory /run/weft (the snapshot and the journal after it,
// read as the next weftd would, without changing them). No state: none.
func (n *Node) Attachments() ([]Attachment, error) {
	c, err := state.Read(n.RunWeft)
	if err != nil {
		return nil, fmt.Errorf("node %s: weftd state: %w", n.Name, err)
	}
	out := make([]Attachment, 0, len(c.Attachments))
	for _, a := range c.Attachments {
		out = append(out, Attachment{ContainerID: a.ContainerID, IfName: a.IfName, Netns: a.Netns, PodNamespace: a.PodNamespace, PodName: a.PodName})
	}
	return out, nil
}

// PodNS opens the network namespace of the pod namespace/name on the node,
// found through weftd's record of its attachment (the netns path containerd
// gave the CNI chain, inside the node's mount namespace, hence read through
// /proc/<pid>/root of a process there). In-process probes (harness
// ServeTCPEcho, ProbeTCP) run in it. The handle is closed at env.Close.
func (n *Node) PodNS(namespace, name string) (*netnstest.NS, error) {
	as, err := n.Attachments()
	if err != nil {
		return nil, err
	}
	for _, a := range as {
		if a.PodNamespace != namespace || a.PodName != name || a.Netns == "" {
			continue
		}
		path := fmt.Sprintf("/proc/%d/root%s", n.holder.PID(), a.Netns)
		h, err := ns.GetNS(path)
		if err != nil {
			return nil, fmt.Errorf("node %s: pod %s/%s netns: %w", n.Name, namespace, name, err)
		}
		n.Cluster.env.Defer("netns handle of pod "+name, func() error { _ = h.Close(); return nil })
		return &netnstest.NS{Name: "pod " + namespace + "/" + name, Path: path, NetNS: h}, nil
	}
	return nil, fmt.Errorf("node %s: no weft attachment of pod %s/%s", n.Name, namespace, name)
}

// ConflistPlugins returns the plugin types of the node's primary conflist,
// in chain order.
func (n *Node) ConflistPlugins() ([]string, error) {
	b, err := os.ReadFile(n.ConflistPath())
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", n.Name, err)
	}
	var cl struct {
		Plugins []struct {
			Type string `json:"type"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(b, &cl); err != nil {
		return nil, fmt.Errorf("node %s: conflist: %w", n.Name, err)
	}
	var types []string
	for _, p := range cl.Plugins {
		types = append(types, p.Type)
	}
	return types, nil
}

// WeftLeftovers lists what of weft is still on the node: a conflist entry,
// the plugin binary, its devices, routes in its table, its rule, its nft
// table. Empty after a clean uninstall.
func (n *Node) WeftLeftovers() ([]string, error) {
	var left []string
	types, err := n.ConflistPlugins()
	if err != nil {
		return nil, err
	}
	for _, t := range types {
		if t == "weft" {
			left = append(left, "conflist entry weft in "+n.ConflistPath())
		}
	}
	if _, err := os.Stat(filepath.Join(n.CNIBin, "weft")); err == nil {
		left = append(left, "plugin binary "+CNIBinDir+"/weft")
	}
	checks := []struct {
		what string
		argv []string
		bad  func(string) bool
	}{
		{"device", []string{"ip", "-o", "link", "show"}, func(s string) bool { return strings.Contains(s, "vx-weft") }},
		{"route in table 240", []string{"ip", "-o", "route", "show", "table", "240"}, func(s string) bool { return strings.TrimSpace(s) != "" }},
		{"rule", []string{"ip", "-o", "rule", "show"}, func(s string) bool { return strings.Contains(s, "lookup 240") }},
		{"nft table", []string{"nft", "list", "tables"}, func(s string) bool { return strings.Contains(s, "table ip weft") }},
	}
	for _, c := range checks {
		out, err := n.NS.Exec(c.argv[0], c.argv[1:]...)
		if err != nil && !strings.Contains(out, "FIB table does not exist") {
			return nil, err
		}
		if c.bad(out) && !strings.Contains(out, "FIB table does not exist") {
			left = append(left, c.what+": "+strings.TrimSpace(out))
		}
	}
	return left, nil
}

// WaitWeftInChain waits until every node's conflist ends with weft (the
// install-cni init containers are done): pods created from then on get weft
// in their CNI chain.
func (c *Cluster) WaitWeftInChain(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		missing := []string{}
		for _, n := range c.Nodes {
			types, err := n.ConflistPlugins()
			if err != nil || len(types) == 0 || types[len(types)-1] != "weft" {
				missing = append(missing, fmt.Sprintf("%s %v", n.Name, types))
			}
		}
		if len(missing) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("weft not last in the conflist of %v: %w\n%s", missing, ctx.Err(), c.Describe(ctx, "weft-system"))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// RolloutStatus waits for `kubectl rollout status`.
func (c *Cluster) RolloutStatus(ctx context.Context, ns, obj string, timeout time.Duration) error {
	_, err := c.Kubectl(ctx, "--namespace="+ns, "rollout", "status", obj, "--timeout="+timeout.String())
	if err != nil {
		return fmt.Errorf("%w\n%s", err, c.Describe(ctx, ns))
	}
	return nil
}

// Describe is what a person would look at when a rollout hangs: the pods of
// ns, their events, and the kubelet log tails.
func (c *Cluster) Describe(ctx context.Context, ns string) string {
	var b strings.Builder
	out, _ := c.Kubectl(ctx, "get", "pods", "-A", "-o", "wide")
	b.WriteString(out)
	out, _ = c.Kubectl(ctx, "--namespace="+ns, "get", "events", "--sort-by=.lastTimestamp")
	if len(out) > 4000 {
		out = out[len(out)-4000:]
	}
	b.WriteString(out)
	for _, n := range c.Nodes {
		fmt.Fprintf(&b, "--- kubelet %s\n%s", n.Name, tailN(filepath.Join(n.logDir, "kubelet.log"), 1500))
	}
	return b.String()
}

func tailN(path string, n int) string {
	b, _ := os.ReadFile(path)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
