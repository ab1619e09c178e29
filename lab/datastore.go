package lab

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// Datastore readiness: the etcd socket is dialled every etcdPollInterval
// until it accepts or etcdReadyTimeout has passed.
const (
	etcdPollInterval = 50 * time.Millisecond
	etcdReadyTimeout = 20 * time.Second
)

// startEtcd starts the lab's one etcd (`podnet datastore serve`) detached
// in the root namespace and waits until its socket accepts. Every daemon
// is then pointed at it: without --datastore each daemon would run its own
// embedded etcd and the nodes would not share IPAM.
func (l *Lab) startEtcd(ctx context.Context) error {
	l.mu.Lock()
	bin, runDir := l.st.Binary, l.st.RunDir
	l.mu.Unlock()
	sock := etcdSocket(runDir)
	l.r.progressf("starting datastore (etcd on %s) ...", sock)
	start := time.Now()
	args := []string{bin, "datastore", "serve", "--dir", etcdDir(runDir), "--socket", sock}
	id, proc, err := l.spawn(ctx, args, etcdLog(runDir))
	if err != nil {
		return fmt.Errorf("start datastore: %w", err)
	}
	if err := l.update(func(st *state) {
		st.Etcd, st.EtcdSocket = id, sock
		l.children[id.PID] = proc
	}); err != nil {
		return err
	}
	if err := l.waitSocket(ctx, id, sock); err != nil {
		return fmt.Errorf("start datastore: %w%s", err, logTail(etcdLog(runDir)))
	}
	l.r.progressf("starting datastore ... ready in %.1fs (pid %d)", time.Since(start).Seconds(), id.PID)
	return nil
}

// waitSocket dials the unix socket sock every etcdPollInterval until it
// accepts. It fails early when p exits and after etcdReadyTimeout. A
// listening socket is all the lab checks: the daemons' etcd clients wait
// for etcd itself to be ready.
func (l *Lab) waitSocket(ctx context.Context, p procID, sock string) error {
	fd, err := p.pidfd()
	if err != nil {
		return fmt.Errorf("exited at once")
	}
	defer unix.Close(fd)
	deadline := time.Now().Add(etcdReadyTimeout)
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("socket %s not accepting after %v", sock, etcdReadyTimeout)
		}
		// The pidfd is the tick, as in waitReady: a dying etcd wakes us.
		if waitFd(fd, p.PID, etcdPollInterval) == nil {
			l.reap(p.PID)
			return fmt.Errorf("etcd exited")
		}
	}
}

// etcdProcs finds the `podnet datastore serve --dir DIR` processes whose
// --dir is exactly dir, by their command lines in /proc. Down uses it when
// state.json is gone (or lost the etcd's identity): etcd runs in the root
// namespace, where no namespace sweep would find it. Matching the whole
// --dir argument keeps other labs' etcds (…/lab/NAME2/etcd) safe.
func etcdProcs(dir string) []procID {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var ids []procID
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !isEtcdOf(bytes.Split(bytes.TrimRight(b, "\x00"), []byte{0}), dir) {
			continue
		}
		if id, err := identify(pid); err == nil {
			ids = append(ids, id)
		}
	}
	return ids
}

// isEtcdOf reports whether the command line argv runs `datastore serve`
// with --dir dir (as "--dir dir" or "--dir=dir").
func isEtcdOf(argv [][]byte, dir string) bool {
	serve, match := false, false
	for i, a := range argv {
		switch s := string(a); {
		case s == "datastore" && i+1 < len(argv) && string(argv[i+1]) == "serve":
			serve = true
		case s == "--dir" && i+1 < len(argv):
			match = string(argv[i+1]) == dir
		case s == "--dir="+dir:
			match = true
		}
	}
	return serve && match
}

// EtcdLogTail returns up to n last lines of the lab's etcd.log, for test
// failure reports; nil when the lab has no datastore.
func (l *Lab) EtcdLogTail(n int) []string {
	l.mu.Lock()
	has, runDir := l.st.EtcdSocket != "", l.st.RunDir
	l.mu.Unlock()
	if !has {
		return nil
	}
	return tailLines(etcdLog(runDir), n)
}
