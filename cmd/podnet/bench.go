package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"podnet/bench"
)

// suiteFlags are the flags of `podnet bench` and of its per-scenario
// subcommands.
type suiteFlags struct {
	cfg      bench.Config
	output   string
	outDir   string
	paths    string
	controlP bool
}

func (f *suiteFlags) register(cmd *cobra.Command, scenarios bool) {
	fl := cmd.Flags()
	fl.BoolVar(&f.cfg.Quick, "quick", false, "short version: 1 round, 2 s TCP runs, UDP with 18-byte payloads (64-byte frames) only")
	fl.IntVar(&f.cfg.Rounds, "rounds", 0, "rounds; every path is measured once per round, kernel and podnet interleaved (default 3, 1 with --quick)")
	fl.IntVar(&f.cfg.Seconds, "seconds", 0, "seconds per iperf3 TCP run (default 4, 2 with --quick)")
	fl.IntSliceVar(&f.cfg.Streams, "streams", nil, "parallel TCP streams to measure (default 1)")
	fl.IntSliceVar(&f.cfg.Payloads, "payloads", nil, "UDP payload sizes in bytes for the rate search (default 18,64,1400; 18 with --quick)")
	fl.BoolVar(&f.cfg.NoUDP, "no-udp", false, "leave out the UDP rate searches")
	fl.StringVar(&f.paths, "paths", "", "measure only paths whose name matches this regular expression")
	if scenarios {
		fl.StringSliceVar(&f.cfg.Scenarios, "scenarios", nil, "scenarios to run: same-node, cross-node, nat (default all)")
		fl.BoolVar(&f.controlP, "control-plane", true, "also time route convergence (5 blocks) and pod add (50 pods); off with --quick")
	}
	outputFlagVar(cmd, &f.output, nil, formatTable, formatJSON)
	fl.StringVar(&f.outDir, "out", "", "also write results.json, results.md and charts (PNG, SVG) into this directory")
}

// run runs the suite as configured and prints or writes the report.
func (f *suiteFlags) run(cmd *cobra.Command) error {
	if f.paths != "" {
		re, err := regexp.Compile(f.paths)
		if err != nil {
			return fmt.Errorf("--paths: %w", err)
		}
		f.cfg.Paths = re
	}
	if err := bench.Preflight(f.cfg); err != nil {
		return err
	}
	f.cfg.Progress = os.Stderr
	f.cfg.Command = "podnet " + strings.Join(os.Args[1:], " ")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	rep, err := bench.Run(ctx, f.cfg)
	if err != nil && rep == nil {
		return err
	}
	if err == nil && f.controlP && !f.cfg.Quick && f.cfg.Paths == nil {
		rep.ControlPlane, err = controlPlane(ctx)
		rep.Meta.DurationSeconds = time.Since(start).Round(100 * time.Millisecond).Seconds()
	}
	if err != nil {
		return fmt.Errorf("bench interrupted, nothing written: %w", err)
	}
	fmt.Fprintf(os.Stderr, "done in %s\n", time.Since(start).Round(time.Second))
	if f.outDir != "" {
		files, err := bench.WriteDir(rep, f.outDir)
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "wrote %s in %s\n", strings.Join(files, ", "), f.outDir)
	}
	if f.output == "json" {
		return printJSON(cmd, stdout, rep)
	}
	bench.WriteTable(stdout, rep)
	return nil
}

func controlPlane(ctx context.Context) (*bench.ControlPlane, error) {
	fmt.Fprintln(os.Stderr, "control plane: route convergence, 5 blocks ...")
	c, err := bench.Convergence(ctx, "", 5, os.Stderr)
	if err != nil {
		return nil, err
	}
	fmt.Fprintln(os.Stderr, "control plane: pod add, 50 pods ...")
	p, err := bench.PodAdd(ctx, "", 50, os.Stderr)
	if err != nil {
		return nil, err
	}
	return &bench.ControlPlane{Convergence: &c, PodAdd: &p}, nil
}

