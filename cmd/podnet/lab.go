package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"podnet/lab"
)

// newLabCmd is `podnet lab`: build, inspect, enter and remove a cluster of
// network namespaces on this machine.
func newLabCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "lab",
		Short: "Build a podnet cluster from network namespaces on this machine",
		Long: `podnet lab builds a whole cluster on one machine: a fabric bridge
(NAME-fabric, br0 10.77.0.1/24), one etcd datastore for the lab
(/run/podnet/lab/NAME/etcd.sock), nodes NAME-worker<K> running podnet daemon,
and pods NAME-test-<J> with addresses from IPAM, serving HTTP on port 80.
More pods come and go with 'lab pod add|del' and 'lab scale'; 'lab graph'
draws the lab and 'lab tour' walks the overlay lesson in it. It needs root.

--name picks the lab (default $PODNET_LAB, else podnet) and may come
anywhere on the command line; 'eval "$(podnet lab env --name NAME)"' makes
NAME the default for this shell and points podnet's resource, IPAM and
node commands on the host at that lab.`,
	}
	name := cmd.PersistentFlags().String("name", defaultLabName(), "lab name: prefix of all its namespaces (^[a-z][a-z0-9]{0,11}$; default $"+labEnv+", else "+lab.DefaultName+")")
	cmd.AddCommand(newLabUpCmd(name), newLabStatusCmd(name), newLabExecCmd(name), newLabDownCmd(name),
		newLabListCmd(), newLabEnvCmd(name), newLabGraphCmd(name), newLabIPCmd(name), newLabTourCmd(name), newLabTraceCmd(name), newLabCaptureCmd(name), newLabPodCmd(name), newLabScaleCmd(name),
		newLabEventsCmd(name), newLabSoakCmd(name), newLabServeHTTPCmd(), newLabServeUDPEchoCmd())
	return cmd
}

// labEnv names the default lab, as `podnet lab env` sets it.
const labEnv = "PODNET_LAB"

func defaultLabName() string {
	if n := os.Getenv(labEnv); n != "" {
		return n
	}
	return lab.DefaultName
}

func newLabUpCmd(name *string) *cobra.Command {
	var (
		cfg  lab.Config
		pods int
	)
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Create a lab: fabric, nodes with daemons, pods",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Name = *name
			cfg.Pods = pods
			if pods == 0 {
				cfg.Pods = lab.NoPods
			}
			if err := checkLabUpFlags(cfg, pods); err != nil {
				return err
			}
			cfg.Progress = cmd.OutOrStdout()
			// An interrupted up cancels ctx; lab.Up then tears down what
			// it made before returning.
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			l, err := lab.Up(ctx, cfg)
			if err != nil {
				return flatten(err)
			}
			printLabSummary(cmd.OutOrStdout(), l.Status())
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&cfg.Nodes, "nodes", lab.DefaultNodes, fmt.Sprintf("number of nodes (1..%d)", lab.MaxNodes))
	f.IntVar(&pods, "pods", lab.DefaultPods, "number of pods (0 = none)")
	f.BoolVar(&cfg.NoDaemon, "no-daemon", false, "build only namespaces and the fabric: no daemons, no pods")
	f.StringArrayVar(&cfg.DaemonArgs, "daemon-arg", nil, "extra flag for every podnet daemon (repeatable)")
	f.IntVar(&cfg.Subnets, "subnets", 1, "underlay subnets, 1 or 2 (2: a routed fabric between odd and even workers, for CrossSubnet)")
	f.StringVar(&cfg.Encap, "encap", lab.EncapIPIP, "between nodes: ipip, vxlan, crosssubnet (VXLAN across subnets only), ipip-crosssubnet or none")
	f.StringVar(&cfg.HTTPServer, "http-server", "", `pod HTTP server: "nginx", "builtin" or "" (nginx if on PATH)`)
	f.BoolVarP(&cfg.Verbose, "verbose", "v", false, "print every command the lab runs")
	return cmd
}

