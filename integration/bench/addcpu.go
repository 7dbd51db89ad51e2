package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/weft-net/weft/integration/harness"
)

// addCPU is what one plugin ADD cost, the plugin exec'd directly with the
// CNI environment and a bridge's prevResult, as cnitool would.
type addCPU struct {
	proc, daemon       time.Duration // the plugin process (rusage), weftd's threads (schedstat) meanwhile
	procVCS, daemonVCS int64         // voluntary context switches: thread wake-ups
}

// addCPUFigures are weft's and tuning's ADD, exec'd alternately.
type addCPUFigures struct {
	weft, tuning []addCPU
}

// threadsSwitches is the number of voluntary context switches of all
// threads of pid: each one a sleep, so each a wake-up to come.
func threadsSwitches(pid int) (int64, error) {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	if err != nil || len(tasks) == 0 {
		return 0, fmt.Errorf("threads of %d: %v", pid, err)
	}
	var sum int64
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue // a thread gone meanwhile
		}
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "voluntary_ctxt_switches:"); ok {
				var n int64
				if _, err := fmt.Sscan(v, &n); err != nil {
					return 0, fmt.Errorf("parse %s: %w", t, err)
				}
				sum += n
			}
		}
	}
	return sum, nil
}

// directADDs execs weft's and tuning's ADD alternately, iters times each,
// with the same prevResult (tuning's in the bare chain's pod, which it
// enters; weft's reported to the node's weftd, and DELeted after), and
// measures each run's CPU: the process's and weftd's meanwhile. Both
// counts include weftd's background work (its probes) during the run; the
// runs are a few milliseconds, the same for both, so that share is alike.
// Unlike 1e it subtracts no chain from another: the figure is the plugin's
// own cost, and waiting for a CPU on a loaded machine is not in it.
func (sn *startupNode) directADDs(ctx context.Context, env *harness.Env, iters int) (addCPUFigures, error) {
	prev := `{"cniVersion":"0.3.1","interfaces":[{"name":"cni0","mac":"02:00:00:00:00:01"},{"name":"veth1","mac":"02:00:00:00:00:02"},{"name":"eth0","mac":"02:00:00:00:00:03","sandbox":"` + sn.bare.pod.NS.Path + `"}],"ips":[{"version":"4","address":"10.1.1.9/24","gateway":"10.1.1.1","interface":2}],"routes":[{"dst":"0.0.0.0/0","gw":"10.1.1.1"}],"dns":{}}`
	weftConf := fmt.Sprintf(`{"cniVersion":"0.3.1","name":"cbr0","type":"weft","socket":%q,"spoolDir":%q,"prevResult":%s}`, sn.n.Socket, sn.n.SpoolDir, prev)
	tuningConf := `{"cniVersion":"0.3.1","name":"cbr0","type":"tuning","prevResult":` + prev + `}`
	pid := sn.w.PID
	run := func(bin, verb, conf, id string) (addCPU, error) {
		d0, err := threadsCPU(pid)
		if err != nil {
			return addCPU{}, err
		}
		v0, err := threadsSwitches(pid)
		if err != nil {
			return addCPU{}, err
		}
		cmd := exec.CommandContext(ctx, bin)
		cmd.Env = append(os.Environ(), "CNI_COMMAND="+verb, "CNI_CONTAINERID="+id, "CNI_NETNS="+sn.bare.pod.NS.Path,
			"CNI_IFNAME=eth0", "CNI_PATH="+strings.Join(env.CNIPath(), string(os.PathListSeparator)),
			"CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME=direct")
		cmd.Stdin = strings.NewReader(conf)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			return addCPU{}, fmt.Errorf("%s %s: %w: %s", filepath.Base(bin), verb, err, out.String())
		}
		d1, err := threadsCPU(pid)
		if err != nil {
			return addCPU{}, err
		}
		v1, err := threadsSwitches(pid)
		if err != nil {
			return addCPU{}, err
		}
		ru, _ := cmd.ProcessState.SysUsage().(*syscall.Rusage)
		a := addCPU{proc: cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime(), daemon: d1 - d0, daemonVCS: v1 - v0}
		if ru != nil {
			a.procVCS = ru.Nvcsw
		}
		return a, nil
	}
	var f addCPUFigures
	for i := -3; i < iters; i++ { // three rounds of warm-up
		id := fmt.Sprintf("direct-%d", i+3)
		order := []bool{true, false}
		if i%2 != 0 {
			order = []bool{false, true} // alternate which runs first
		}
		for _, weft := range order {
			if !weft {
				a, err := run(env.Tool("tuning"), "ADD", tuningConf, id)
				if err != nil {
					return f, err
				}
				if i >= 0 {
					f.tuning = append(f.tuning, a)
				}
				continue
			}
			a, err := run(env.Bin("weft"), "ADD", weftConf, id)
			if err != nil {
				return f, err
			}
			if _, err := run(env.Bin("weft"), "DEL", weftConf, id); err != nil {
				return f, err
			}
			if i >= 0 {
				f.weft = append(f.weft, a)
			}
		}
	}
	return f, nil
}

// summaries of one plugin's runs: the sum (the row's figure) and its parts.
func addCPUSummaries(runs []addCPU) (sum Summary, parts map[string]Summary) {
	var s, p, d, pv, dv []float64
	for _, a := range runs {
		s = append(s, float64(a.proc+a.daemon)/float64(time.Millisecond))
		p = append(p, float64(a.proc)/float64(time.Millisecond))
		d = append(d, float64(a.daemon)/float64(time.Millisecond))
		pv = append(pv, float64(a.procVCS))
		dv = append(dv, float64(a.daemonVCS))
	}
	return Summarize(s), map[string]Summary{
		"processCPUMs": Summarize(p), "weftdCPUMs": Summarize(d),
		"processVoluntarySwitches": Summarize(pv), "weftdVoluntarySwitches": Summarize(dv),
	}
}
