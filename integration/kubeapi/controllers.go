package kubeapi

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// ControllerTools are the binaries StartControllers runs, on top of Tools.
var ControllerTools = []string{"kube-controller-manager", "kube-scheduler"}

// StartControllers starts kube-controller-manager and kube-scheduler for s
// in the control-plane namespace, so that the cluster acts on its objects
// as a real one does: DaemonSets and Deployments get pods, pods get nodes,
// namespaces get their default ServiceAccount and kube-root-ca.crt. It
// returns once the controller manager has made default/default (at most
// 90 s). Both are stopped at env.Close, by PID.
func (s *Server) StartControllers(ctx context.Context) error {
	for _, t := range ControllerTools {
		if _, err := os.Stat(s.cp.env.Tool(t)); err != nil {
			return fmt.Errorf("kubeapi %s: %s not built in %s (make kubetools): %w", s.Name, t, s.cp.env.ToolsDir, err)
		}
	}
	start := time.Now()
	kcmLog := filepath.Join(s.Dir, "kube-controller-manager.log")
	kcm, err := startProcess("kube-controller-manager "+s.Name, s.cp.NS.Name, kcmLog, s.cp.env.Tool("kube-controller-manager"),
		"--kubeconfig="+s.AdminKubeconfig,
		// Token controller: the ServiceAccount token Secrets and the
		// kube-root-ca.crt ConfigMap of every namespace.
		"--service-account-private-key-file="+filepath.Join(s.cp.Dir, "sa.key"),
		"--root-ca-file="+filepath.Join(s.cp.Dir, "ca.crt"),
		"--use-service-account-credentials=false",
		"--leader-elect=false",
		"--secure-port=0",
		"--v=1",
	)
	if err != nil {
		return fmt.Errorf("kubeapi %s: %w", s.Name, err)
	}
	s.cp.env.Defer(fmt.Sprintf("kube-controller-manager %s pid %d", s.Name, kcm.PID()), func() error { return kcm.Stop(10 * time.Second) })
	schedLog := filepath.Join(s.Dir, "kube-scheduler.log")
	sched, err := startProcess("kube-scheduler "+s.Name, s.cp.NS.Name, schedLog, s.cp.env.Tool("kube-scheduler"),
		"--kubeconfig="+s.AdminKubeconfig,
		"--leader-elect=false",
		"--secure-port=0",
		"--v=1",
	)
	if err != nil {
		return fmt.Errorf("kubeapi %s: %w", s.Name, err)
	}
	s.cp.env.Defer(fmt.Sprintf("kube-scheduler %s pid %d", s.Name, sched.PID()), func() error { return sched.Stop(10 * time.Second) })
	s.cp.env.Log.Info("controllers started", "name", s.Name, "kube-controller-manager", kcm.PID(), "kube-scheduler", sched.PID())

	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	for {
		out, err := s.Kubectl(ctx, "get", "serviceaccount", "default", "--namespace=default", "-o", "name")
		if err == nil && strings.TrimSpace(out) == "serviceaccount/default" {
			break
		}
		for _, p := range []*Process{kcm, sched} {
			if !p.Running() {
				return fmt.Errorf("kubeapi %s: %s exited: %v; log tail:\n%s", s.Name, p.what, p.waitErr, logTail(kcmLog, 2048)+logTail(schedLog, 2048))
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kubeapi %s: no default ServiceAccount from kube-controller-manager: %w; log tail:\n%s", s.Name, ctx.Err(), logTail(kcmLog, 4096))
		case <-time.After(250 * time.Millisecond):
		}
	}
	s.cp.env.Log.Info("controllers ready", "name", s.Name, "took", time.Since(start).Round(time.Millisecond))
	return nil
}
