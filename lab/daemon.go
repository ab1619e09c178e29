package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Daemon readiness: `podnet status` is tried every readyInterval until it
// exits 0 or readyTimeout has passed.
const (
	readyInterval = 100 * time.Millisecond
	readyTimeout  = 20 * time.Second
	// statusTimeout bounds one `podnet status` attempt.
	statusTimeout = 5 * time.Second
	// stopTimeout bounds StopDaemon's wait for the daemon to exit.
	stopTimeout = 10 * time.Second
	// logTailLines is how much of daemon.log an error quotes.
	logTailLines = 20
)

// startDaemons starts every node's daemon, then waits for all of them, so
// the nodes boot in parallel.
func (l *Lab) startDaemons(ctx context.Context) error {
	l.mu.Lock()
	nodes := make([]string, len(l.st.Nodes))
	for i, n := range l.st.Nodes {
		nodes[i] = n.Name
	}
	l.mu.Unlock()
	started := make(map[string]time.Time, len(nodes))
	for _, node := range nodes {
		started[node] = time.Now()
		if err := l.spawnDaemon(ctx, node); err != nil {
			return err
		}
	}
	for _, node := range nodes {
		if err := l.waitReady(ctx, node, started[node]); err != nil {
			return err
		}
	}
	return nil
}

// StartDaemon starts node's daemon (again, e.g. after StopDaemon) and waits
// until it answers `podnet status`.
func (l *Lab) StartDaemon(ctx context.Context, node string) error {
	l.mu.Lock()
	n := l.st.node(node)
	var running bool
	var last procID
	if n != nil {
		running, last = n.Daemon.running(), n.Daemon
	}
	l.mu.Unlock()
	if n == nil {
		return fmt.Errorf("start daemon on %s: %w", node, l.unknownTarget(node))
	}
	if running {
		return fmt.Errorf("start daemon on %s: already running", node)
	}
	// One that died on its own may still have threads exiting, which
	// hold its state dir lock.
	if err := last.waitExit(stopTimeout); err != nil {
		return fmt.Errorf("start daemon on %s: the last one %w", node, err)
	}
	start := time.Now()
	if err := l.spawnDaemon(ctx, node); err != nil {
		return err
	}
	return l.waitReady(ctx, node, start)
}

// HandPodNetnsPrefix starts the namespace names of pods that
// `podnet pod add --new` creates on node of lab name.
func HandPodNetnsPrefix(lab, node string) string { return lab + "-" + node + "-" }

// HandPodNetns is the namespace of such a pod.
func (l *Lab) HandPodNetns(node, pod string) string { return HandPodNetnsPrefix(l.Name(), node) + pod }

// spawnDaemon starts `podnet daemon` detached inside node's namespace and
// records its PID. The process outlives the caller: it has its own session,
// stdin from /dev/null and its output appended to daemon.log.
func (l *Lab) spawnDaemon(ctx context.Context, node string) error {
	l.mu.Lock()
	n := *l.st.node(node)
	bin, extra, ds := l.st.Binary, l.st.DaemonArgs, l.st.datastore()
	l.mu.Unlock()
	l.r.progressf("starting daemon on %s ...", node)
	// nsenter, not `ip netns exec`: the latter also gives the daemon a
	// private mount namespace, and namespaces it creates for pods
	// (pod add --new) would then be invisible outside it.
	args := []string{"nsenter", "--net=" + NetnsPath(n.Netns), "--", bin, "daemon",
		"--node", n.Name, "--underlay", n.Iface,
		"--state-dir", n.StateDir, "--socket", n.Socket,
		// Namespaces of pods added by hand carry the lab's name too, so
		// two labs never collide on them.
		"--pod-netns-prefix", HandPodNetnsPrefix(l.st.Name, n.Name)}
	if ds != "" {
		// The etcd socket is in the root namespace's file system, which
		// ip netns exec keeps: unix sockets ignore network namespaces.
		args = append(args, "--datastore", ds)
	}
	args = append(args, extra...)
	// A socket left by a killed daemon would make status succeed against
	// nothing (or make the new daemon fail to bind): remove it first.
	if err := os.Remove(n.Socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("start daemon on %s: remove stale socket: %w", node, err)
	}
	id, proc, err := l.spawn(ctx, args, n.Log)
	if err != nil {
		return fmt.Errorf("start daemon on %s: %w", node, err)
	}
	return l.update(func(st *state) {
		st.node(node).Daemon = id
		l.children[id.PID] = proc
	})
}

