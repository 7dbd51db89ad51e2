// Command weftd is weft's node daemon. See DESIGN.md for the contract.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"github.com/weft-net/weft/conflist"
	"github.com/weft-net/weft/pkg/client"
	"github.com/weft-net/weft/pkg/weftd"
)

var version = "dev"

const usage = `usage: weftd <command> [flags]

commands:
  run --config FILE                 run the node daemon
      [--socket PATH] [--spool-dir DIR] [--state-dir DIR] [--metrics-address ADDR|none]
                                    defaults for keys the file leaves out, and what
                                    weftd serves with while the file cannot be read
  status [--json] [--socket PATH]   print the daemon's status
  cleanup --config FILE             remove everything weft owns on this node
  install-cni [--watch|--uninstall] install the plugin into the node's CNI config
  version                           print the version
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel()}))
	cmd, args := os.Args[1], os.Args[2:]
	var err error
	switch cmd {
	case "run":
		oneProcessor()
		err = run(args, log)
	case "status":
		err = status(args)
	case "cleanup":
		err = cleanup(args, log)
	case "install-cni":
		err = installCNI(args, log)
	case "version", "--version", "-v":
		fmt.Println(version)
	case "help", "-h", "--help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "weftd: unknown command %q\n\n%s", cmd, usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "weftd %s: %v\n", cmd, err)
		os.Exit(1)
	}
}

// oneProcessor runs the daemon's goroutines on one processor unless the
// GOMAXPROCS environment variable says otherwise. weftd waits on sockets
// almost all the time; with a second processor idle, every goroutine that
// becomes runnable (the accepted connection, net/http's background read,
// a netlink event) wakes a second thread that spins, finds nothing and
// sleeps again, and a request costs twice the thread wake-ups it needs
// (~0.1 ms of CPU each on a virtual machine) on the pod start-up path.
// Blocking system calls still hand the processor over, so nothing waits
// behind the kernel.
func oneProcessor() {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
}

func logLevel() slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(os.Getenv("WEFT_LOG_LEVEL"))); err != nil {
		return slog.LevelInfo
	}
	return l
}

// run starts the daemon. Only flags it cannot run with end it (one line
// on stderr, exit 1); a missing or invalid config file does not: it is
// reported in `weftd status` until fixed.
func run(args []string, log *slog.Logger) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfg := fs.String("config", "/etc/weft/weft.yaml", "configuration file (YAML or JSON)")
	var o weftd.Options
	fs.StringVar(&o.Env.Socket, "socket", "", "API socket when the file sets none or cannot be read (default /run/weft/weft.sock)")
	fs.StringVar(&o.Env.SpoolDir, "spool-dir", "", "plugin spool directory, likewise (default /run/weft/spool)")
	fs.StringVar(&o.Env.StateDir, "state-dir", "", "state directory, likewise (default /run/weft)")
	metricsAddr := fs.String("metrics-address", "", "metrics and probes address, likewise (default 127.0.0.1:9469; \"none\" disables)")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%v (usage: weftd run [--config FILE] [--socket PATH] [--spool-dir DIR] [--state-dir DIR] [--metrics-address HOST:PORT|none])", err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (usage: weftd run --config FILE)", fs.Arg(0))
	}
	switch *metricsAddr {
	case "":
	case "none":
		o.Env.MetricsAddress = new(string)
	default:
		o.Env.MetricsAddress = metricsAddr
	}
	o.ConfigPath, o.Version, o.Log = *cfg, version, log
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return weftd.Run(ctx, o)
}

func status(args []string) error {
	fs := flag.NewFlagSet("status", flag.ExitOnError)
	asJSON := fs.Bool("json", false, "print the status document as JSON")
	sock := fs.String("socket", "/run/weft/weft.sock", "daemon socket")
	timeout := fs.Duration("timeout", 5*time.Second, "request timeout")
	_ = fs.Parse(args)
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	st, err := client.New(*sock, *timeout).Status(ctx)
	if err != nil {
		return fmt.Errorf("ask weftd at %s: %w", *sock, err)
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	weftd.PrintStatus(os.Stdout, st, time.Now())
	return nil
}

func cleanup(args []string, log *slog.Logger) error {
	fs := flag.NewFlagSet("cleanup", flag.ExitOnError)
	cfg := fs.String("config", "/etc/weft/weft.yaml", "configuration file")
	_ = fs.Parse(args)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	unchecked, err := weftd.Cleanup(ctx, *cfg, log)
	if err != nil {
		return err
	}
	if len(unchecked) == 0 {
		fmt.Println("weft removed from this node")
		return nil
	}
	fmt.Println("weft removed from this node, except what could not be checked:")
	for _, u := range unchecked {
		fmt.Println(" ", u)
	}
	return nil
}

// installCNI copies the plugin into the CNI bin dir and puts it last in the
// primary CNI's conflist. In the DaemonSet it runs twice: as the init
// container (install, then exit, so pods start with weft in the chain) and
// as the install-cni sidecar with --watch (put weft back whenever the
// primary CNI rewrites its file). --uninstall takes it out again.
func installCNI(args []string, log *slog.Logger) error {
	fs := flag.NewFlagSet("install-cni", flag.ExitOnError)
	confDir := fs.String("conf-dir", "/etc/cni/net.d", "CNI configuration directory")
	binDir := fs.String("bin-dir", "/opt/cni/bin", "CNI plugin directory")
	plugin := fs.String("plugin", "", "weft plugin binary to copy (default: weft next to this weftd)")
	watch := fs.Bool("watch", false, "after installing, keep weft in the primary conflist until stopped")
	uninstall := fs.Bool("uninstall", false, "remove weft from every conflist, then the plugin binary")
	var e conflist.Entry
	fs.StringVar(&e.Socket, "socket", "/run/weft/weft.sock", "plugin option socket")
	fs.StringVar(&e.SpoolDir, "spool-dir", "/run/weft/spool", "plugin option spoolDir")
	fs.StringVar(&e.FailPolicy, "fail-policy", "open", "plugin option failPolicy: open or closed")
	fs.StringVar(&e.Timeout, "timeout", "2s", "plugin option timeout")
	fs.StringVar(&e.LogFile, "log-file", "", "plugin option logFile (empty: stderr, which the runtime logs)")
	_ = fs.Parse(args)
	if e.FailPolicy != "open" && e.FailPolicy != "closed" {
		return fmt.Errorf("--fail-policy %q: want open or closed", e.FailPolicy)
	}
	if _, err := time.ParseDuration(e.Timeout); err != nil {
		return fmt.Errorf("--timeout: %w", err)
	}
	if *plugin == "" {
		self, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find the plugin next to weftd: %w", err)
		}
		*plugin = filepath.Join(filepath.Dir(self), conflist.BinaryName)
	}
	in := conflist.New(conflist.Options{ConfDir: *confDir, BinDir: *binDir, PluginSource: *plugin, Entry: e, Log: log})
	if *uninstall {
		res, err := in.Uninstall()
		for _, p := range append(res.Edited, res.Restored...) {
			fmt.Println("weft removed from", p)
		}
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	res, err := in.Install(ctx)
	if err != nil {
		return err
	}
	log.Info("weft is in the CNI chain", "conflist", res.Primary, "changed", res.Changed)
	if !*watch {
		return nil
	}
	return in.Watch(ctx)
}
