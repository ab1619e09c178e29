package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"podnet/bench"
)

func newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "bench", Short: "Measure podnet's data path next to the kernel's, in the same run"}
	var cfg bench.SameNodeConfig
	out := new(string)
	same := &cobra.Command{
		Use:   "same-node",
		Short: "Pod-to-pod TCP on one node: kernel veth pair vs podnet TAP offload vs plain TAPs (iperf3)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkFormat(*out, "table", "json"); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			cfg.Progress = os.Stderr
			rs, err := bench.SameNode(ctx, cfg)
			if err != nil {
				return err
			}
			if *out == "json" {
				return printJSON(stdout, rs)
			}
			bench.WriteTable(stdout, rs)
			return nil
		},
	}
	same.Flags().IntVar(&cfg.Seconds, "seconds", 5, "seconds per iperf3 run")
	same.Flags().IntSliceVar(&cfg.Streams, "streams", []int{1, 4}, "parallel TCP streams to run")
	same.Flags().StringVarP(out, "output", "o", "table", "table or json")
	var pods int
	podAdd := &cobra.Command{
		Use:   "pod-add",
		Short: "Time attaching N pods to one node (IPAM on etcd, TAP set-up, endpoint records)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			r, err := bench.PodAdd(ctx, "", pods, os.Stderr)
			if err != nil {
				return err
			}
			if *out == "json" {
				return printJSON(stdout, r)
			}
			fmt.Fprintln(stdout, r)
			return nil
		},
	}
	podAdd.Flags().IntVar(&pods, "pods", 200, "pods to add")
	podAdd.Flags().StringVarP(out, "output", "o", "table", "table or json")
	var xcfg bench.CrossNodeConfig
	cross := &cobra.Command{
		Use:   "cross-node",
		Short: "Pod-to-pod TCP across two nodes: kernel direct routing vs podnet IP-in-IP vs podnet routed (iperf3)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			xcfg.Progress = os.Stderr
			rs, err := bench.CrossNode(ctx, xcfg)
			if err != nil {
				return err
			}
			if *out == "json" {
				return printJSON(stdout, rs)
			}
			bench.WriteTable(stdout, rs)
			return nil
		},
	}
	cross.Flags().IntVar(&xcfg.Seconds, "seconds", 5, "seconds per iperf3 run")
	cross.Flags().IntSliceVar(&xcfg.Streams, "streams", []int{1, 4}, "parallel TCP streams to run")
	cross.Flags().BoolVar(&xcfg.UDP, "udp", true, "also measure 64-byte UDP packets per second")
	cross.Flags().StringVarP(out, "output", "o", "table", "table or json")
	var runs int
	conv := &cobra.Command{
		Use:   "convergence",
		Short: "Time from a block claimed on one node to the route on another (BGP), median of N",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			r, err := bench.Convergence(ctx, "", runs, os.Stderr)
			if err != nil {
				return err
			}
			if *out == "json" {
				return printJSON(stdout, r)
			}
			fmt.Fprintln(stdout, r)
			return nil
		},
	}
	conv.Flags().IntVar(&runs, "runs", 20, "blocks to time")
	conv.Flags().StringVarP(out, "output", "o", "table", "table or json")
	var natSecs int
	natCmd := &cobra.Command{
		Use:   "nat",
		Short: "Pod to a host outside the cluster: kernel routing vs podnet NAT outgoing; new connections per second",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			r, err := bench.NAT(ctx, "", natSecs, os.Stderr)
			if err != nil {
				return err
			}
			if *out == "json" {
				return printJSON(stdout, r)
			}
			bench.WriteTable(stdout, r.Results)
			fmt.Fprintf(stdout, "\nnew TCP connections per second (sequential): kernel routing %.0f, kernel MASQUERADE %.0f, podnet NAT %.0f (%.0f%% of routing)\n",
				r.KernelConnsS, r.KernelMasqConnsS, r.ConnsPerSec, 100*r.ConnsPerSec/r.KernelConnsS)
			return nil
		},
	}
	natCmd.Flags().IntVar(&natSecs, "seconds", 5, "seconds per measurement")
	natCmd.Flags().StringVarP(out, "output", "o", "table", "table or json")
	cmd.AddCommand(same, podAdd, cross, conv, natCmd)
	return cmd
}
