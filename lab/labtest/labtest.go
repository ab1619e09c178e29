// Package labtest helps tests build podnet labs: it builds the podnet
// binary once per test process, gives each lab a unique name and removes
// the lab when the test ends, even when it fails.
package labtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"podnet/lab"
)

// upTimeout bounds one lab.Up from a test.
const upTimeout = 2 * time.Minute

type builtBinary struct {
	once sync.Once
	path string
	err  error
}

// build is Binary's podnet, plain the one of PlainBinary.
var build, plain builtBinary

// Binary returns the path of a podnet binary built from the module that
// contains the test's working directory. It is built once per test process
// (go's build cache makes the rebuild cheap) into one fixed place per
// module, $TMPDIR/podnet-labtest-<hash>/podnet, replaced atomically, so
// test runs do not pile up binaries. A build failure fails the test with
// the compiler output.
func Binary(t testing.TB) string {
	t.Helper()
	build.once.Do(func() { build.path, build.err = buildPodnet(raceEnabled) })
	if build.err != nil {
		t.Fatalf("labtest: build podnet: %v", build.err)
	}
	return build.path
}

// PlainBinary is Binary built without the race detector, also when the
// tests run under it: for tests that measure the daemon (its memory, how
// many pods a second it takes), which would otherwise measure the race
// detector's own cost (several times the memory and the time).
func PlainBinary(t testing.TB) string {
	t.Helper()
	if !raceEnabled {
		return Binary(t)
	}
	plain.once.Do(func() { plain.path, plain.err = buildPodnet(false) })
	if plain.err != nil {
		t.Fatalf("labtest: build podnet: %v", plain.err)
	}
	return plain.path
}

func buildPodnet(race bool) (string, error) {
	gobin := goBinary()
	out, err := exec.Command(gobin, "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("go env GOMOD: not inside a module")
	}
	root := filepath.Dir(gomod)
	sum := sha256.Sum256([]byte(root))
	dir := filepath.Join(os.TempDir(), "podnet-labtest-"+hex.EncodeToString(sum[:4]))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("make build dir: %w", err)
	}
	name := "podnet"
	if race {
		name = "podnet-race"
	}
	bin := filepath.Join(dir, name)
	// Build beside it and rename: another test process may be running
	// the current binary, and a rename never changes a file being run.
	tmp := fmt.Sprintf("%s.%d.tmp", bin, os.Getpid())
	args := []string{"build", "-o", tmp}
	if race {
		// The daemons' data and control planes are then checked too; a
		// race makes the daemon exit, which fails the test that saw it.
		args = append(args, "-race")
		os.Setenv("GORACE", "halt_on_error=1 atexit_sleep_ms=0")
	}
	cmd := exec.Command(gobin, append(args, "podnet/cmd/podnet")...)
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("go build podnet/cmd/podnet in %s: %w\n%s", root, err, stderr.String())
	}
	if err := os.Rename(tmp, bin); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("install podnet test binary: %w", err)
	}
	return bin, nil
}

// RequireRoot fails the test (it does not skip) when not running as root:
// labs need namespaces, and a silently skipped integration test hides
// breakage.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("labtest: this test builds network namespaces and must run as root (euid %d); run it with sudo or in CI", os.Geteuid())
	}
}

// Name returns a fresh lab name, "t" and 5 random lowercase characters,
// so tests can run in parallel and beside a hand-made lab.
func Name() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 5)
	rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return "t" + string(b)
}

// Up builds a lab for t. It fills cfg.Binary (Binary(t)) unless cfg.Binary
// is set or cfg.NoDaemon is set, and cfg.Name (Name()) unless set, and
// fails the test if lab.Up fails. The lab is removed in t.Cleanup, also
// when the test fails; a failed test first gets the tail of the lab's
// etcd.log and of each node's daemon.log in its output.
func Up(t *testing.T, cfg lab.Config) *lab.Lab {
	t.Helper()
	RequireRoot(t)
	if cfg.Binary == "" && !cfg.NoDaemon {
		cfg.Binary = Binary(t)
	}
	if cfg.Name == "" {
		cfg.Name = Name()
	}
	var l *lab.Lab
	// Registered before Up: if Up panics or the test is killed between the
	// steps, the sweep by name still removes what exists.
	t.Cleanup(func() {
		if l != nil && t.Failed() {
			logDaemons(t, l)
		}
		var err error
		if l != nil {
			err = l.Down()
		} else {
			err = lab.Teardown(lab.Config{Name: cfg.Name, RunDir: cfg.RunDir})
		}
		if err != nil {
			t.Errorf("labtest: remove lab %s: %v", cfg.Name, err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), upTimeout)
	defer cancel()
	var err error
	l, err = lab.Up(ctx, cfg)
	if err != nil {
		t.Fatalf("labtest: lab up %s: %v", cfg.Name, err)
	}
	return l
}

// logDaemons copies the end of the lab's etcd.log and of each node's
// daemon.log into the test log.
func logDaemons(t *testing.T, l *lab.Lab) {
	if lines := l.EtcdLogTail(40); len(lines) > 0 {
		t.Logf("labtest: last lines of %s/etcd.log (datastore):\n\t%s", l.RunDir(), strings.Join(lines, "\n\t"))
	}
	for _, n := range l.Status().Nodes {
		lines := l.LogTail(n.Name, 40)
		if len(lines) == 0 {
			continue
		}
		t.Logf("labtest: last lines of %s (%s):\n\t%s", n.Log, n.Name, strings.Join(lines, "\n\t"))
	}
	// Last, where a shortened test log keeps them: a daemon that died of a
	// panic or of a race the race detector found wrote why before its
	// last lines, which may be only the goroutine dump.
	for _, n := range l.Status().Nodes {
		if lines := crashReport(n.Log, 80); len(lines) > 0 {
			t.Logf("labtest: %s's daemon crashed; from %s:\n\t%s", n.Name, n.Log, strings.Join(lines, "\n\t"))
		}
	}
}

// crashReport returns up to n lines of path from its first panic, fatal
// error or data race report, or nothing when it has none.
func crashReport(path string, n int) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	for i, ln := range lines {
		if strings.HasPrefix(ln, "panic: ") || strings.HasPrefix(ln, "fatal error: ") || strings.HasPrefix(ln, "WARNING: DATA RACE") {
			return lines[i:min(i+n, len(lines))]
		}
	}
	return nil
}

// goBinary is the go command: from PATH, else where the Go
// distribution installs itself (as the Makefile looks for it).
func goBinary() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "/usr/local/go/bin/go"
}