// checkLabUpFlags refuses, as usage errors, the values of lab up's flags
// that lab.Config would refuse or, being zero, take for its defaults.
func checkLabUpFlags(cfg lab.Config, pods int) error {
	if err := checkLabName(cfg.Name); err != nil {
		return err
	}
	if cfg.Nodes < 1 || cfg.Nodes > lab.MaxNodes {
		return usagef("--nodes %d: must be 1..%d", cfg.Nodes, lab.MaxNodes)
	}
	if pods < 0 {
		return usagef("--pods %d: must be 0 or more", pods)
	}
	if !cfg.NoDaemon && pods > cfg.Nodes*lab.MaxPodsPerNode {
		return usagef("--pods %d: at most %d per node (%d with %d nodes)", pods, lab.MaxPodsPerNode, cfg.Nodes*lab.MaxPodsPerNode, cfg.Nodes)
	}
	if cfg.Subnets < 1 || cfg.Subnets > 2 {
		return usagef("--subnets %d: must be 1 or 2", cfg.Subnets)
	}
	switch cfg.Encap {
	case lab.EncapIPIP, lab.EncapVXLAN, lab.EncapCrossSubnet, lab.EncapIPIPCrossSubnet, lab.EncapNone:
	default:
		return usagef("--encap %q: want %s, %s, %s, %s or %s", cfg.Encap,
			lab.EncapIPIP, lab.EncapVXLAN, lab.EncapCrossSubnet, lab.EncapIPIPCrossSubnet, lab.EncapNone)
	}
	switch cfg.HTTPServer {
	case "", lab.HTTPNginx, lab.HTTPBuiltin:
	default:
		return usagef("--http-server %q: want %q, %q or \"\" (nginx if on PATH)", cfg.HTTPServer, lab.HTTPNginx, lab.HTTPBuiltin)
	}
	return nil
}

// checkLabName refuses a bad --name (or $PODNET_LAB) as a usage error.
func checkLabName(name string) error {
	if err := lab.ValidateName(name); err != nil {
		return usagef("--name: %v", err)
	}
	return nil
}

// printLabSummary prints the node and pod tables and a hint to try.
func printLabSummary(w io.Writer, s lab.Status) {
	fmt.Fprintf(w, "\nlab %s is up (run dir %s)\n", s.Name, s.RunDir)
	printDatastore(w, s)
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tNETNS\tADDRESS\tDAEMON")
	for _, n := range s.Nodes {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", n.Name, n.Netns, n.Address, daemonCell(n))
	}
	tw.Flush()
	if len(s.Pods) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(tw, "POD\tNODE\tIP")
		for _, p := range s.Pods {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", p.Name, p.Node, p.IP)
		}
		tw.Flush()
	}
	fmt.Fprintln(w)
	switch {
	case len(s.Pods) >= 2:
		fmt.Fprintf(w, "try: podnet lab exec%s %s -- ping -c3 %s\n", nameFlag(s.Name), s.Pods[0].Name, s.Pods[1].IP)
	case len(s.Nodes) >= 2:
		fmt.Fprintf(w, "try: podnet lab exec%s %s -- ping -c3 %s\n", nameFlag(s.Name), s.Nodes[0].Name, s.Nodes[1].Address.Addr())
	case len(s.Nodes) == 1:
		fmt.Fprintf(w, "try: podnet lab exec%s %s -- ping -c3 %s\n", nameFlag(s.Name), s.Nodes[0].Name, s.Fabric.Address.Addr())
	}
}

// printDatastore prints the lab's etcd endpoint and how to use it from the
// host; nothing for a lab without one.
func printDatastore(w io.Writer, s lab.Status) {
	if s.Datastore == "" {
		return
	}
	state := ""
	if !s.EtcdRunning {
		state = fmt.Sprintf(" [etcd pid %d not running]", s.EtcdPID)
	}
	fmt.Fprintf(w, "datastore: %s (export PODNET_DATASTORE_ENDPOINTS=%s to use podnet get/ipam from the host)%s\n",
		s.Datastore, s.Datastore, state)
	if e := s.External; e != nil {
		fmt.Fprintf(w, "external:  %s in %s: http :%d (GET /whoami shows the client it sees), udp echo :%d, ping; no route to any pool: pods reach it only through NAT outgoing\n",
			e.Address.Addr(), e.Netns, e.HTTPPort, e.UDPPort)
	}
}

