package bench

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"podnet/internal/buildinfo"
)

// NewMeta describes this machine and a run of cfg, starting now.
func NewMeta(cfg Config) Meta {
	m := Meta{
		Command:   cfg.Command,
		Commit:    commit(cfg.Binary),
		Kernel:    kernelRelease(),
		CPUModel:  cpuModel(),
		CPUs:      runtime.NumCPU(),
		GoVersion: runtime.Version(),
		Date:      time.Now().UTC().Format(time.RFC3339),
		Rounds:    cfg.Rounds,
		Quick:     cfg.Quick,
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			m.LoadAverage1m, _ = strconv.ParseFloat(f[0], 64)
		}
	}
	return m
}

// commit is the revision the daemon under test was built from: this
// binary's own stamp (internal/buildinfo: the Makefile's link-time value,
// else Go's VCS stamp) when it is the binary under test, else the git
// checkout the binary lives in (bin/podnet of a work tree).
func commit(binary string) string {
	if binary == "" {
		binary, _ = os.Executable()
	}
	if self, _ := os.Executable(); binary != "" && self == binary {
		if in := buildinfo.Get(); in.Commit != "unknown" {
			// The Makefile builds with -buildvcs=false; its version
			// (git describe --dirty) says what Go's stamp cannot.
			if in.Modified || strings.HasSuffix(in.Version, "-dirty") {
				return in.Commit + "-dirty"
			}
			return in.Commit
		}
	}
	if binary == "" {
		return "unknown"
	}
	dir := filepath.Dir(binary)
	out, err := exec.Command("git", "-C", dir, "rev-parse", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	rev := strings.TrimSpace(string(out))
	if st, err := exec.Command("git", "-C", dir, "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(strings.TrimSpace(string(st))) > 0 {
		rev += "-dirty"
	}
	return rev
}

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}
