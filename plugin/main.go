// Command weft is the chained CNI plugin: it tells weftd about every pod
// attachment and passes the previous plugin's result through unchanged.
package main

import (
	"os"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/weft-net/weft/pkg/cniplugin"
)

func main() {
	skel.PluginMainFuncs(cniplugin.New(os.Stderr).Funcs(), cniplugin.VersionInfo(), cniplugin.About)
}