func daemonCell(n lab.NodeStatus) string {
	switch {
	case n.PID == 0:
		return "-"
	case n.Running:
		return "running(" + strconv.Itoa(n.PID) + ")"
	default:
		return "exited(" + strconv.Itoa(n.PID) + ")"
	}
}

// nameFlag is " --name NAME" unless name is the default.
func nameFlag(name string) string {
	if name == lab.DefaultName {
		return ""
	}
	return " --name " + name
}

func newLabStatusCmd(name *string) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show a lab's nodes and pods",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := openLab(*name)
			if err != nil {
				return err
			}
			s := l.Status()
			w := cmd.OutOrStdout()
			if output == "json" {
				return printJSON(cmd, w, s)
			}
			printLabStatus(w, s)
			if g, err := l.Graph(cmd.Context()); err != nil {
				fmt.Fprintf(w, "\n(no diagram: %v)\n", err)
			} else {
				fmt.Fprintln(w)
				g.Write(w, lab.GraphText)
			}
			return nil
		},
	}
	outputFlagVar(cmd, &output, nil, formatTable, formatJSON)
	return cmd
}

func printLabStatus(w io.Writer, s lab.Status) {
	fmt.Fprintf(w, "lab %s (run dir %s)\n", s.Name, s.RunDir)
	printDatastore(w, s)
	fmt.Fprintf(w, "fabric %s: %s %s\n\n", s.Fabric.Netns, s.Fabric.Bridge, s.Fabric.Address)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tNETNS\tADDRESS\tDAEMON\tSOCKET")
	for _, n := range s.Nodes {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", n.Name, n.Netns, n.Address, daemonCell(n), n.Socket)
	}
	tw.Flush()
	if len(s.Pods) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(tw, "POD\tNODE\tNETNS\tIP\tHTTP")
		for _, p := range s.Pods {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\n", p.Name, p.Node, p.Netns, p.IP, p.HTTPPID)
		}
		tw.Flush()
	}
}

// openLab opens lab name; when it is not up the error names the labs that
// are, or says how to start one.
func openLab(name string) (*lab.Lab, error) {
	if err := checkLabName(name); err != nil {
		return nil, err
	}
	l, err := lab.Open(name)
	if !errors.Is(err, lab.ErrNotFound) {
		return l, err
	}
	return nil, notUp(name)
}

func notUp(name string) error {
	names, err := lab.List()
	if err != nil {
		return err
	}
	if len(names) == 0 {
		return fmt.Errorf("no lab is up; start one with: podnet lab up%s", nameFlag(name))
	}
	return fmt.Errorf("lab %s is not up; labs up: %s (pick one with --name)", name, strings.Join(names, ", "))
}

func newLabExecCmd(name *string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "exec [--name NAME] TARGET [--name NAME] -- CMD [ARG...]",
		Short: "Run a command in a lab namespace (fabric, a node or a pod)",
		Long: `Run CMD inside TARGET's network namespace: "fabric", a node (worker1; podnet
commands there talk to that node's daemon) or a pod (test-1). Everywhere,
PODNET_DATASTORE_ENDPOINTS points at the lab's etcd, so 'podnet get ippool'
and 'podnet ipam show' work. The exit code is CMD's.`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			// Flag parsing stops at TARGET, so a "--" after it is still here,
			// and so are our flags between TARGET and "--".
			target, argv, err := splitExecArgs(args, name)
			if err != nil {
				return err
			}
			l, err := openLab(*name)
			if err != nil {
				return err
			}
			// Ctrl-C reaches CMD from the terminal by itself: swallow ours
			// so we live to pass on CMD's exit code. A handler, unlike
			// signal.Ignore, is not inherited by CMD.
			swallow := make(chan os.Signal, 1)
			signal.Notify(swallow, os.Interrupt)
			defer signal.Stop(swallow)
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM)
			defer stop()
			err = l.Exec(ctx, target, os.Stdin, os.Stdout, os.Stderr, argv...)
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code := ee.ExitCode()
				if code < 0 {
					code = 128 + int(ee.Sys().(syscall.WaitStatus).Signal())
				}
				os.Exit(code)
			}
			return err
		},
	}
	// Flags after TARGET belong to CMD (ping -c3), not to us, unless a
	// "--" follows them.
	cmd.Flags().SetInterspersed(false)
	return cmd
}

