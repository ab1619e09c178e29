package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// killGrace is how long processes get to exit after SIGTERM before Down
// sends SIGKILL.
const killGrace = 3 * time.Second

// Down removes everything of lab name: what its state.json records (when
// present: every name- namespace it lists, pods added later included) and
// every namespace matching exactly
// ^name-(fabric|external|worker[0-9]+|test-[0-9]+)$ or starting with
// name-worker<K>- (pods attached by hand with `podnet pod add --new`,
// whose daemon may be dead), after killing the processes inside them;
// pods attached by hand to its running daemons, through those daemons;
// the lab's etcd (found by its recorded identity or by its command line);
// then the run dir. It is idempotent and tries
// every step, returning the joined errors.
func Down(name string) error { return Teardown(Config{Name: name}) }

// Teardown is Down for the lab cfg.Name whose run dir is cfg.RunDir
// ("" = the default), printing progress and commands as cfg asks. Other
// fields of cfg are ignored.
func Teardown(cfg Config) error {
	if cfg.Name == "" {
		cfg.Name = DefaultName
	}
	if err := ValidateName(cfg.Name); err != nil {
		return err
	}
	if cfg.RunDir == "" {
		cfg.RunDir = DefaultRunDir(cfg.Name)
	}
	st, err := loadState(filepath.Join(cfg.RunDir, stateFile))
	if err != nil {
		// A missing or corrupt state file must not stop the sweep.
		st = &state{}
	}
	// The caller's name and dir win over whatever the file says.
	st.Name, st.RunDir = cfg.Name, cfg.RunDir
	l := &Lab{r: newRunner(cfg.Verbose, cfg.Progress), st: *st, children: map[int]*os.Process{}}
	return l.Down()
}

// Down removes the lab: it stops its recorded processes, kills whatever
// else runs in its namespaces, then stops its etcd, and deletes the
// namespaces (recorded and swept) and the run dir. It is idempotent and
// tries every step.
func (l *Lab) Down() error {
	// Another process (podnet lab pod add, lab scale) may have added pods
	// since this Lab was opened: what is on disk is the truth.
	if fresh, err := loadState(l.stFile); err == nil {
		l.mu.Lock()
		l.st = *fresh
		l.mu.Unlock()
	}
	l.mu.Lock()
	st := l.st
	var procs []procID
	for _, p := range st.Pods {
		procs = append(procs, p.HTTP)
	}
	for _, n := range st.Nodes {
		procs = append(procs, n.Daemon)
	}
	l.mu.Unlock()

	var errs []error
	l.r.progressf("removing lab %s", st.Name)
	// Pods attached by hand (`podnet pod add --new` on a node) are not in
	// the state: their daemon knows them, and deletes the namespaces it
	// made for them, so ask it while it still runs. The sweep below
	// removes the namespaces of those whose daemon is dead.
	if err := l.dropForeignPods(st); err != nil {
		errs = append(errs, err)
	}
	// Recorded processes first, by identity, so a daemon gets SIGTERM and
	// a chance to shut down cleanly before its namespace disappears.
	if err := stopAll(procs, unix.SIGTERM, killGrace); err != nil {
		errs = append(errs, fmt.Errorf("stop lab %s processes: %w", st.Name, err))
	}
	for _, p := range procs {
		l.reap(p.PID)
	}

	swept, err := labNamespaces(st.Name)
	if err != nil {
		errs = append(errs, err)
	}
	nss := swept
	for _, ns := range st.Namespaces {
		// Only names of this lab: a hand-edited state must not make Down
		// delete someone else's namespace. Lab names have no "-", so
		// NAME- is this lab's alone (pods added later have any name).
		if strings.HasPrefix(ns, st.Name+"-") && !slices.Contains(nss, ns) {
			nss = append(nss, ns)
		}
	}
	sortTeardown(st.Name, nss)

	// Kill everything in every namespace before deleting any: a pod's TAP
	// is held by the daemon in the node namespace.
	var stray []procID
	for _, ns := range nss {
		ids, err := l.netnsPids(ns)
		if err != nil {
			errs = append(errs, err)
		}
		stray = append(stray, ids...)
	}
	if err := stopAll(stray, unix.SIGTERM, killGrace); err != nil {
		errs = append(errs, fmt.Errorf("stop processes in lab %s: %w", st.Name, err))
	}
	// etcd goes only after every daemon, even a stray one found by the
	// sweep, so none of them loses its datastore while shutting down.
	if err := stopAll(l.etcds(st), unix.SIGTERM, killGrace); err != nil {
		errs = append(errs, fmt.Errorf("stop datastore of lab %s: %w", st.Name, err))
	}
	l.reap(st.Etcd.PID)
	for _, ns := range nss {
		if _, err := os.Stat(NetnsPath(ns)); errors.Is(err, os.ErrNotExist) {
			continue
		}
		if _, err := l.r.run(context.Background(), "ip", "netns", "del", ns); err != nil {
			errs = append(errs, fmt.Errorf("delete namespace %s: %w", ns, err))
		}
	}
	if st.RunDir != "" {
		if err := os.RemoveAll(st.RunDir); err != nil {
			errs = append(errs, fmt.Errorf("remove run dir of lab %s: %w", st.Name, err))
		}
	}
	return errors.Join(errs...)
}

