// Package healthpublish writes the node's data-path health into the
// cluster: with kubernetes.endpoints: submariner the node's Submariner
// RouteAgent (so that Submariner's operator and subctl see weft's nodes as
// they see its own route agents), with endpoints: weft the node's NodePath,
// weft's own kind. The prober hands every snapshot to Publish, which never
// blocks; Run writes the latest one when it differs from the last written
// in more than RTT figures (a target up or down, a remote appearing or
// leaving), and otherwise refreshes it once per Interval, as Submariner's
// route agent does every 60 s. A token bucket (Burst writes, one more per
// Interval) bounds a flapping node to the same once-a-minute average, so
// 5,000 nodes never cost more than 5,000/60 ≈ 83 writes/s, and ~0 in steady
// state beyond the refresh. With the API server away, the latest snapshot
// is kept and written with backoff once it answers.
package healthpublish

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"

	"github.com/weft-net/weft/pkg/kubesource"
	"github.com/weft-net/weft/pkg/pathhealth"
)

// Kind is what is written.
type Kind string

// Kinds.
const (
	KindRouteAgent Kind = "RouteAgent" // endpoints: submariner
	KindNodePath   Kind = "NodePath"   // endpoints: weft
)

// Defaults.
const (
	// DefaultInterval is Submariner's RouteAgentUpdateInterval.
	DefaultInterval = 60 * time.Second
	// DefaultBurst changes are written at once before the bucket makes a
	// flapping node wait: enough for a start-up's convergence (the
	// gateway, the remotes appearing, their first answers).
	DefaultBurst = 10
	// requestTimeout bounds one API request.
	requestTimeout = 10 * time.Second
)

// UpdateTimestampAnnotation is the annotation Submariner's route agent
// sets on every RouteAgent write (Unix seconds), which its tooling reads
// as the object's freshness.
const UpdateTimestampAnnotation = "update-timestamp"

// Observer counts writes (metrics.Metrics implements it).
type Observer interface {
	PathReportWrite(kind, result string)
}

// Options configure a Publisher.
type Options struct {
	Kind Kind
	// Rest is the API client configuration; nil = kubesource.RestConfig
	// (Kubeconfig), retried by Run until it loads.
	Rest       *rest.Config
	Kubeconfig string
	Namespace  string
	Node       string
	// Version goes into RouteAgent status.version.
	Version string
	// Endpoints looks up remote Endpoint specs (KindRouteAgent).
	Endpoints EndpointLookup
	Interval  time.Duration
	Burst     int
	Observer  Observer
	Log       *slog.Logger
	Now       func() time.Time
}

// Stats are the publisher's counters.
type Stats struct {
	Writes, Errors uint64
	LastWrite      time.Time
	LastError      string
}

// Publisher writes one node's health object.
type Publisher struct {
	o         Options
	kick      chan struct{}
	newTarget func(*rest.Config) (target, error)

	mu     sync.Mutex
	latest *pathhealth.Snapshot
	stats  Stats
}

