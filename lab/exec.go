package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Exec runs args inside target's namespace (via ip netns exec) and waits
// for it. target is a node name ("worker1"), a pod name ("test-1") or
// "fabric". For node targets PODNET_SOCKET points at that node's daemon;
// for every target PODNET_DATASTORE_ENDPOINTS points at the lab's etcd
// (when it has one), so `podnet get ippool` and `podnet ipam show` work
// with no flags; PATH starts with the directory of the lab's podnet binary,
// so `podnet` resolves. A command that runs and exits non-zero returns the bare
// *exec.ExitError (so callers can read its exit code); every other failure
// is wrapped with the target.
func (l *Lab) Exec(ctx context.Context, target string, stdin io.Reader, stdout, stderr io.Writer, args ...string) error {
	cmd, err := l.command(ctx, target, args)
	if err != nil {
		return err
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	err = cmd.Run()
	var ee *exec.ExitError
	if err == nil || errors.As(err, &ee) {
		return err
	}
	return fmt.Errorf("exec %s in %s: %w", cmdline(nil, args), target, err)
}

// Output runs args in target like Exec and returns its stdout. On failure
// the error names the command and the target and carries its stderr;
// errors.As still finds the *exec.ExitError.
func (l *Lab) Output(ctx context.Context, target string, args ...string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	err := l.Exec(ctx, target, nil, &stdout, &stderr, args...)
	var ee *exec.ExitError
	if err == nil || !errors.As(err, &ee) {
		return stdout.Bytes(), err
	}
	if msg := strings.TrimSpace(stderr.String()); msg != "" {
		return stdout.Bytes(), fmt.Errorf("exec %s in %s: %w: %s", cmdline(nil, args), target, err, oneLine(msg))
	}
	return stdout.Bytes(), fmt.Errorf("exec %s in %s: %w", cmdline(nil, args), target, err)
}

// command builds the ip netns exec command for target.
func (l *Lab) command(ctx context.Context, target string, args []string) (*exec.Cmd, error) {
	if len(args) == 0 {
		return nil, fmt.Errorf("exec in %s: no command", target)
	}
	ns, env, err := l.targetEnv(target)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, args...)...)
	cmd.Env = env
	l.r.show(nil, cmd.Args)
	return cmd, nil
}

// Netns returns the namespace name of target ("fabric", a node or a pod).
func (l *Lab) Netns(target string) (string, error) {
	ns, _, err := l.targetEnv(target)
	return ns, err
}

// targetEnv resolves target to its namespace and the environment commands
// run with there.
func (l *Lab) targetEnv(target string) (string, []string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	env := prependPath(os.Environ(), binDirs(l.st.RunDir, l.st.Binary)...)
	if ds := l.st.datastore(); ds != "" {
		env = append(env, datastoreEnv+"="+ds)
	}
	if target == "fabric" {
		return fabricNetns(l.st.Name), env, nil
	}
	if target == "external" && l.st.External != nil {
		return l.st.External.Netns, env, nil
	}
	if n := l.st.node(target); n != nil {
		return n.Netns, append(env, "PODNET_SOCKET="+n.Socket), nil
	}
	if p := l.st.pod(target); p != nil {
		return p.Netns, env, nil
	}
	return "", nil, l.unknownTargetLocked(target)
}

func (l *Lab) unknownTarget(target string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.unknownTargetLocked(target)
}

func (l *Lab) unknownTargetLocked(target string) error {
	return fmt.Errorf("%w %q in lab %s (valid: %s)", ErrUnknownTarget, target, l.st.Name, strings.Join(l.st.targets(), ", "))
}

// datastoreEnv is the variable podnet commands find their etcd through
// (resources.EndpointsEnv; not imported, the lab only drives the CLI).
const datastoreEnv = "PODNET_DATASTORE_ENDPOINTS"

// binDirs are the directories Exec puts first in PATH: the binary's own,
// and before it <run dir>/bin when the binary is not called podnet (a
// `go build -o /tmp/pn`, or a test binary), where linkBinary made a
// `podnet` that points at it.
func binDirs(runDir, bin string) []string {
	dirs := []string{filepath.Dir(bin)}
	if filepath.Base(bin) != "podnet" {
		dirs = append([]string{filepath.Join(runDir, "bin")}, dirs...)
	}
	return dirs
}

// linkBinary makes <run dir>/bin/podnet a symlink to bin when bin is not
// called podnet, so `podnet` resolves in Exec all the same.
func linkBinary(runDir, bin string) error {
	if filepath.Base(bin) == "podnet" {
		return nil
	}
	dir := filepath.Join(runDir, "bin")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("link podnet binary: %w", err)
	}
	if err := os.Symlink(bin, filepath.Join(dir, "podnet")); err != nil {
		return fmt.Errorf("link podnet binary: %w", err)
	}
	return nil
}

// prependPath returns env with dirs put first in PATH, and PODNET_SOCKET
// and PODNET_DATASTORE_ENDPOINTS dropped, so a caller's own settings never
// leak into the wrong node or lab.
func prependPath(env []string, dirs ...string) []string {
	out := make([]string, 0, len(env)+1)
	path := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, e := range env {
		switch {
		case strings.HasPrefix(e, "PATH="):
			path = strings.TrimPrefix(e, "PATH=")
		case strings.HasPrefix(e, "PODNET_SOCKET="), strings.HasPrefix(e, datastoreEnv+"="):
		default:
			out = append(out, e)
		}
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		if d := dirs[i]; d != "" && d != "." {
			path = d + string(os.PathListSeparator) + path
		}
	}
	return append(out, "PATH="+path)
}
