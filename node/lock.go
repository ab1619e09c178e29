package node

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// lockStateDir takes an exclusive lock on the state dir for as long as
// the daemon runs, so that two daemons never share pod records, a cached
// view or an embedded etcd (a second daemon started by mistake with
// another API socket used to rewrite the first one's Node and cut off its
// etcd). The lock file holds the holder's pid for the message; the
// kernel drops the lock when the holder dies, so a crash leaves nothing
// to clean up.
func lockStateDir(dir string) (release func(), err error) {
	path := filepath.Join(dir, "podnet.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state dir lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		b, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("state dir %s is in use by another podnet daemon (pid %s); give this one its own --state-dir", dir, strings.TrimSpace(string(b)))
		}
		return nil, fmt.Errorf("state dir lock %s: %w", path, err)
	}
	f.Truncate(0)
	f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return func() { f.Close() }, nil
}
