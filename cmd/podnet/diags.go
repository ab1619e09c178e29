package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"podnet/api"
	"podnet/internal/buildinfo"
	"podnet/internal/syscheck"
	"podnet/nodeapi"
)

// diagsPartTimeout bounds one part of the bundle, so a daemon or a
// datastore that hangs costs that part only.
const diagsPartTimeout = 30 * time.Second

func newDiagsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "diags [-o FILE]",
		Short: "Write a tar.gz of this node's state for a bug report: status, routes, ports, NAT, BGP, resources, log, ip, sysctls, checks",
		Long: `Collect what describes this node into one tar.gz: the daemon's status,
pods, routes, ports, NAT table and counters, BGP sessions with the
prefixes of each peer, version; the datastore's resources (every kind,
as YAML), IPAM and members; the daemon's log tail; 'ip addr', 'ip route',
'ip link' and the sysctls podnet depends on; and 'node checksystem'.

A part that cannot be collected (the daemon or the datastore does not
answer, no log is readable) does not stop the others: README.txt in the
bundle lists each part with its error. The log is the daemon's standard
error when that is a file, else the systemd journal of its unit
(journalctl), else --log-file.

-o names the file (default podnet-diags-NODE-TIME.tar.gz here); -o -
writes the bundle to standard output.`,
		Args: cobra.NoArgs,
	}
	var file, logFile string
	var logLines int
	cmd.Flags().StringVarP(&file, "output", "o", "", "the bundle's file, or - for standard output (default podnet-diags-NODE-TIME.tar.gz)")
	sock := socketFlag(cmd)
	datastoreFlag(cmd)
	cmd.Flags().StringVar(&logFile, "log-file", "", "the daemon's log file, when it logs to one that diags cannot find by itself")
	cmd.Flags().IntVar(&logLines, "log-lines", 5000, "how many lines of the daemon's log to include")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if logLines <= 0 {
			return usagef("--log-lines %d: want a positive number", logLines)
		}
		d := &diags{socket: *sock, datastore: cmd.Flag("datastore").Value.String(), now: time.Now().UTC()}
		node := "node"
		if st, err := client(d.socket).Status(); err == nil {
			node = st.Node
		} else if h, err := os.Hostname(); err == nil {
			node = h
		}
		d.dir = fmt.Sprintf("podnet-diags-%s-%s", node, d.now.Format("20060102-150405"))
		if file == "" {
			file = d.dir + ".tar.gz"
		}
		d.collect(cmdContext(cmd), logFile, logLines)
		var w io.Writer = cmd.OutOrStdout()
		var f *os.File
		if file != "-" {
			var err error
			if f, err = os.OpenFile(file+".tmp", os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600); err != nil {
				return fmt.Errorf("diags: %w", err)
			}
			w = f
		}
		err := d.write(w)
		if f != nil {
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err == nil {
				err = os.Rename(file+".tmp", file)
			}
			if err != nil {
				os.Remove(file + ".tmp")
			}
		}
		if err != nil {
			return fmt.Errorf("diags: write %s: %w", file, err)
		}
		failed := 0
		for _, p := range d.parts {
			if p.err != nil {
				failed++
			}
		}
		if file != "-" {
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s: %d parts, %d could not be collected (see README.txt inside)\n", file, len(d.parts), failed)
		}
		return nil
	}
	return cmd
}

// diags is one bundle being collected.
type diags struct {
	socket, datastore string
	now               time.Time
	dir               string // the bundle's top directory
	parts             []diagPart
}

// diagPart is one file of the bundle, or why it is missing or partial.
type diagPart struct {
	name string
	what string // what it holds, for README.txt
	data []byte
	err  error
}

func (d *diags) add(name, what string, data []byte, err error) {
	d.parts = append(d.parts, diagPart{name: name, what: what, data: data, err: err})
}

