// Command kubelet is the real Kubernetes node agent, built from the Go module
// proxy at the version pinned in this module, for weft's end-to-end cluster.
package main

import (
	"context"
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kubelet/app"
)

func main() {
	os.Exit(cli.Run(app.NewKubeletCommand(context.Background())))
}
