package bench

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"podnet/lab"
)

// Preflight checks what a run of cfg needs before anything is built and
// returns one sentence per problem.
func Preflight(cfg Config) error {
	var errs []error
	if os.Geteuid() != 0 {
		errs = append(errs, errors.New("podnet bench must run as root: it creates network namespaces, veths and TAPs (try sudo)"))
	}
	need := map[string]string{
		"iperf3": "iperf3 is not installed: bulk TCP is measured with it (apt-get install iperf3, or scripts/deps.sh)",
		"ping":   "ping is not installed: latency is measured with it (apt-get install iputils-ping)",
		"ip":     "ip is not installed: the labs are built with it (apt-get install iproute2)",
	}
	scen := cfg.Scenarios
	if len(scen) == 0 || slices.Contains(scen, ScenarioNAT) {
		need["nft"] = "nft is not installed: the kernel MASQUERADE reference of the NAT paths needs it (apt-get install nftables), or leave out nat with --scenarios"
	}
	for _, tool := range []string{"ip", "iperf3", "ping", "nft"} {
		if msg, ok := need[tool]; ok {
			if _, err := exec.LookPath(tool); err != nil {
				errs = append(errs, errors.New(msg))
			}
		}
	}
	prefix := cfg.LabPrefix
	if prefix == "" {
		prefix = DefaultLabPrefix
	}
	if in := labsInTheWay(prefix); len(in) > 0 {
		errs = append(errs, fmt.Errorf("a lab or namespace the suite builds is already there (%s), left by another run: remove it with podnet lab down --name NAME (or ip netns del NAME)",
			strings.Join(in, ", ")))
	}
	return errors.Join(errs...)
}

// labsInTheWay lists the suite's labs (run dir or namespaces) and
// scratch namespaces that exist now.
func labsInTheWay(prefix string) []string {
	var in []string
	out, _ := exec.Command("ip", "netns", "list").Output()
	var nss []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			nss = append(nss, f[0])
		}
	}
	// Convergence and pod add build labs of fixed names.
	for _, name := range append(LabNames(prefix), "pnbenchc", "pnbenchadd") {
		_, err := os.Stat(lab.DefaultRunDir(name))
		if err == nil || slices.ContainsFunc(nss, func(ns string) bool { return strings.HasPrefix(ns, name+"-") }) {
			in = append(in, "lab "+name)
		}
	}
	for _, ns := range []string{prefix + "-vetha", prefix + "-vethb", prefix + "-probe"} {
		if slices.Contains(nss, ns) {
			in = append(in, "namespace "+ns)
		}
	}
	return in
}

// WriteDir writes results.json, results.md and the charts into dir.
func WriteDir(r *Report, dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("bench output: %w", err)
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("bench output: encode results: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), append(b, '\n'), 0o644); err != nil {
		return nil, fmt.Errorf("bench output: %w", err)
	}
	charts, err := WriteCharts(r, dir)
	if err != nil {
		return nil, err
	}
	f, err := os.Create(filepath.Join(dir, "results.md"))
	if err != nil {
		return nil, fmt.Errorf("bench output: %w", err)
	}
	var svgs []string
	for _, c := range charts {
		if strings.HasSuffix(c, ".svg") {
			svgs = append(svgs, c)
		}
	}
	WriteMarkdown(f, r, svgs)
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("bench output: %w", err)
	}
	return append([]string{"results.json", "results.md"}, charts...), nil
}