// collect gathers every part; none stops the others.
func (d *diags) collect(ctx context.Context, logFile string, logLines int) {
	sock := []string{}
	if d.socket != "" {
		sock = []string{"--socket", d.socket}
	}
	ds := []string{}
	if d.datastore != "" {
		ds = []string{"--datastore", d.datastore}
	}
	with := func(args []string, extra []string) []string { return append(append([]string{}, args...), extra...) }
	// The daemon's view, through its API, as the commands print it.
	for _, p := range []struct{ name, what string }{
		{"version", "podnet version: this binary's and the daemon's"},
		{"status", "podnet status: node, underlay, pods, routes"},
		{"pod list", "podnet pod list: the node's pods"},
		{"route list", "podnet route list: the switch's route table"},
		{"port stats", "podnet port stats: per-port counters and drops by reason"},
		{"nat list", "podnet nat list: the NAT connection table"},
		{"nat stats", "podnet nat stats: NAT counters and port use"},
		{"node status", "podnet node status --routes: BGP sessions and each peer's prefixes"},
	} {
		args := strings.Fields(p.name)
		if p.name == "node status" {
			args = append(args, "--routes")
		}
		name := strings.ReplaceAll(p.name, " ", "-")
		d.run(ctx, "daemon/"+name+".txt", p.what+" (table)", with(args, sock))
		d.run(ctx, "daemon/"+name+".json", p.what+" (JSON)", with(args, append([]string{"-o", "json"}, sock...)))
	}
	// The datastore: every kind of resource, IPAM, the members.
	for _, k := range api.Kinds() {
		kind := strings.ToLower(k.Kind)
		d.run(ctx, "datastore/"+kind+".yaml", "podnet get "+kind+" -o yaml", with([]string{"get", kind, "-o", "yaml"}, ds))
	}
	d.run(ctx, "datastore/ipam-show.txt", "podnet ipam show --show-blocks", with([]string{"ipam", "show", "--show-blocks"}, ds))
	d.run(ctx, "datastore/ipam-check.txt", "podnet ipam check", with([]string{"ipam", "check"}, ds))
	d.run(ctx, "datastore/status.txt", "podnet datastore status: the etcd members", with([]string{"datastore", "status"}, ds))
	// The machine.
	d.run(ctx, "checksystem.txt", "podnet node checksystem", with([]string{"node", "checksystem"}, append(sock, ds...)))
	for _, c := range [][]string{
		{"ip", "-d", "addr"},
		{"ip", "-d", "-s", "link"},
		{"ip", "route", "show", "table", "all"},
		{"ip", "rule"},
		{"ip", "neigh"},
		{"ip", "netns", "list"},
	} {
		name := "system/" + strings.Join(slicesWithout(c[1:], "-d", "-s"), "-") + ".txt"
		out, err := runTool(ctx, c...)
		d.add(name, strings.Join(c, " "), out, err)
	}
	sysctls, err := readSysctls()
	d.add("system/sysctls.txt", "the sysctls podnet reads or sets", sysctls, err)
	d.addLog(ctx, logFile, logLines)
}

// run runs podnet ARGS in this process, capturing what it prints. Its
// error goes with the part; exit code 3 (a check that found problems)
// keeps the output as the part.
func (d *diags) run(ctx context.Context, name, what string, args []string) {
	var buf bytes.Buffer
	root := newRootCmd()
	root.SetOut(&buf)
	root.SetErr(&buf)
	root.SetArgs(args)
	saved := stdout
	stdout = &buf
	ctx, cancel := context.WithTimeout(ctx, diagsPartTimeout)
	err := root.ExecuteContext(ctx)
	cancel()
	stdout = saved
	switch code := exitCode(err); code {
	case exitOK:
	case exitProblems:
		// A check that ran and found problems: its output is the part.
		what += "; it found problems (exit code 3): " + err.Error()
		err = nil
	default:
		err = fmt.Errorf("podnet %s: %w (exit code %d)", strings.Join(args, " "), err, code)
	}
	d.add(name, what, buf.Bytes(), err)
}

