// Package syscheck tells whether this machine (the calling process's
// network namespace) can run podnet's daemon: the devices, capabilities,
// sysctls, ports, MTU and kernel features it uses, each with what is
// wrong and how to fix it. It only looks: the one change it makes is a
// throwaway network namespace to see that one can be made.
package syscheck

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Status is the verdict of one check.
type Status string

const (
	// OK: nothing to do.
	OK Status = "ok"
	// Warn: the daemon runs, but something works less well (a feature
	// only some commands use, an offload that is missing).
	Warn Status = "warn"
	// Problem: the daemon will not start or a part of it will not work.
	Problem Status = "problem"
)

// Result is one check's verdict.
type Result struct {
	// Name is short and stable ("tun", "bgp-port"); scripts match on it.
	Name   string `json:"name"`
	Status Status `json:"status"`
	// Detail is what was found.
	Detail string `json:"detail"`
	// Fix says what to do; empty when Status is OK.
	Fix string `json:"fix,omitempty"`
}

// Config is what the checks need to know about the daemon's settings.
type Config struct {
	// Underlay is the interface toward other nodes; "" means the default
	// route's, as the daemon picks it.
	Underlay string
	// UnderlayFrom says where Underlay came from, for the report; ""
	// means "given".
	UnderlayFrom string
	// PodMTU is the daemon's --pod-mtu; 0 means derived from the underlay.
	PodMTU int
	// BGPPort is the TCP port the BGP speaker listens on; 0 means 179.
	BGPPort int
	// VXLANPort is the daemon's VXLAN UDP port; 0 means 4789.
	VXLANPort int
	// DaemonPID is the running daemon's process, 0 when none answers:
	// ports it holds are in use by podnet, not taken from it.
	DaemonPID int
	// DaemonInfo describes the running daemon for the "daemon" line
	// ("podnet v1.2 on worker1"); "" when none answers.
	DaemonInfo string
	// Datastore checks the configured etcd: what answers, whether some
	// members do not (degraded), or why it cannot be used. nil means none
	// is configured (the daemon runs an embedded one). DatastoreName
	// names it.
	Datastore     func(ctx context.Context) (detail string, degraded bool, err error)
	DatastoreName string
}

// The daemon's defaults for the ports.
const (
	DefaultBGPPort   = 179
	DefaultVXLANPort = 4789
)

// Run runs every check, in a stable order.
func Run(ctx context.Context, cfg Config) []Result {
	if cfg.BGPPort == 0 {
		cfg.BGPPort = DefaultBGPPort
	}
	if cfg.VXLANPort == 0 {
		cfg.VXLANPort = DefaultVXLANPort
	}
	return []Result{
		checkDaemon(cfg),
		checkCapabilities(cfg),
		checkTUN(),
		checkRawIPIP(),
		checkNetns(),
		checkIPForward(cfg),
		checkBGPPort(cfg),
		checkVXLANPort(cfg),
		checkMTU(cfg),
		checkUDPOffload(),
		checkVXLANSuperframes(),
		checkIPIPSuperframes(),
		checkNATPacketPath(),
		checkForwardFirewall(nftListRuleset),
		checkAFPacket(),
		checkKernelTunnels(),
		checkDatastore(ctx, cfg),
	}
}

// Problems counts the results with Status Problem.
func Problems(rs []Result) int {
	n := 0
	for _, r := range rs {
		if r.Status == Problem {
			n++
		}
	}
	return n
}

func ok(name, detail string) Result { return Result{Name: name, Status: OK, Detail: detail} }

func warn(name, detail, fix string) Result {
	return Result{Name: name, Status: Warn, Detail: detail, Fix: fix}
}

func problem(name, detail, fix string) Result {
	return Result{Name: name, Status: Problem, Detail: detail, Fix: fix}
}

func checkDaemon(cfg Config) Result {
	if cfg.DaemonPID == 0 && cfg.DaemonInfo == "" {
		return ok("daemon", "not running (its socket does not answer); the checks are for starting it")
	}
	d := "running"
	if cfg.DaemonInfo != "" {
		d += ": " + cfg.DaemonInfo
	}
	if cfg.DaemonPID != 0 {
		d += fmt.Sprintf(" (pid %d)", cfg.DaemonPID)
	}
	return ok("daemon", d)
}

func checkDatastore(ctx context.Context, cfg Config) Result {
	if cfg.Datastore == nil {
		return ok("datastore", "none configured: the daemon runs an embedded etcd in its state dir")
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	what, degraded, err := cfg.Datastore(ctx)
	if err != nil {
		return problem("datastore", fmt.Sprintf("%s: %v", cfg.DatastoreName, err),
			"check the endpoints, that this machine reaches them, and the TLS files (podnet.cfg or the daemon's --datastore-*-file); 'podnet datastore status' shows each member")
	}
	if degraded {
		return warn("datastore", cfg.DatastoreName+": "+what, "bring the members that do not answer back ('podnet datastore status' shows which): one more loss stops every write")
	}
	return ok("datastore", cfg.DatastoreName+": "+what)
}

// readSysctl reads /proc/sys/NAME (dots or slashes) of the calling
// thread's network namespace, trimmed.
func readSysctl(name string) (string, error) {
	b, err := os.ReadFile("/proc/sys/" + strings.ReplaceAll(name, ".", "/"))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

func sysctlInt(name string) (int, error) {
	s, err := readSysctl(name)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.Fields(s + " 0")[0])
}
