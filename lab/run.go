package lab

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"
)

// runner runs the iproute2 and helper commands that build a lab. Every
// command goes through it so that --verbose can show each one: the lab is a
// teaching tool, and the printed commands rebuild it by hand.
type runner struct {
	verbose bool
	// out gets progress lines (and commands when verbose); nil = discard.
	out io.Writer
	// cmdOut gets the printed commands; os.Stderr when out is nil.
	cmdOut io.Writer
}

func newRunner(verbose bool, progress io.Writer) runner {
	r := runner{verbose: verbose, out: progress, cmdOut: progress}
	if r.cmdOut == nil {
		r.cmdOut = os.Stderr
	}
	return r
}

// progressf prints one progress line.
func (r runner) progressf(format string, args ...any) {
	if r.out != nil {
		fmt.Fprintf(r.out, format+"\n", args...)
	}
}

// show prints a command line when verbose.
func (r runner) show(env []string, args []string) {
	if r.verbose {
		fmt.Fprintf(r.cmdOut, "+ %s\n", cmdline(env, args))
	}
}

// run runs args[0] with args[1:] and returns its stdout. The error names the
// command and carries its stderr.
func (r runner) run(ctx context.Context, args ...string) ([]byte, error) {
	return r.runEnv(ctx, nil, args...)
}

// runEnv is run with extra environment variables (KEY=VALUE).
func (r runner) runEnv(ctx context.Context, env []string, args ...string) ([]byte, error) {
	r.show(env, args)
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	// A command stuck in a namespace being torn down must not hang Up's
	// error path forever after ctx is cancelled.
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			// Killed because the caller gave up: say so, not "signal: killed".
			return stdout.Bytes(), fmt.Errorf("run %s: %w", cmdline(env, args), context.Cause(ctx))
		}
		if msg := strings.TrimSpace(stderr.String()); msg != "" {
			return stdout.Bytes(), fmt.Errorf("run %s: %w: %s", cmdline(env, args), err, oneLine(msg))
		}
		return stdout.Bytes(), fmt.Errorf("run %s: %w", cmdline(env, args), err)
	}
	return stdout.Bytes(), nil
}

// cmdline renders a command the way a shell user would type it.
func cmdline(env []string, args []string) string {
	var b strings.Builder
	for _, e := range env {
		b.WriteString(shellQuote(e))
		b.WriteByte(' ')
	}
	for i, a := range args {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(shellQuote(a))
	}
	return b.String()
}

func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(c rune) bool {
		return !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("-_./:=,+@%", c))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// oneLine joins the lines of a multi-line message so errors stay one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " | ")), " ")
}