func slicesWithout(ss []string, drop ...string) []string {
	var out []string
	for _, s := range ss {
		keep := true
		for _, x := range drop {
			keep = keep && s != x
		}
		if keep {
			out = append(out, s)
		}
	}
	return out
}

// runTool runs a system tool; its output is kept even when it fails.
func runTool(ctx context.Context, argv ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, diagsPartTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		err = fmt.Errorf("%s: %w", strings.Join(argv, " "), err)
	}
	return out, err
}

// diagSysctls are the sysctls podnet depends on or that change how the
// node's kernel treats pod traffic.
var diagSysctls = []string{
	"net/ipv4/ip_forward",
	"net/ipv4/conf/all/rp_filter",
	"net/ipv4/conf/default/rp_filter",
	"net/ipv4/conf/all/forwarding",
	"net/ipv4/ip_local_port_range",
	"net/ipv4/ip_unprivileged_port_start",
	"net/ipv4/ip_default_ttl",
	"net/ipv4/ip_no_pmtu_disc",
	"net/core/rmem_max",
	"net/core/wmem_max",
	"net/core/netdev_max_backlog",
	"net/ipv4/conf/podnet0/rp_filter",
	"net/ipv4/conf/podnet0/forwarding",
	"net/ipv6/conf/podnet0/disable_ipv6",
}

// readSysctls reads diagSysctls and each interface's rp_filter; a sysctl
// that is missing says so in its line, and the part fails only when none
// can be read.
func readSysctls() ([]byte, error) {
	var b bytes.Buffer
	names := append([]string{}, diagSysctls...)
	if ents, err := os.ReadDir("/proc/sys/net/ipv4/conf"); err == nil {
		for _, e := range ents {
			if n := e.Name(); n != "all" && n != "default" && n != "podnet0" {
				names = append(names, "net/ipv4/conf/"+n+"/rp_filter")
			}
		}
	}
	read := 0
	for _, n := range names {
		key := strings.ReplaceAll(n, "/", ".")
		v, err := os.ReadFile("/proc/sys/" + n)
		if err != nil {
			fmt.Fprintf(&b, "%s: %v\n", key, errors.Unwrap(err))
			continue
		}
		read++
		fmt.Fprintf(&b, "%s = %s\n", key, strings.Join(strings.Fields(string(v)), " "))
	}
	if read == 0 {
		return b.Bytes(), errors.New("no sysctl readable under /proc/sys")
	}
	return b.Bytes(), nil
}

// addLog adds the tail of the daemon's log: --log-file; else the file
// the running daemon's standard error goes to; else the journal of the
// systemd unit it runs in (or of podnet.service when no daemon answers,
// the case of a daemon that crashed). When none of these can be read, the
// part says why.
func (d *diags) addLog(ctx context.Context, logFile string, lines int) {
	const name = "daemon.log"
	if logFile != "" {
		data, err := tailFile(logFile, lines)
		d.add(name, "the last lines of "+logFile, data, err)
		return
	}
	path := d.socket
	if path == "" {
		path = nodeapi.DefaultClientSocket()
	}
	var tried []string
	unit := "podnet.service"
	if pid, err := syscheck.DaemonPID(path); err != nil {
		tried = append(tried, "no daemon answers on "+path+" ("+err.Error()+")")
	} else {
		fd2 := fmt.Sprintf("/proc/%d/fd/2", pid)
		target, _ := os.Readlink(fd2)
		if fi, err := os.Stat(fd2); err == nil && fi.Mode().IsRegular() {
			data, err := tailFile(fd2, lines)
			d.add(name, fmt.Sprintf("the last lines of the daemon's standard error, %s (pid %d)", target, pid), data, err)
			return
		}
		tried = append(tried, fmt.Sprintf("the daemon (pid %d) writes its log to %s, not a file", pid, target))
		if u := systemdUnit(pid); u != "" {
			unit = u
		} else {
			unit = ""
			tried = append(tried, "and it is not in a systemd unit")
		}
	}
	if unit != "" {
		out, err := runTool(ctx, "journalctl", "--no-pager", "-o", "short-iso", "-n", fmt.Sprint(lines), "-u", unit)
		if err == nil && !bytes.Contains(out, []byte("-- No entries --")) && len(bytes.TrimSpace(out)) > 0 {
			d.add(name, "journalctl -u "+unit+": the last lines of the daemon's journal", out, nil)
			return
		}
		if err != nil {
			tried = append(tried, fmt.Sprintf("%v: %s", err, bytes.TrimSpace(out)))
		} else {
			tried = append(tried, "the journal has no entries of "+unit+": "+strings.Join(strings.Fields(string(out)), " "))
		}
	}
	d.add(name, "the daemon's log", nil, errors.New("no log found: "+strings.Join(tried, "; ")+"; give --log-file if the daemon logs to a file"))
}