// spawn starts args detached with output appended to logPath, and returns
// its identity. ip netns exec execs the command after entering the
// namespace, so the PID is the command's own.
func (l *Lab) spawn(ctx context.Context, args []string, logPath string) (procID, *os.Process, error) {
	if err := ctx.Err(); err != nil {
		return procID{}, nil, err
	}
	l.r.show(nil, args)
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return procID{}, nil, fmt.Errorf("open log: %w", err)
	}
	defer logf.Close()
	fmt.Fprintf(logf, "--- %s lab: %s\n", time.Now().Format(time.RFC3339), cmdline(nil, args))
	// Not CommandContext: the process must outlive ctx and this call.
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin = nil // /dev/null
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return procID{}, nil, fmt.Errorf("run %s: %w", cmdline(nil, args), err)
	}
	id, err := identify(cmd.Process.Pid)
	if err != nil {
		// It died before we could look: keep the PID so the error path
		// still reaps it; readiness will report the log.
		id = procID{PID: cmd.Process.Pid}
	}
	return id, cmd.Process, nil
}

// waitReady runs `podnet status` against node's socket every
// readyInterval until it exits 0. It fails early when the daemon exits and
// after readyTimeout; both errors quote the end of daemon.log.
func (l *Lab) waitReady(ctx context.Context, node string, started time.Time) error {
	l.mu.Lock()
	n := *l.st.node(node)
	bin := l.st.Binary
	l.mu.Unlock()
	fd, err := n.Daemon.pidfd()
	if err != nil {
		return fmt.Errorf("start daemon on %s: exited at once%s", node, logTail(n.Log))
	}
	defer unix.Close(fd)
	deadline := time.Now().Add(readyTimeout)
	env := []string{"PODNET_SOCKET=" + n.Socket}
	for {
		// A daemon that accepts but never answers must not stall us
		// past the overall deadline.
		actx, cancel := context.WithTimeout(ctx, statusTimeout)
		cmd := exec.CommandContext(actx, bin, "status")
		cmd.Env = append(os.Environ(), env...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		cancel()
		if err == nil {
			l.r.progressf("starting daemon on %s ... ready in %.1fs (pid %d)", node, time.Since(started).Seconds(), n.Daemon.PID)
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("start daemon on %s: %w", node, ctx.Err())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("start daemon on %s: not ready after %v (last `podnet status`: %v: %s)%s",
				node, readyTimeout, err, oneLine(strings.TrimSpace(out.String())), logTail(n.Log))
		}
		// The pidfd doubles as the retry tick: it wakes us at once if the
		// daemon dies instead of letting us wait out the whole timeout.
		if waitFd(fd, n.Daemon.PID, readyInterval) == nil {
			l.reap(n.Daemon.PID)
			return fmt.Errorf("start daemon on %s: daemon exited%s", node, logTail(n.Log))
		}
	}
}

// StopDaemon sends sig to node's daemon and waits until it has exited
// (tests use SIGKILL, then StartDaemon). It returns an error if the daemon
// is still running after 10s.
func (l *Lab) StopDaemon(node string, sig os.Signal) error {
	s, ok := sig.(syscall.Signal)
	if !ok {
		return fmt.Errorf("stop daemon on %s: signal %v is not a syscall.Signal", node, sig)
	}
	l.mu.Lock()
	n := l.st.node(node)
	var id procID
	if n != nil {
		id = n.Daemon
	}
	l.mu.Unlock()
	if n == nil {
		return fmt.Errorf("stop daemon on %s: %w", node, l.unknownTarget(node))
	}
	if err := id.signal(s); err != nil {
		if errors.Is(err, errGone) {
			return fmt.Errorf("stop daemon on %s: %w", node, errGone)
		}
		return fmt.Errorf("stop daemon on %s: %w", node, err)
	}
	if err := id.waitExit(stopTimeout); err != nil {
		return fmt.Errorf("stop daemon on %s after %v: %w", node, sig, err)
	}
	l.reap(id.PID)
	return nil
}

// reap collects the exit status of pid if this Lab started it, so stopped
// daemons do not stay zombies in a long-running test process.
func (l *Lab) reap(pid int) {
	l.mu.Lock()
	p := l.children[pid]
	delete(l.children, pid)
	l.mu.Unlock()
	if p != nil {
		p.Wait()
	}
}

// logTail returns the last lines of a log file, formatted to be appended to
// an error message, or "" when the file is empty or unreadable.
func logTail(path string) string {
	lines := tailLines(path, logTailLines)
	if len(lines) == 0 {
		return ""
	}
	return fmt.Sprintf("; last lines of %s: %s", path, strings.Join(lines, " | "))
}

// tailLines returns up to n last non-empty lines of the file at path.
func tailLines(path string, n int) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var lines []string
	for _, ln := range strings.Split(string(b), "\n") {
		if strings.TrimSpace(ln) != "" {
			lines = append(lines, ln)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return lines
}

// LogTail returns up to n last lines of node's daemon.log, for test
// failure reports.
func (l *Lab) LogTail(node string, n int) []string {
	l.mu.Lock()
	var path string
	if nd := l.st.node(node); nd != nil {
		path = nd.Log
	}
	l.mu.Unlock()
	if path == "" {
		return nil
	}
	return tailLines(path, n)
}
