// Command kube-controller-manager is the real Kubernetes controller manager
// (service accounts, tokens, DaemonSets, Deployments), built from the Go module
// proxy at the version pinned in this module, for weft's end-to-end cluster.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

func main() {
	os.Exit(cli.Run(app.NewControllerManagerCommand()))
}
