package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"podnet/datastore"
)

func newDatastoreCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "datastore", Short: "Run or inspect podnet's etcd datastore"}
	var cfg datastore.EmbedConfig
	serve := &cobra.Command{
		Use:   "serve",
		Short: "Run an embedded etcd on a unix socket (what a lab or a one-machine setup uses)",
		Long: `Run a single-member etcd inside this process until SIGINT/SIGTERM. Clients
reach it at unix://SOCKET, and at any --listen-client URL given (for other
machines). 'podnet daemon' starts one by itself when it is given no
datastore endpoints; a lab runs one for all its nodes.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := datastore.StartEmbedded(cfg)
			if err != nil {
				return err
			}
			defer e.Close()
			fmt.Fprintf(os.Stderr, "etcd serving at %v\n", e.Endpoints())
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			<-ctx.Done()
			return nil
		},
	}
	serve.Flags().StringVar(&cfg.Dir, "dir", "/var/lib/podnet/etcd", "etcd data directory")
	serve.Flags().StringVar(&cfg.Socket, "socket", "/run/podnet/etcd.sock", "client unix socket")
	serve.Flags().StringSliceVar(&cfg.ListenClientURLs, "listen-client", nil, "extra client URLs, e.g. http://10.0.0.1:2379")
	cmd.AddCommand(serve)
	return cmd
}
