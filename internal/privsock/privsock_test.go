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
	staleFile, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}

	// The moment that matters: the socket is restricted, in a directory
	// only its owner reaches, while its path still holds the old file.
	checked := false
	beforeRename = func(bound string) {
		checked = true
		for p, want := range map[string]os.FileMode{bound: 0o600, filepath.Dir(bound): 0o700} {
			if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != want {
				t.Errorf("before the rename, %s: %v, %v; want mode %v", p, fi.Mode(), err, want)
			}
		}
		if fi, err := os.Lstat(path); err != nil || !os.SameFile(fi, staleFile) {
			t.Errorf("before the rename, %s is not the stale file (%v)", path, err)
		}
	}
	defer func() { beforeRename = nil }()
	old := syscall.Umask(0)
	ln, err := Listen(path)
	syscall.Umask(old)
	if !checked {
		t.Error("Listen did not bind at a temporary path first")
	}
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

// TestListenRefuses: a path that is not a socket is left alone, and a
// path too long for sun_path once bound at its temporary name is
// refused with a message that says so.
func TestListenRefuses(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "api.sock")
	if err := os.WriteFile(file, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(file); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("regular file at the path: %v", err)
	}
	if b, _ := os.ReadFile(file); string(b) != "keep" {
		t.Errorf("the file at the path became %q", b)
	}
	// 107 bytes: a path bind takes, but not with the temporary
	// directory's name (".s" and up to ten digits) in it.
	long := filepath.Join(dir, strings.Repeat("d", 107-len(dir)-len("//api.sock")), "api.sock")
	if len(long) != 107 {
		t.Fatalf("long path of %d bytes", len(long))
	}
	if _, err := Listen(long); err == nil || !strings.Contains(err.Error(), "too long") {
		t.Errorf("long path: %v", err)
	}
}

// TestListenCloseLeavesAnotherSocket: a listener whose path another
// socket has taken meanwhile leaves that one in place when it closes.
func TestListenCloseLeavesAnotherSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "api.sock")
	first, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	second, err := Listen(path) // the caller's liveness check skipped
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	first.Close()
	if _, err := net.Dial("unix", path); err != nil {
		t.Errorf("after the first listener closed, the second's socket: %v", err)
	}
}

// TestPrepareDirChecksAncestors: a socket directory, or any directory
// above it, that someone else owns or may write to is refused, whether
// PrepareDir finds the socket's directory or makes it; a sticky
// world-writable directory above (like /tmp) is not.
func TestPrepareDirChecksAncestors(t *testing.T) {
	const nobody = 65534
	root := t.TempDir() // under /tmp: sticky, world-writable
	mk := func(path string, mode os.FileMode, uid int) string {
		t.Helper()
		if err := os.MkdirAll(path, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(path, uid, 0); err != nil {
			t.Fatal(err)
		}
		return path
	}
	foreign := mk(filepath.Join(root, "alice"), 0o755, nobody)
	groupW := mk(filepath.Join(root, "team"), 0o775, 0)
	sticky := mk(filepath.Join(root, "shared"), 0o777|os.ModeSticky, 0)
	for _, c := range []struct {
		name, path, want string
	}{
		{"socket directory of another user", filepath.Join(mk(filepath.Join(foreign, "run"), 0o700, nobody), "x.sock"), "belongs to uid 65534"},
		{"made under another user's directory", filepath.Join(foreign, "new", "x.sock"), "belongs to uid 65534"},
		{"under another user's directory", filepath.Join(mk(filepath.Join(foreign, "rootdir"), 0o700, 0), "x.sock"), "belongs to uid 65534"},
		{"group-writable socket directory", filepath.Join(groupW, "x.sock"), "writable by its group"},
		{"under a group-writable directory", filepath.Join(mk(filepath.Join(groupW, "run"), 0o700, 0), "x.sock"), "writable by others"},
		{"made under a group-writable directory", filepath.Join(groupW, "new", "x.sock"), "writable by others"},
		{"through a symbolic link", func() string {
			link := filepath.Join(root, "link")
			if err := os.Symlink(filepath.Join(foreign, "rootdir"), link); err != nil {
				t.Fatal(err)
			}
			return filepath.Join(link, "x.sock")
		}(), "belongs to uid 65534"},
	} {
		if err := PrepareDir(c.path); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s (%s): got %v, want an error with %q", c.name, c.path, err, c.want)
		}
	}
	// Root's own directory under a sticky shared one is fine, found or
	// made.
	for _, path := range []string{
		filepath.Join(mk(filepath.Join(sticky, "podnet"), 0o755, 0), "x.sock"),
		filepath.Join(sticky, "made", "x.sock"),
	} {
		if err := PrepareDir(path); err != nil {
			t.Errorf("%s: %v", path, err)
		}
	}
}
