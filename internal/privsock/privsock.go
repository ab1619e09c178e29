// Package privsock keeps podnet's unix sockets (the daemon's API, the
// embedded etcd's client and peer sockets) to root, whatever the umask:
// whoever can connect to them can add pods or rewrite the datastore.
package privsock

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// PrepareDir makes the directory that will hold the socket at path. A
// directory it creates is 0700, so nobody else can reach the socket even
// in the instant between bind and Restrict. An existing directory is left
// as it is (it may be shared, like /run): the socket's own mode guards it
// then. A world-writable directory such as /tmp is refused, because
// anyone could replace the socket there.
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
		return nil
	case err != nil:
		return fmt.Errorf("socket directory: %w", err)
	case !fi.IsDir():
		return fmt.Errorf("socket directory %s is not a directory", dir)
	case fi.Mode().Perm()&0o002 != 0:
		return fmt.Errorf("socket %s: its directory %s is writable by everyone; put the socket in a directory of its own", path, dir)
	}
	return nil
}

// Restrict makes the socket at path readable and writable by its owner
// only (connecting to a unix socket needs write permission).
func Restrict(path string) error {
	if err := os.Chmod(path, 0o600); err != nil {
		return fmt.Errorf("restrict socket: %w", err)
	}
	return nil
}