// New checks o and prepares the publisher; Run does the writing.
func New(o Options) (*Publisher, error) {
	if o.Kind != KindRouteAgent && o.Kind != KindNodePath {
		return nil, fmt.Errorf("health publisher: kind %q is not %s or %s", o.Kind, KindRouteAgent, KindNodePath)
	}
	if o.Node == "" || o.Namespace == "" {
		return nil, fmt.Errorf("health publisher: node %q and namespace %q must both be set", o.Node, o.Namespace)
	}
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.Burst <= 0 {
		o.Burst = DefaultBurst
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	p := &Publisher{o: o, kick: make(chan struct{}, 1)}
	p.newTarget = p.target
	return p, nil
}

// Publish hands over a snapshot; it never blocks: the latest one wins.
func (p *Publisher) Publish(s pathhealth.Snapshot) {
	if s.At.IsZero() {
		s.At = p.o.Now()
	}
	p.mu.Lock()
	p.latest = &s
	p.mu.Unlock()
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// Stats returns the counters.
func (p *Publisher) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}

// target is the kind-specific half: what a snapshot becomes, what of it
// counts as a change, and how it is stored.
type target interface {
	prepare(s pathhealth.Snapshot) (shape any)
	write(ctx context.Context, at time.Time) (string, error)
	written() // the prepared state was stored
}

// Run writes until ctx ends.
func (p *Publisher) Run(ctx context.Context) {
	t := p.connect(ctx)
	if t == nil {
		return
	}
	var (
		lastShape any
		lastWrite time.Time
		fails     int
		deferred  bool // a change waits for the bucket (logged once)
		backoffN  int  // failures of the current kind in a row
		refusing  bool // the current failures are misconfigured ones
		retryAt   time.Time
		bucket    = newBucket(p.o.Burst, p.o.Interval, p.o.Now())
		timer     = time.NewTimer(time.Hour)
	)
	defer timer.Stop()
	for {
		p.mu.Lock()
		snap := p.latest
		p.mu.Unlock()
		wait := time.Hour
		if snap != nil {
			now := p.o.Now()
			shape := t.prepare(*snap)
			changed := lastWrite.IsZero() || !reflect.DeepEqual(shape, lastShape)
			refreshAt := lastWrite.Add(p.o.Interval)
			switch {
			case !changed && now.Before(refreshAt):
				wait = refreshAt.Sub(now)
			case now.Before(retryAt):
				wait = retryAt.Sub(now)
			case !bucket.take(now):
				wait = bucket.next(now)
				if !deferred {
					deferred = true
					p.o.Log.Info("path health changes faster than its write budget; the latest is written when the budget allows",
						"kind", p.o.Kind, "burst", p.o.Burst, "per", p.o.Interval, "in", wait.Round(time.Second))
				}
			default:
				wctx, cancel := context.WithTimeout(ctx, requestTimeout)
				res, err := t.write(wctx, now)
				cancel()
				p.record(res, err, now, fails)
				if err != nil {
					bucket.refund()
					fails++
					// A new kind of failure (the API server back but
					// refusing) starts its own backoff.
					if m := misconfigured(err); m != refusing {
						refusing, backoffN = m, 0
					}
					backoffN++
					retryAt = now.Add(retryDelay(err, backoffN, p.o.Interval))
					wait = retryAt.Sub(now)
					break
				}
				t.written()
				fails, backoffN, retryAt, lastShape, lastWrite, deferred = 0, 0, time.Time{}, shape, now, false
				wait = p.o.Interval
			}
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-p.kick:
		case <-timer.C:
		}
	}
}

// connect builds the client, retrying a configuration that does not load
// yet; nil when ctx ended first.
func (p *Publisher) connect(ctx context.Context) target {
	for {
		rc, err := p.o.Rest, error(nil)
		if rc == nil {
			rc, err = kubesource.RestConfig(p.o.Kubeconfig)
		}
		var t target
		if err == nil {
			t, err = p.newTarget(rc)
		}
		if err == nil {
			return t
		}
		p.record(ResultError, err, p.o.Now(), 0)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(5 * time.Second):
		}
	}
}

func (p *Publisher) target(rc *rest.Config) (target, error) {
	if p.o.Kind == KindRouteAgent {
		c, err := kubesource.JSONClient(rc, kubesource.SubmarinerGroupVersion, AddRouteAgentTypes)
		if err != nil {
			return nil, err
		}
		t := &routeAgentTarget{p: p, w: writer[RouteAgent, *RouteAgent]{client: c, resource: "routeagents", namespace: p.o.Namespace, name: p.o.Node, owner: p.nodeOwner(c), log: p.o.Log}}
		t.w.yield = t.foreign
		return t, nil
	}
	c, err := kubesource.JSONClient(rc, kubesource.WeftGroupVersion, AddNodePathTypes)
	if err != nil {
		return nil, err
	}
	return &nodePathTarget{w: writer[NodePath, *NodePath]{client: c, resource: "nodepaths", namespace: p.o.Namespace, name: p.o.Node, statusSub: true, owner: p.nodeOwner(c), log: p.o.Log}}, nil
}

