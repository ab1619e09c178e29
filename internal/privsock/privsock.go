// Package privsock keeps podnet's unix sockets (the daemon's API, the
// embedded etcd's client and peer sockets) to root, whatever the umask:
// whoever can connect to them can add pods or rewrite the datastore.
package privsock

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
)

// PrepareDir makes the directory that will hold the socket at path. A
// directory it creates is 0700, so nobody else can reach the socket even
// in the instant between bind and Restrict. An existing directory is left
// as it is (it may be shared, like /run): the socket's own mode guards it
// then. A directory others may write to, such as /tmp, is refused, and so
// is one under a directory that someone other than root (or this
// process's user) owns or others may write to: whoever can rename or
// replace the socket or any directory above it can put a socket of their
// own where podnet's clients look (checkAncestors).
func PrepareDir(path string) error {
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("socket directory: %w", err)
		}
		// MkdirAll applies the umask; Chmod does not.
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("socket directory: %w", err)
		}
	case err != nil:
		return fmt.Errorf("socket directory: %w", err)
	case !fi.IsDir():
		return fmt.Errorf("socket directory %s is not a directory", dir)
	case fi.Mode().Perm()&0o002 != 0:
		return fmt.Errorf("socket %s: its directory %s is writable by everyone; put the socket in a directory of its own", path, dir)
	case fi.Mode().Perm()&0o020 != 0:
		return fmt.Errorf("socket %s: its directory %s is writable by its group; put the socket in a directory of its own", path, dir)
	}
	return checkAncestors(path, dir)
}

// checkAncestors checks dir, the socket's directory, and every directory
// above it (symbolic links resolved) up to the root: each must belong to
// root or to this process's user, and none above dir may be writable by
// others unless it is sticky, like /tmp, where only an entry's owner may
// rename it.
func checkAncestors(path, dir string) error {
	real, err := filepath.EvalSymlinks(dir)
	if err == nil {
		real, err = filepath.Abs(real)
	}
	if err != nil {
		return fmt.Errorf("socket directory: %w", err)
	}
	for d := real; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("socket directory: %w", err)
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != 0 && int(st.Uid) != os.Geteuid() {
			return fmt.Errorf("socket %s: directory %s belongs to uid %d, who could replace the socket; put it under directories only root controls", path, d, st.Uid)
		}
		if d != real && fi.Mode().Perm()&0o022 != 0 && fi.Mode()&fs.ModeSticky == 0 {
			return fmt.Errorf("socket %s: directory %s is writable by others (%v), who could replace the directories below it; put the socket under directories only root controls", path, d, fi.Mode().Perm())
		}
		if parent := filepath.Dir(d); parent == d {
			return nil
		}
	}
}

// Restrict makes the socket at path readable and writable by its owner
// only (connecting to a unix socket needs write permission).
func Restrict(path string) error {
	if err := os.Chmod(path, 0o600); err != nil {
		return fmt.Errorf("restrict socket: %w", err)
	}
	return nil
}

// Listen listens on a unix socket at path that nobody but its owner can
// connect to at any instant. Binding in place leaves the socket with the
// umask's mode until Restrict, in a directory others may reach (an
// existing one, like /run/podnet made by a service manager), and a
// connection accepted meanwhile would outlive the chmod. So the socket is
// bound in a new directory of its own beside path (0700), restricted
// there, and only then renamed to path. The kernel keeps the name it was
// bound to (ss -xl and each connection's local address show the
// temporary one); Addr returns path. A stale socket file at path is
// replaced, anything else there refused; whether a live server still
// answers there is the caller's to check first. Close removes path if
// it is still this listener's socket.
func Listen(path string) (net.Listener, error) {
	if err := PrepareDir(path); err != nil {
		return nil, err
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode().Type() != fs.ModeSocket {
		return nil, fmt.Errorf("socket %s: a %v is there, not a socket", path, fi.Mode().Type())
	}
	tmp, err := os.MkdirTemp(filepath.Dir(path), ".s") // 0700; a short name, for sun_path
	if err != nil {
		return nil, fmt.Errorf("socket directory: %w", err)
	}
	defer os.RemoveAll(tmp)
	bound := filepath.Join(tmp, "s")
	if len(bound) >= maxSunPath {
		return nil, fmt.Errorf("socket %s: path too long for a unix socket (%d bytes bound at first, as %s; at most %d)",
			path, len(bound), bound, maxSunPath-1)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: bound, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(false) // the file will be at path, not bound
	if err := Restrict(bound); err != nil {
		ln.Close()
		return nil, err
	}
	if beforeRename != nil {
		beforeRename(bound)
	}
	if err := os.Rename(bound, path); err != nil {
		ln.Close()
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	return &listener{UnixListener: ln, addr: &net.UnixAddr{Name: path, Net: "unix"}, file: fi}, nil
}

// maxSunPath is the size of sockaddr_un's sun_path on Linux, its
// terminating NUL included.
const maxSunPath = 108

// beforeRename, if set (by tests), sees the socket restricted at its
// temporary path, before it is renamed into place.
var beforeRename func(bound string)

// listener is a unix listener whose socket file was renamed to addr.
type listener struct {
	*net.UnixListener
	addr *net.UnixAddr
	file os.FileInfo // the socket file, to tell it from a later one at addr
	once sync.Once
}

func (l *listener) Addr() net.Addr { return l.addr }

// Close stops listening and removes the socket file, once, unless another
// socket has taken its path meanwhile.
func (l *listener) Close() error {
	err := l.UnixListener.Close()
	l.once.Do(func() {
		if fi, err := os.Lstat(l.addr.Name); err == nil && os.SameFile(fi, l.file) {
			os.Remove(l.addr.Name)
		}
	})
	return err
}