// splitExecArgs splits `lab exec`'s arguments into TARGET and CMD. Right
// after TARGET, --name NAME (or --name=NAME) still sets *name, so it is
// never silently taken for CMD; a "--" then starts CMD.
func splitExecArgs(args []string, name *string) (string, []string, error) {
	const usage = "usage: podnet lab exec [--name NAME] TARGET -- CMD [ARG...]"
	target, rest := args[0], args[1:]
	for len(rest) > 0 {
		if f := rest[0]; f == "--name" && len(rest) > 1 {
			*name, rest = rest[1], rest[2:]
		} else if v, ok := strings.CutPrefix(f, "--name="); ok {
			*name, rest = v, rest[1:]
		} else {
			break
		}
	}
	if len(rest) > 0 && rest[0] == "--" {
		rest = rest[1:]
	}
	if len(rest) == 0 {
		return "", nil, usagef("no command: %s", usage)
	}
	return target, rest, nil
}

func newLabDownCmd(name *string) *cobra.Command {
	var verbose bool
	cmd := &cobra.Command{
		Use:   "down",
		Short: "Remove a lab: its processes (etcd too), namespaces and run dir",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkLabName(*name); err != nil {
				return err
			}
			err := lab.Teardown(lab.Config{Name: *name, Verbose: verbose, Progress: progressOut(verbose, cmd.OutOrStdout())})
			if err != nil {
				return flatten(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "lab %s removed\n", *name)
			return nil
		},
	}
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "print every command")
	return cmd
}

// flatten keeps a joined error on one line, as the CLI prints errors.
func flatten(err error) error {
	msg := strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "; ")
	return &flatError{msg: msg, err: err}
}

type flatError struct {
	msg string
	err error
}

func (e *flatError) Error() string { return e.msg }
func (e *flatError) Unwrap() error { return e.err }

func progressOut(verbose bool, w io.Writer) io.Writer {
	if verbose {
		return w
	}
	return nil
}

func newLabServeUDPEchoCmd() *cobra.Command {
	var addr string
	cmd := &cobra.Command{
		Use:    "serve-udp-echo",
		Short:  "Echo UDP datagrams (run by podnet lab on the external host)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return lab.ServeUDPEcho(ctx, addr, os.Stdout)
		},
	}
	cmd.Flags().StringVar(&addr, "addr", ":7", "listen address")
	return cmd
}

func newLabServeHTTPCmd() *cobra.Command {
	var (
		cfg lab.ServeConfig
		ip  string
	)
	cmd := &cobra.Command{
		Use:    "serve-http",
		Short:  "Serve a lab pod's HTTP page (run by podnet lab inside the pod)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if ip != "" {
				a, err := netip.ParseAddr(ip)
				if err != nil {
					return usagef("--ip %q: %w", ip, err)
				}
				cfg.IP = a
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			cfg.AccessLog = os.Stdout
			return lab.ServeHTTP(ctx, cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Pod, "pod", "", "pod name shown on the page (required)")
	f.StringVar(&cfg.Node, "node", "", "node name shown on the page (required)")
	f.StringVar(&ip, "ip", "", "pod address shown on the page (default: first IPv4 address here)")
	f.StringVar(&cfg.Addr, "addr", ":80", "listen address")
	return cmd
}
