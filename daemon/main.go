// Command weftd is weft's node daemon. See DESIGN.md for the contract.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/weft-net/weft/pkg/client"
	"github.com/weft-net/weft/pkg/weftd"
)

var version = "dev"

const usage = `usage: weftd <command> [flags]

commands:
  run --config FILE                 run the node daemon
  status [--json] [--socket PATH]   print the daemon's status
  cleanup --config FILE             remove everything weft owns on this node
  install-cni                       install the plugin into the node's CNI config
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
		err = run(args, log)
	case "status":
		err = status(args)
	case "cleanup":
		err = cleanup(args, log)
	case "install-cni":
		err = fmt.Errorf("install-cni is not available in this version yet")
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

func logLevel() slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(os.Getenv("WEFT_LOG_LEVEL"))); err != nil {
		return slog.LevelInfo
	}
	return l
}

func run(args []string, log *slog.Logger) error {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	cfg := fs.String("config", "/etc/weft/weft.yaml", "configuration file (YAML or JSON)")
	_ = fs.Parse(args)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return weftd.Run(ctx, *cfg, version, log)
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
	if err := weftd.Cleanup(ctx, *cfg, log); err != nil {
		return err
	}
	fmt.Println("weft removed from this node")
	return nil
}
