package healthpublish

import (
	"context"
	"fmt"
	"log/slog"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
)

// Write results, the metric's result label.
const (
	ResultCreated = "created"
	ResultUpdated = "updated"
	ResultError   = "error"
)

// object is a pointer to one of the kinds written.
type object[T any] interface {
	*T
	runtime.Object
	metav1.Object
}

// writer creates or updates one named object. It keeps the object as the
// API server last returned it, so that a write in steady state is one PUT
// with that resourceVersion (no GET first), and metadata others added
// (labels, annotations) is kept. A conflict (someone else wrote) or a
// missing object is resolved by reading or creating it again.
type writer[T any, P object[T]] struct {
	client              *rest.RESTClient
	resource, namespace string
	name                string
	// statusSub: the CRD has a status subresource, so a create stores no
	// status and the status goes through PUT …/status.
	statusSub bool
	// yield, if set, looks at the object as read from the server and
	// returns an error when weft must leave it alone (another writer
	// keeps it); the write then fails with that error, and the next one
	// reads again.
	yield func(P) error
	// owner, if set, returns the reference that makes the node's Node the
	// owner of the object (false: none now, e.g. the Node is not found),
	// so that the garbage collector deletes the object with its Node
	// instead of leaving one per departed node. Asked on every create,
	// and on an update of an object that has no Node owner yet (written
	// before weft set one, or while the lookup failed).
	owner func(context.Context) (metav1.OwnerReference, bool)
	log   *slog.Logger // nil: silent
	last  P
}

// ownedByNode tells whether o has a Node among its owners.
func ownedByNode(o metav1.Object) bool {
	for _, r := range o.GetOwnerReferences() {
		if r.Kind == "Node" && r.APIVersion == "v1" {
			return true
		}
	}
	return false
}

// conflictAttempts bounds the read-modify-write loop of one write.
const conflictAttempts = 4

// write applies set (which fills the status and annotations) to the
// object and stores it, creating it if needed.
func (w *writer[T, P]) write(ctx context.Context, set func(P)) (string, error) {
	result := ResultUpdated
	for range conflictAttempts {
		if w.last == nil {
			obj := P(new(T))
			obj.SetName(w.name)
			obj.SetNamespace(w.namespace)
			if w.owner != nil {
				if ref, ok := w.owner(ctx); ok {
					obj.SetOwnerReferences([]metav1.OwnerReference{ref})
				}
			}
			set(obj)
			out := P(new(T))
			err := w.client.Post().Namespace(w.namespace).Resource(w.resource).Body(obj).Do(ctx).Into(out)
			switch {
			case apierrors.IsAlreadyExists(err):
				if err := w.get(ctx); err != nil {
					return ResultError, err
				}
				continue
			case err != nil:
				return ResultError, fmt.Errorf("create %s %s/%s: %w", w.resource, w.namespace, w.name, err)
			}
			w.last, result = out, ResultCreated
			if !w.statusSub {
				return result, nil
			}
		}
		obj := w.last.DeepCopyObject().(P)
		if w.owner != nil && !ownedByNode(obj) {
			obj = w.adopt(ctx, obj)
		}
		set(obj)
		req := w.client.Put().Namespace(w.namespace).Resource(w.resource).Name(w.name)
		if w.statusSub {
			req = req.SubResource("status")
		}
		out := P(new(T))
		err := req.Body(obj).Do(ctx).Into(out)
		switch {
		case err == nil:
			w.last = out
			return result, nil
		case apierrors.IsConflict(err):
			if err := w.get(ctx); err != nil {
				return ResultError, err
			}
		case apierrors.IsNotFound(err):
			w.last = nil // deleted meanwhile: create it again
		default:
			return ResultError, fmt.Errorf("update %s %s/%s: %w", w.resource, w.namespace, w.name, err)
		}
	}
	return ResultError, fmt.Errorf("write %s %s/%s: still conflicting after %d attempts", w.resource, w.namespace, w.name, conflictAttempts)
}

// get reads the object afresh; a missing one is left to be created.
func (w *writer[T, P]) get(ctx context.Context) error {
	out := P(new(T))
	err := w.client.Get().Namespace(w.namespace).Resource(w.resource).Name(w.name).Do(ctx).Into(out)
	switch {
	case apierrors.IsNotFound(err):
		w.last = nil
		return nil
	case err != nil:
		return fmt.Errorf("get %s %s/%s: %w", w.resource, w.namespace, w.name, err)
	}
	if w.yield != nil {
		if err := w.yield(out); err != nil {
			w.last = nil
			return err
		}
	}
	w.last = out
	return nil
}

// adopt adds the Node owner to obj when the lookup gives one. With a status
// subresource, PUT …/status ignores metadata, so the owner is stored by a
// PUT of the object itself first; if that fails the status write goes on
// without it and the next write tries again.
func (w *writer[T, P]) adopt(ctx context.Context, obj P) P {
	ref, ok := w.owner(ctx)
	if !ok {
		return obj
	}
	obj.SetOwnerReferences(append(obj.GetOwnerReferences(), ref))
	if !w.statusSub {
		return obj
	}
	out := P(new(T))
	if err := w.client.Put().Namespace(w.namespace).Resource(w.resource).Name(w.name).Body(obj).Do(ctx).Into(out); err != nil {
		if w.log != nil {
			w.log.Warn("add the Node owner reference", "resource", w.resource, "name", w.name, "err", err)
		}
		return w.last.DeepCopyObject().(P)
	}
	w.last = out
	return out.DeepCopyObject().(P)
}
