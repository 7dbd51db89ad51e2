package kubesource

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
)

// The reflector's store keeps only what weft uses and reports a change
// only when that changed: a kubelet heartbeat (a new resourceVersion,
// conditions) costs no rebuild.
func TestTrackingStore(t *testing.T) {
	changes := 0
	st := &trackingStore{Store: cache.NewStore(cache.DeletionHandlingMetaNamespaceKeyFunc), strip: stripNode, changed: func() { changes++ }}
	if st.Transformer() == nil {
		t.Fatal("no transformer: a streamed initial list would cache full Nodes")
	}
	n := node("c1-n1", internal("192.168.10.11"))
	n.ResourceVersion = "1"
	n.Status.Images = []corev1.ContainerImage{{Names: []string{"x"}}}
	if err := st.Replace([]any{n}, "1"); err != nil {
		t.Fatal(err)
	}
	if !st.synced.Load() || changes != 1 {
		t.Fatalf("after the initial list: synced=%v changes=%d", st.synced.Load(), changes)
	}
	got, _, _ := st.GetByKey("c1-n1")
	if g := got.(*corev1.Node); g.Status.Images != nil {
		t.Errorf("Replace kept what the transform drops: %+v", g.Status)
	}

	beat := n.DeepCopy()
	beat.ResourceVersion = "2"
	beat.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: metav1.Now()}}
	if err := st.Update(beat); err != nil {
		t.Fatal(err)
	}
	if changes != 1 {
		t.Errorf("a heartbeat counted as a change (%d)", changes)
	}
	moved := beat.DeepCopy()
	moved.Status.Addresses = []corev1.NodeAddress{internal("192.168.10.99")}
	if err := st.Update(moved); err != nil {
		t.Fatal(err)
	}
	if err := st.Add(node("c1-n2", internal("192.168.10.12"))); err != nil {
		t.Fatal(err)
	}
	if err := st.Delete(moved); err != nil {
		t.Fatal(err)
	}
	if changes != 4 {
		t.Errorf("re-address, add, delete: %d changes, want 4", changes-1)
	}
	if keys := st.ListKeys(); len(keys) != 1 || keys[0] != "c1-n2" {
		t.Errorf("keys = %v", keys)
	}
}