// systemdUnit is the service whose cgroup holds pid ("" when none).
func systemdUnit(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return ""
	}
	for line := range strings.SplitSeq(strings.TrimSpace(string(b)), "\n") {
		for _, seg := range strings.Split(line, "/") {
			if strings.HasSuffix(seg, ".service") {
				return seg
			}
		}
	}
	return ""
}

// tailFile returns the last n lines of path, reading at most its last
// 8 MiB.
func tailFile(path string, n int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	const most = 8 << 20
	if end, err := f.Seek(0, io.SeekEnd); err == nil && end > most {
		f.Seek(end-most, io.SeekStart)
	} else {
		f.Seek(0, io.SeekStart)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, err
	}
	data = bytes.TrimRight(data, "\n")
	for i := len(data) - 1; i >= 0; i-- {
		if data[i] == '\n' {
			if n--; n == 0 {
				return append(data[i+1:], '\n'), nil
			}
		}
	}
	if len(data) > 0 {
		data = append(data, '\n')
	}
	return data, nil
}

// write writes the bundle: README.txt first, then every part that has
// data (a part that failed keeps what it printed).
func (d *diags) write(w io.Writer) error {
	zw := gzip.NewWriter(w)
	tw := tar.NewWriter(zw)
	if err := d.writeFile(tw, "README.txt", d.readme()); err != nil {
		return err
	}
	for _, p := range d.parts {
		if len(p.data) == 0 && p.err != nil {
			continue
		}
		if err := d.writeFile(tw, p.name, p.data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return zw.Close()
}

func (d *diags) writeFile(tw *tar.Writer, name string, data []byte) error {
	if err := tw.WriteHeader(&tar.Header{Name: d.dir + "/" + name, Mode: 0o644, Size: int64(len(data)), ModTime: d.now, Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	_, err := tw.Write(data)
	return err
}

// readme describes the bundle and lists every part, with the error of
// each that could not be collected whole.
func (d *diags) readme() []byte {
	var b bytes.Buffer
	in := versionLine(buildinfo.Get())
	fmt.Fprintf(&b, "podnet diagnostics bundle, collected %s by %s\n", d.now.Format(time.RFC3339), in)
	host, _ := os.Hostname()
	fmt.Fprintf(&b, "host %s, daemon socket %s\n\n", host, orDefault(d.socket, nodeapi.DefaultClientSocket()))
	failed := 0
	for _, p := range d.parts {
		if p.err != nil {
			failed++
		}
	}
	fmt.Fprintf(&b, "%d parts, %d could not be collected (or only in part):\n\n", len(d.parts), failed)
	for _, p := range d.parts {
		status := "ok"
		if p.err != nil {
			status = "FAILED"
			if len(p.data) == 0 {
				status += " (no file)"
			}
		}
		fmt.Fprintf(&b, "%-34s %s\n    %s\n", p.name, status, p.what)
		if p.err != nil {
			fmt.Fprintf(&b, "    error: %s\n", strings.ReplaceAll(strings.TrimSpace(p.err.Error()), "\n", "\n    "))
		}
	}
	return b.Bytes()
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