// etcds returns the lab's etcd processes: the recorded one and any whose
// command line serves the lab's etcd dir (state.json lost, or a crash
// between spawning etcd and saving its identity).
func (l *Lab) etcds(st state) []procID {
	var ids []procID
	if st.RunDir != "" {
		ids = etcdProcs(etcdDir(st.RunDir))
	}
	if st.Etcd.PID != 0 && !slices.ContainsFunc(ids, func(p procID) bool { return p.PID == st.Etcd.PID }) {
		ids = append(ids, st.Etcd)
	}
	return ids
}

// netnsPids lists the processes in ns (`ip netns pids`), with identities.
func (l *Lab) netnsPids(ns string) ([]procID, error) {
	if _, err := os.Stat(NetnsPath(ns)); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	out, err := l.r.run(context.Background(), "ip", "netns", "pids", ns)
	if err != nil {
		return nil, fmt.Errorf("list processes in %s: %w", ns, err)
	}
	var ids []procID
	self := os.Getpid()
	for _, f := range strings.Fields(string(out)) {
		pid, err := strconv.Atoi(f)
		if err != nil || pid == self {
			continue
		}
		if id, err := identify(pid); err == nil {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// dropForeignPods asks each running daemon of the lab to delete the pods
// the lab did not create. Their namespaces are not the lab's (the daemon
// names them NODE-POD), so only the daemon can tell which are its own.
func (l *Lab) dropForeignPods(st state) error {
	var errs []error
	for _, n := range st.Nodes {
		if st.Binary == "" || !n.Daemon.running() {
			continue
		}
		// Generous: under the race detector on a busy machine a CLI start
		// and an API call can take seconds.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		env := []string{"PODNET_SOCKET=" + n.Socket}
		out, err := l.r.runEnv(ctx, env, "ip", "netns", "exec", n.Netns, st.Binary, "pod", "list", "-o", "json")
		var pods []struct {
			Name string `json:"name"`
		}
		if err == nil {
			err = json.Unmarshal(out, &pods)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("list pods of %s: %w", n.Name, err))
		}
		for _, p := range pods {
			if sp := st.pod(p.Name); sp != nil && sp.Node == n.Name {
				continue
			}
			if _, err := l.r.runEnv(ctx, env, "ip", "netns", "exec", n.Netns, st.Binary, "pod", "del", p.Name); err != nil {
				errs = append(errs, fmt.Errorf("delete pod %s of %s: %w", p.Name, n.Name, err))
			}
		}
		cancel()
	}
	return errors.Join(errs...)
}