func newBenchCmd() *cobra.Command {
	var all suiteFlags
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure podnet's data path next to the kernel's: the whole suite, or one part",
		Long: `Without a subcommand, bench runs the whole suite: same node, cross node for
every podnet mode and every kernel encapsulation this kernel has, and NAT to a
host outside the cluster. Every path is measured in rounds (kernel and podnet
interleaved within a round, ratios taken per round) for bulk TCP (iperf3),
ping and TCP request/response latency, the highest UDP rate under 1 % loss
(an own sendmmsg/recvmmsg generator) and the CPU the forwarding costs.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return all.run(cmd) },
	}
	all.register(cmd, true)

	scenario := func(use, short, sc string) *cobra.Command {
		var f suiteFlags
		c := &cobra.Command{Use: use, Short: short, Args: cobra.NoArgs,
			RunE: func(cmd *cobra.Command, args []string) error {
				f.cfg.Scenarios = []string{sc}
				return f.run(cmd)
			}}
		f.register(c, false)
		return c
	}
	sameCmd := scenario("same-node", "Pod to pod on one node: kernel veth pair vs podnet TAP offload vs plain TAPs", bench.ScenarioSameNode)
	crossCmd := scenario("cross-node", "Pod to pod across two nodes: kernel routing and tunnels vs podnet VXLAN, IP-in-IP and routed", bench.ScenarioCrossNode)
	natCmd := scenario("nat", "Pod to a host outside the cluster: kernel routing and MASQUERADE vs podnet NAT outgoing", bench.ScenarioNAT)

	controlCmd := func(use, short string, run func(ctx context.Context) (*bench.ControlPlane, error)) *cobra.Command {
		var out string
		c := &cobra.Command{Use: use, Short: short, Args: cobra.NoArgs,
			RunE: func(cmd *cobra.Command, args []string) error {
				if os.Geteuid() != 0 {
					return errors.New("podnet bench must run as root: it creates network namespaces, veths and TAPs (try sudo)")
				}
				ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
				defer stop()
				rep := &bench.Report{Schema: bench.SchemaVersion, Meta: bench.NewMeta(bench.Config{Command: "podnet " + strings.Join(os.Args[1:], " ")}),
					Paths: []bench.Path{}, Skipped: []bench.Skipped{}}
				cp, err := run(ctx)
				if err != nil {
					return err
				}
				rep.ControlPlane = cp
				if out == "json" {
					return printJSON(cmd, stdout, rep)
				}
				if cp.Convergence != nil {
					fmt.Fprintln(stdout, cp.Convergence)
				}
				if cp.PodAdd != nil {
					fmt.Fprintln(stdout, cp.PodAdd)
				}
				return nil
			}}
		outputFlagVar(c, &out, nil, formatTable, formatJSON)
		return c
	}
	var pods int
	podAddCmd := controlCmd("pod-add", "Time attaching N pods to one node (IPAM on etcd, TAP set-up, endpoint records)",
		func(ctx context.Context) (*bench.ControlPlane, error) {
			r, err := bench.PodAdd(ctx, "", pods, os.Stderr)
			return &bench.ControlPlane{PodAdd: &r}, err
		})
	podAddCmd.Flags().IntVar(&pods, "pods", 200, "pods to add")
	var runs int
	convCmd := controlCmd("convergence", "Time from a block claimed on one node to the route on another (BGP), median of N",
		func(ctx context.Context) (*bench.ControlPlane, error) {
			r, err := bench.Convergence(ctx, "", runs, os.Stderr)
			return &bench.ControlPlane{Convergence: &r}, err
		})
	convCmd.Flags().IntVar(&runs, "runs", 20, "blocks to time")

	compareCmd := &cobra.Command{
		Use:   "compare A.json B.json",
		Short: "Compare two results.json files; flag changes beyond the spread of their rounds",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := bench.ReadReport(args[0])
			if err != nil {
				return err
			}
			b, err := bench.ReadReport(args[1])
			if err != nil {
				return err
			}
			bench.WriteComparison(stdout, a, b, args[0], args[1])
			return nil
		},
	}
	var showOut string
	showCmd := &cobra.Command{
		Use:   "show RESULTS.json",
		Short: "Print a results.json as tables; with --out, write its results.md and charts again",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rep, err := bench.ReadReport(args[0])
			if err != nil {
				return err
			}
			if showOut != "" {
				files, err := bench.WriteDir(rep, showOut)
				if err != nil {
					return err
				}
				fmt.Fprintf(os.Stderr, "wrote %s in %s\n", strings.Join(files, ", "), showOut)
			}
			bench.WriteTable(stdout, rep)
			return nil
		},
	}
	showCmd.Flags().StringVar(&showOut, "out", "", "write results.json, results.md and charts into this directory")
	schemaCmd := &cobra.Command{
		Use:   "schema",
		Short: "Print the JSON Schema of podnet bench -o json and results.json",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := stdout.Write(bench.Schema)
			return err
		},
	}
	cmd.AddCommand(sameCmd, crossCmd, natCmd, podAddCmd, convCmd, compareCmd, showCmd, schemaCmd, newBenchPairCmd(),
		newBenchConnectLoopCmd())
	return cmd
}

// newBenchConnectLoopCmd is the client of the suite's new-connections
// test, which runs it inside a pod's namespace.
func newBenchConnectLoopCmd() *cobra.Command {
	var (
		to      string
		seconds int
	)
	cmd := &cobra.Command{
		Use:    "connect-loop",
		Short:  "Open and close TCP connections one after another; print how many as JSON (run by podnet bench inside a pod)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dst, err := netip.ParseAddrPort(to)
			if err != nil {
				return usagef("--to %q: %w", to, err)
			}
			if seconds < 1 {
				return usagef("--seconds %d: must be at least 1", seconds)
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			res, err := bench.ConnectLoop(ctx, dst, time.Duration(seconds)*time.Second)
			if err != nil {
				return err
			}
			// JSON always, for the suite that runs it: no -o flag.
			return json.NewEncoder(stdout).Encode(res)
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "server address:port (required)")
	cmd.Flags().IntVar(&seconds, "seconds", 2, "how long to run")
	return cmd
}
