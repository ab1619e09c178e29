package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"podnet/node"
)

func newDaemonCmd() *cobra.Command {
	var cfg node.Config
	var logLevel string
	cmd := &cobra.Command{
		Use:   "daemon",
		Short: "Run the node's virtual switch (one per node)",
		Long: `Run the podnet daemon: the node's virtual L3 switch. It creates the host
port podnet0, re-attaches recorded pods and serves the local API that
'podnet pod', 'podnet route' and 'podnet port' use.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
				return err
			}
			cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
			n, err := node.New(cfg)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return n.Run(ctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Name, "node", "", "node name (default: the host name)")
	f.StringVar(&cfg.Underlay, "underlay", "", "interface toward other nodes (default: the default route's)")
	f.StringVar(&cfg.StateDir, "state-dir", node.DefaultStateDir, "directory for pod records")
	f.StringVar(&cfg.Socket, "socket", node.DefaultSocket, "unix socket of the local API")
	f.BoolVar(&cfg.TapOffload, "tap-offload", true, "pod TAPs with virtio headers and TSO (false: plain TAPs, one frame per read)")
	f.IntVar(&cfg.PodMTU, "pod-mtu", 0, "MTU of pods' eth0 (default: the underlay's)")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	return cmd
}