// nodeOwner looks up the node's Node object (one GET; the ClusterRole
// grants get on nodes for the topology source) and returns the owner
// reference to it. A failure is logged when it changes and leaves the
// object without an owner until a later write succeeds.
func (p *Publisher) nodeOwner(c *rest.RESTClient) func(context.Context) (metav1.OwnerReference, bool) {
	var lastErr string
	return func(ctx context.Context) (metav1.OwnerReference, bool) {
		ref, err := lookupNode(ctx, c, p.o.Node)
		msg := ""
		if err != nil {
			msg = err.Error()
		}
		if msg != lastErr {
			if err != nil {
				p.o.Log.Warn("health object written without an owner: it stays if the Node is deleted", "err", err)
			} else if lastErr != "" {
				p.o.Log.Info("health object owned by its Node again")
			}
			lastErr = msg
		}
		return ref, err == nil
	}
}

// lookupNode reads the Node's UID. The client is the health kind's (its
// scheme knows no core types), so the answer is decoded by hand.
func lookupNode(ctx context.Context, c *rest.RESTClient, name string) (metav1.OwnerReference, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	raw, err := c.Get().AbsPath("/api/v1/nodes", name).DoRaw(ctx)
	if err != nil {
		return metav1.OwnerReference{}, fmt.Errorf("get node %s: %w", name, err)
	}
	var n struct {
		Metadata struct {
			UID types.UID `json:"uid"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(raw, &n); err != nil || n.Metadata.UID == "" {
		return metav1.OwnerReference{}, fmt.Errorf("get node %s: no uid in the answer (%v)", name, err)
	}
	return metav1.OwnerReference{APIVersion: "v1", Kind: "Node", Name: name, UID: n.Metadata.UID}, nil
}

// record counts one write and logs state changes (not every failed retry).
func (p *Publisher) record(result string, err error, now time.Time, fails int) {
	if p.o.Observer != nil {
		p.o.Observer.PathReportWrite(string(p.o.Kind), result)
	}
	p.mu.Lock()
	if err != nil {
		p.stats.Errors++
		p.stats.LastError = err.Error()
	} else {
		p.stats.Writes++
		p.stats.LastWrite = now
		p.stats.LastError = ""
	}
	p.mu.Unlock()
	switch {
	case err != nil && fails == 0:
		p.o.Log.Warn("path health not written to the API server; keeping the latest and retrying", "kind", p.o.Kind, "err", err)
	case err == nil && fails > 0:
		p.o.Log.Info("path health written again", "kind", p.o.Kind, "failedAttempts", fails)
	case err == nil && result == ResultCreated:
		p.o.Log.Info("path health object created", "kind", p.o.Kind, "namespace", p.o.Namespace, "name", p.o.Node)
	}
}

// misconfigured reports whether err says the cluster lacks the kind (no
// CRD: Submariner not installed with endpoints: submariner) or refuses weft
// the write (RBAC).
func misconfigured(err error) bool {
	return apierrors.IsNotFound(err) || apierrors.IsForbidden(err) || apierrors.IsMethodNotSupported(err)
}

// retryDelay after n failed writes: 0.5 s doubling to 15 s, with ±50 %
// jitter so that a cluster's nodes do not return to a recovering API
// server at the same instant. A refusal that only a fix of the cluster
// cures (misconfigured) keeps doubling up to the refresh interval: 5,000
// nodes then ask once a minute, not every 15 s. It starts as short as any
// other, because an API server that has just started refuses for a moment
// what RBAC allows.
func retryDelay(err error, n int, interval time.Duration) time.Duration {
	limit := 15 * time.Second
	if misconfigured(err) {
		limit = max(limit, interval)
	}
	d := min(500*time.Millisecond<<min(n-1, 10), limit)
	return d/2 + rand.N(d)
}

// bucket is a token bucket: burst tokens, one more per interval.
type bucket struct {
	tokens   float64
	burst    float64
	interval time.Duration
	at       time.Time
}

func newBucket(burst int, interval time.Duration, now time.Time) *bucket {
	return &bucket{tokens: float64(burst), burst: float64(burst), interval: interval, at: now}
}

func (b *bucket) fill(now time.Time) {
	if now.After(b.at) {
		b.tokens = min(b.burst, b.tokens+float64(now.Sub(b.at))/float64(b.interval))
		b.at = now
	}
}

func (b *bucket) take(now time.Time) bool {
	b.fill(now)
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// refund returns the token of a write that did not reach the server.
func (b *bucket) refund() { b.tokens = min(b.burst, b.tokens+1) }

// next is how long until a token is there.
func (b *bucket) next(now time.Time) time.Duration {
	b.fill(now)
	return time.Duration((1 - b.tokens) * float64(b.interval))
}

// routeAgentTarget writes the node's Submariner RouteAgent.
type routeAgentTarget struct {
	p    *Publisher
	w    writer[RouteAgent, *RouteAgent]
	next RouteAgentStatus
}

func (t *routeAgentTarget) prepare(s pathhealth.Snapshot) any {
	t.next = routeAgentStatus(s, versionPrefix+t.p.o.Version, t.p.o.Endpoints)
	return routeAgentShape(t.next)
}

func (t *routeAgentTarget) write(ctx context.Context, at time.Time) (string, error) {
	return t.w.write(ctx, func(a *RouteAgent) {
		a.TypeMeta = metav1.TypeMeta{APIVersion: kubesource.SubmarinerGroupVersion.String(), Kind: string(KindRouteAgent)}
		a.Status = t.next
		if a.Annotations == nil {
			a.Annotations = map[string]string{}
		}
		a.Annotations[UpdateTimestampAnnotation] = strconv.FormatInt(at.UTC().Unix(), 10)
	})
}

func (t *routeAgentTarget) written() {}

// versionPrefix starts weft's status.version; any other is another route
// agent's.
const versionPrefix = "weft "

// foreign refuses to overwrite a RouteAgent that Submariner's own route
// agent keeps: on a node where both run (the gateway nodes with
// disableIntraClusterConnectivity) each would otherwise overwrite the
// other's every minute. Submariner deletes its RouteAgent when its route
// agent stops; one left behind by a crash is taken over once its
// update-timestamp is older than three refresh intervals.
func (t *routeAgentTarget) foreign(a *RouteAgent) error {
	v := a.Status.Version
	if v == "" || strings.HasPrefix(v, versionPrefix) {
		return nil
	}
	ts, err := strconv.ParseInt(a.Annotations[UpdateTimestampAnnotation], 10, 64)
	if err != nil {
		return nil
	}
	age := t.p.o.Now().Sub(time.Unix(ts, 0))
	if age > 3*t.p.o.Interval {
		return nil
	}
	return fmt.Errorf("RouteAgent %s/%s is kept by another route agent (status.version %q, written %s ago): weft leaves it (taken over once it is %s old)",
		a.Namespace, a.Name, v, age.Round(time.Second), 3*t.p.o.Interval)
}

// nodePathTarget writes the node's NodePath status.
type nodePathTarget struct {
	w          writer[NodePath, *NodePath]
	next       NodePathStatus
	conditions []metav1.Condition // as last written
}

func (t *nodePathTarget) prepare(s pathhealth.Snapshot) any {
	t.next = nodePathStatus(s, t.conditions)
	return nodePathShape(t.next)
}

func (t *nodePathTarget) write(ctx context.Context, _ time.Time) (string, error) {
	return t.w.write(ctx, func(n *NodePath) {
		n.TypeMeta = metav1.TypeMeta{APIVersion: kubesource.WeftGroupVersion.String(), Kind: string(KindNodePath)}
		n.Status = t.next
	})
}

func (t *nodePathTarget) written() { t.conditions = t.next.Conditions }
