// Command kubectl is the real kubectl, for weft's tests (apply the manifests,
// create ServiceAccount tokens).
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
)

func main() {
	os.Exit(cli.RunNoErrOutput(cmd.NewDefaultKubectlCommand()))
}
