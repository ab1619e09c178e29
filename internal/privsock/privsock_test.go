package privsock

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestPrivateUnderUmaskZero: a socket prepared and restricted under
// umask 0 is 0600 in a 0700 directory.
func TestPrivateUnderUmaskZero(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a", "b", "api.sock")
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	if err := PrepareDir(path); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := Restrict(path); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{path: 0o600, filepath.Dir(path): 0o700} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode().Perm(), want)
		}
	}
}

func TestPrepareDirRefusesShared(t *testing.T) {
	shared := filepath.Join(t.TempDir(), "tmp")
	if err := os.Mkdir(shared, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(shared, 0o1777); err != nil {
		t.Fatal(err)
	}
	err := PrepareDir(filepath.Join(shared, "x.sock"))
	if err == nil || !strings.Contains(err.Error(), "writable by everyone") {
		t.Fatalf("socket in a world-writable directory: got %v, want a refusal", err)
	}
	// An existing directory others may read is left as it is.
	open := filepath.Join(t.TempDir(), "run")
	if err := os.Mkdir(open, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := PrepareDir(filepath.Join(open, "x.sock")); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(open); fi.Mode().Perm() != 0o755 {
		t.Errorf("existing directory changed to %v", fi.Mode().Perm())
	}
}

// TestListen: under umask 0, in an existing directory others can reach,
// the socket appears at its path already 0600 (it was restricted before
// it got there), replaces a stale socket file, leaves nothing else in the
// directory, answers, and goes with Close.
func TestListen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "api.sock")
	stale, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close() // a daemon that died: its file stays

	old := syscall.Umask(0)
	ln, err := Listen(path)
	syscall.Umask(old)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("%s: mode %v, want a socket, 0600", path, fi.Mode())
	}
	if got := ln.Addr().String(); got != path {
		t.Errorf("Addr %q, want %q", got, path)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "api.sock" {
		t.Errorf("directory holds %v, want only api.sock", entries)
	}

	accepted := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Close()
		}
		accepted <- err
	}()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := <-accepted; err != nil {
		t.Fatal(err)
	}

	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("after Close: %v, want the socket gone", err)
	}
}
