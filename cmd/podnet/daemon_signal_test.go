package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// TestDaemonSignals: the daemon says it is stopping (STOPPING=1) as soon
// as SIGTERM arrives, not once its shutdown is over, and a second SIGTERM
// kills a shutdown that hangs. runUntilSignal runs in a child process
// whose shutdown never ends.
func TestDaemonSignals(t *testing.T) {
	if os.Getenv("PODNET_TEST_SIGNALS") == "1" {
		runUntilSignal(func(ctx context.Context) error {
			fmt.Println("running")
			<-ctx.Done()
			select {} // a shutdown that hangs
		}, func() { fmt.Println("stopping") })
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestDaemonSignals$")
	cmd.Env = append(os.Environ(), "PODNET_TEST_SIGNALS=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	lines := make(chan string, 4)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	expect := func(want, after string) {
		t.Helper()
		select {
		case l := <-lines:
			if l != want {
				t.Fatalf("%s: the child said %q, want %q", after, l, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the child did not say %q within 10s", after, want)
		}
	}
	expect("running", "at start")
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	expect("stopping", "SIGTERM")
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGTERM {
			t.Fatalf("the child ended with %v after a second SIGTERM; want killed by it", err)
		}
		exited <- err // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("the child still runs 10s after a second SIGTERM")
	}
}
