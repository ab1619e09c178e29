package lab

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// procID names a process across restarts of the lab tool: a PID alone may
// be reused after a crash, so the kernel's start time (field 22 of
// /proc/PID/stat, in clock ticks since boot) is recorded beside it and
// checked before anything is signalled.
type procID struct {
	PID   int    `json:"pid,omitempty"`
	Start uint64 `json:"start,omitempty"`
}

// identify records the start time of pid.
func identify(pid int) (procID, error) {
	start, _, err := procStat(pid)
	if err != nil {
		return procID{}, err
	}
	return procID{PID: pid, Start: start}, nil
}

// procStat returns the start time and the state letter of pid.
func procStat(pid int) (start uint64, st byte, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, fmt.Errorf("read process %d: %w", pid, err)
	}
	// The command name (field 2) may contain spaces and parentheses; the
	// fields after the last ')' are plain: 3 is the state, 22 the start.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("parse /proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0, 0, fmt.Errorf("parse /proc/%d/stat: %d fields", pid, len(f))
	}
	start, err = strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("parse /proc/%d/stat start time: %w", pid, err)
	}
	return start, f[0][0], nil
}

// running reports whether p is still the same live process (not a zombie).
func (p procID) running() bool {
	if p.PID <= 0 {
		return false
	}
	start, st, err := procStat(p.PID)
	return err == nil && start == p.Start && st != 'Z' && st != 'X'
}

// same reports whether p's PID still belongs to p, live or a zombie. A
// zombie leader may still have threads exiting, and the files they hold
// open (a daemon's state dir lock) are closed only when the last one is
// gone: a pidfd tells when that is.
func (p procID) same() bool {
	start, _, err := procStat(p.PID)
	return err == nil && start == p.Start
}

// errGone means the process had already exited (or its PID now belongs to
// another process, which must not be touched).
var errGone = errors.New("process not running")

// pidfd opens a pidfd for p and checks, after opening, that the PID still
// belongs to p: from then on the fd cannot refer to any other process.
func (p procID) pidfd() (int, error) {
	if p.PID <= 0 {
		return -1, errGone
	}
	fd, err := unix.PidfdOpen(p.PID, 0)
	if errors.Is(err, unix.ESRCH) {
		return -1, errGone
	}
	if err != nil {
		return -1, fmt.Errorf("pidfd_open %d: %w", p.PID, err)
	}
	if p.Start != 0 && !p.same() {
		unix.Close(fd)
		return -1, errGone
	}
	return fd, nil
}

// signal sends sig to p. It returns errGone when p has already exited
// and been reaped; a zombie takes the signal (and ignores it), so that
// its caller goes on to wait for its last threads.
func (p procID) signal(sig unix.Signal) error {
	fd, err := p.pidfd()
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.PidfdSendSignal(fd, sig, nil, 0); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return errGone
		}
		return fmt.Errorf("signal process %d: %w", p.PID, err)
	}
	return nil
}

// waitExit waits until p has exited, up to timeout. A pidfd becomes
// readable when its process exits, zombie or not, so this waits for the
// event instead of polling /proc.
func (p procID) waitExit(timeout time.Duration) error {
	fd, err := p.pidfd()
	if errors.Is(err, errGone) {
		return nil
	}
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return waitFd(fd, p.PID, timeout)
}

// waitFd polls pidfd fd until readable (exited) or timeout.
func waitFd(fd, pid int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left < 0 {
			left = 0
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, int(left.Milliseconds()))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("wait for process %d: %w", pid, err)
		}
		if n > 0 {
			return nil
		}
		return fmt.Errorf("wait for process %d: still running after %v", pid, timeout)
	}
}

// stop sends sig to every process, waits up to grace for all of them to
// exit, then SIGKILLs the rest and waits for those too. Processes that are
// already gone are fine. It returns the errors of processes that survive.
func stopAll(procs []procID, sig unix.Signal, grace time.Duration) error {
	var live []procID
	for _, p := range procs {
		if err := p.signal(sig); err == nil {
			live = append(live, p)
		}
	}
	deadline := time.Now().Add(grace)
	var errs []error
	for _, p := range live {
		if p.waitExit(max(time.Until(deadline), 0)) == nil {
			continue
		}
		if err := p.signal(unix.SIGKILL); err != nil && !errors.Is(err, errGone) {
			errs = append(errs, err)
			continue
		}
		if err := p.waitExit(5 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
