// Command kube-scheduler is the real Kubernetes scheduler, built from the Go
// module proxy at the version pinned in this module, for weft's end-to-end
// cluster.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-scheduler/app"
)

func main() {
	os.Exit(cli.Run(app.NewSchedulerCommand()))
}
