package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"podnet/bench"
)

// benchCmd builds one `podnet bench` subcommand: run measures (progress
// on stderr, interruptible) and returns a result, which is printed as
// JSON with -o json and by table otherwise.
func benchCmd(use, short string, run func(ctx context.Context) (any, error), table func(w io.Writer, r any)) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkFormat(out, "table", "json"); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			r, err := run(ctx)
			if err != nil {
				return err
			}
			if out == "json" {
				return printJSON(stdout, r)
			}
			table(stdout, r)
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "table", "table or json")
	return cmd
}

func newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "bench", Short: "Measure podnet's data path next to the kernel's, in the same run"}
	writeResults := func(w io.Writer, r any) { bench.WriteTable(w, r.([]bench.Result)) }
	printLine := func(w io.Writer, r any) { fmt.Fprintln(w, r) }

	same := bench.SameNodeConfig{Progress: os.Stderr}
	sameCmd := benchCmd("same-node", "Pod-to-pod TCP on one node: kernel veth pair vs podnet TAP offload vs plain TAPs (iperf3)",
		func(ctx context.Context) (any, error) { return bench.SameNode(ctx, same) }, writeResults)
	sameCmd.Flags().IntVar(&same.Seconds, "seconds", 5, "seconds per iperf3 run")
	sameCmd.Flags().IntSliceVar(&same.Streams, "streams", []int{1, 4}, "parallel TCP streams to run")

	cross := bench.CrossNodeConfig{Progress: os.Stderr}
	crossCmd := benchCmd("cross-node", "Pod-to-pod across two nodes: kernel routing and kernel VXLAN vs podnet VXLAN, IP-in-IP and routed (iperf3 TCP, 64-byte UDP)",
		func(ctx context.Context) (any, error) { return bench.CrossNode(ctx, cross) }, writeResults)
	crossCmd.Flags().IntVar(&cross.Seconds, "seconds", 5, "seconds per iperf3 run")
	crossCmd.Flags().IntSliceVar(&cross.Streams, "streams", []int{1, 4}, "parallel TCP streams to run")
	crossCmd.Flags().BoolVar(&cross.UDP, "udp", true, "also measure 64-byte UDP packets per second")

	var pods int
	podAddCmd := benchCmd("pod-add", "Time attaching N pods to one node (IPAM on etcd, TAP set-up, endpoint records)",
		func(ctx context.Context) (any, error) { return bench.PodAdd(ctx, "", pods, os.Stderr) }, printLine)
	podAddCmd.Flags().IntVar(&pods, "pods", 200, "pods to add")

	var runs int
	convCmd := benchCmd("convergence", "Time from a block claimed on one node to the route on another (BGP), median of N",
		func(ctx context.Context) (any, error) { return bench.Convergence(ctx, "", runs, os.Stderr) }, printLine)
	convCmd.Flags().IntVar(&runs, "runs", 20, "blocks to time")

	var natSecs int
	natCmd := benchCmd("nat", "Pod to a host outside the cluster: kernel routing and MASQUERADE vs podnet NAT outgoing; new connections per second",
		func(ctx context.Context) (any, error) { return bench.NAT(ctx, "", natSecs, os.Stderr) },
		func(w io.Writer, v any) {
			r := v.(bench.NATResult)
			bench.WriteTable(w, r.Results)
			fmt.Fprintf(w, "\nnew TCP connections per second (sequential): kernel routing %.0f, kernel MASQUERADE %.0f, podnet NAT %.0f (%.0f%% of routing)\n",
				r.KernelConnsS, r.KernelMasqConnsS, r.ConnsPerSec, 100*r.ConnsPerSec/r.KernelConnsS)
		})
	natCmd.Flags().IntVar(&natSecs, "seconds", 5, "seconds per measurement")

	cmd.AddCommand(sameCmd, crossCmd, podAddCmd, convCmd, natCmd)
	return cmd
}
