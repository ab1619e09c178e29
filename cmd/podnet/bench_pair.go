package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"podnet/bench"
)

func newBenchPairCmd() *cobra.Command {
	var (
		server   bool
		client   string
		netns    string
		output   string
		outDir   string
		cfg      bench.PairConfig
		payloads []int
	)
	cmd := &cobra.Command{
		Use:   "pair (--server | --client ADDR)",
		Short: "Measure between two existing pods, e.g. on two real hosts: --server in one, --client SERVER-POD-IP in the other",
		Long: fmt.Sprintf(`pair measures the path between two pods that already exist, typically on two
machines, without building a lab. Start the server end in one pod:

    podnet bench pair --server --netns POD_NETNS

and the client end in the other, with the server pod's address:

    podnet bench pair --client 192.168.1.7 --netns POD_NETNS -o json > pair.json

--netns is the pod's namespace as "ip netns" names it; without it the command
measures from the namespace it runs in. The pods must reach each other on TCP
ports %d (control), 5320 (request/response), 5330 (bulk) and UDP 5400. CPU
figures are the podnet daemons' on both hosts (the kernel's system and softirq
time when neither runs podnet). The output has the suite's schema.`, bench.PairControlPort),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if server == (client != "") {
				return usagef("bench pair: give either --server or --client ADDR")
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if server {
				return bench.ServePair(ctx, netns, os.Stderr)
			}
			addr, err := netip.ParseAddr(client)
			if err != nil {
				return fmt.Errorf("--client %q: %w", client, err)
			}
			cfg.Server, cfg.Netns, cfg.Payloads = addr, netns, payloads
			cfg.Progress, cfg.Command = os.Stderr, "podnet "+strings.Join(os.Args[1:], " ")
			rep, err := bench.RunPair(ctx, cfg)
			if err != nil {
				return err
			}
			if outDir != "" {
				files, err := bench.WriteDir(rep, outDir)
				if err != nil {
					return err
				}
				fmt.Fprintf(os.Stderr, "wrote %s in %s\n", strings.Join(files, ", "), outDir)
			}
			if output == "json" {
				return printJSON(cmd, stdout, rep)
			}
			bench.WriteTable(stdout, rep)
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&server, "server", false, "run the server end and wait")
	f.StringVar(&client, "client", "", "run the client end against the server pod at this address")
	f.StringVar(&netns, "netns", "", "the pod's network namespace (ip netns name); default: this process's")
	f.BoolVar(&cfg.Quick, "quick", false, "1 round, short runs, UDP with 18-byte payloads (64-byte frames) only")
	f.IntVar(&cfg.Rounds, "rounds", 0, "rounds (default 3, 1 with --quick)")
	f.IntVar(&cfg.Seconds, "seconds", 0, "seconds of bulk TCP per round (default 4, 2 with --quick)")
	f.IntSliceVar(&payloads, "payloads", nil, "UDP payload sizes (default 18,64,1400; 18 with --quick)")
	outputFlagVar(cmd, &output, nil, formatTable, formatJSON)
	f.StringVar(&outDir, "out", "", "also write results.json, results.md and charts into this directory")
	return cmd
}
