// Command pause is the pod sandbox's placeholder process (what
// registry.k8s.io/pause runs): it holds the pod's namespaces, reaps zombies
// as PID 1 would, and exits 0 on SIGTERM or SIGINT. `make image` puts it in
// the pause image the end-to-end cluster's containerd uses; no registry is
// reachable there.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
