package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"podnet/datastore"
	"podnet/datastore/certs"
	"podnet/resources"
)

func newDatastoreCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "datastore", Short: "Run or inspect podnet's etcd datastore, make its certificates"}
	cmd.AddCommand(newDatastoreServeCmd(), newDatastoreCertsCmd(), newDatastoreStatusCmd())
	return cmd
}

// etcdServerFlags are the flags of an embedded etcd's listeners and TLS,
// shared by `datastore serve` (prefix "", --listen-client) and `daemon`
// (prefix "etcd-", --etcd-listen).
func etcdServerFlags(cmd *cobra.Command, prefix, listen string, cfg *datastore.EmbedConfig) {
	f := cmd.Flags()
	f.StringSliceVar(&cfg.ListenClientURLs, listen, nil,
		"client URLs for other machines, e.g. https://10.0.0.1:2379 (http:// only on loopback unless --"+prefix+"insecure)")
	f.StringVar(&cfg.CAFile, prefix+"ca-file", "", "CA certificate: https:// listeners accept only clients and peers with a certificate it signed")
	f.StringVar(&cfg.CertFile, prefix+"cert-file", "", "this member's certificate (server and client use; see 'podnet datastore certs')")
	f.StringVar(&cfg.KeyFile, prefix+"key-file", "", "this member's private key")
	f.BoolVar(&cfg.Insecure, prefix+"insecure", false, "allow plain http:// listeners on non-loopback addresses: anyone who reaches them can rewrite pools, nodes and BGP peers")
}

func newDatastoreServeCmd() *cobra.Command {
	var cfg datastore.EmbedConfig
	var logLevel string
	serve := &cobra.Command{
		Use:   "serve",
		Short: "Run an embedded etcd: alone on a unix socket, or a member of a TLS cluster",
		Long: `Run an etcd member inside this process until SIGINT/SIGTERM. Clients reach it
at unix://SOCKET (mode 0600, plain text), and at each --listen-client URL.

Alone (the default) it is what a lab or a one-machine setup uses; 'podnet
daemon' starts one by itself when it is given no datastore endpoints.
With --listen-peer and --initial-cluster it is one member of a cluster
across machines: https:// listeners need --ca-file, --cert-file and
--key-file, and accept only clients and peers whose certificate the CA
signed. Make test certificates with 'podnet datastore certs'.

History older than --compaction-retention revisions is compacted every
5 minutes; the database is capped at --quota-bytes.`,
		Example: `  # member worker1 of a three-machine cluster
  podnet datastore serve --name worker1 \
    --listen-client https://10.0.0.1:2379 --listen-peer https://10.0.0.1:2380 \
    --initial-cluster worker1=https://10.0.0.1:2380,worker2=https://10.0.0.2:2380,worker3=https://10.0.0.3:2380 \
    --ca-file /etc/podnet/pki/ca.pem --cert-file /etc/podnet/pki/worker1.pem --key-file /etc/podnet/pki/worker1-key.pem`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
				return usagef("--log-level: %v", err)
			}
			cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
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
	f := serve.Flags()
	f.StringVar(&cfg.Dir, "dir", "/var/lib/podnet/etcd", "etcd data directory")
	f.StringVar(&cfg.Socket, "socket", "/run/podnet/etcd.sock", "client unix socket")
	f.StringVar(&cfg.Name, "name", "", `member name, the same as in --initial-cluster (default "podnet")`)
	f.StringSliceVar(&cfg.ListenPeerURLs, "listen-peer", nil, "URL other members reach this one at, e.g. https://10.0.0.1:2380 (default: a unix socket, one member)")
	f.StringVar(&cfg.InitialCluster, "initial-cluster", "", "every member at first start, NAME=PEER-URL,... (ignored once the data directory holds data)")
	f.BoolVar(&cfg.JoinExisting, "join", false, "join a running cluster (after 'etcdctl member add') instead of forming a new one")
	f.Int64Var(&cfg.CompactionRetention, "compaction-retention", datastore.DefaultCompactionRetention, "revisions of history kept by compaction")
	f.Int64Var(&cfg.QuotaBytes, "quota-bytes", datastore.DefaultQuotaBytes, "largest database size; past it etcd refuses writes")
	f.StringVar(&logLevel, "log-level", "warn", "etcd's log: debug (every line etcd writes), info, warn or error")
	etcdServerFlags(serve, "", "listen-client", &cfg)
	return serve
}

// parseCertNodes reads --nodes: NAME or NAME=HOST; a name given twice
// collects all its hosts.
func parseCertNodes(list []string) ([]certs.Node, error) {
	var out []certs.Node
	idx := map[string]int{}
	for _, s := range list {
		name, host, hasHost := strings.Cut(strings.TrimSpace(s), "=")
		if name == "" || hasHost && host == "" {
			return nil, usagef("--nodes %q: want NAME or NAME=ADDRESS", s)
		}
		i, ok := idx[name]
		if !ok {
			i = len(out)
			idx[name] = i
			out = append(out, certs.Node{Name: name})
		}
		if hasHost {
			out[i].Hosts = append(out[i].Hosts, host)
		}
	}
	return out, nil
}

func newDatastoreCertsCmd() *cobra.Command {
	var o certs.Options
	var nodes []string
	cmd := &cobra.Command{
		Use:   "certs --out DIR --nodes NAME[=ADDRESS],...",
		Short: "Make a test CA and the certificates of a TLS datastore cluster",
		Long: `Make a CA and ECDSA P-256 certificates for a datastore across machines, in DIR:

  ca.pem, ca-key.pem          the CA (kept and reused if DIR has one)
  NODE.pem, NODE-key.pem      per node: its etcd member serves and dials peers
                              with it, its daemon is a datastore client with it
  client.pem, client-key.pem  for administrators' CLIs (client use only)

Each node certificate names the node, its addresses (NAME=ADDRESS; give a
name twice for two addresses), every --hosts entry, localhost, 127.0.0.1
and ::1. Keys are mode 0600. Existing node and client files are kept
unless --force. Copy ca.pem and a node's pair to that node only; keep
ca-key.pem off the nodes.

This is a small CA for tests and small clusters: certificates from a
site's own PKI work the same (server and client use, the address in the
subject alternative names).`,
		Example: `  podnet datastore certs --out /etc/podnet/pki \
    --nodes worker1=10.0.0.1,worker2=10.0.0.2,worker3=10.0.0.3`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.Dir == "" {
				return usagef("--out is required")
			}
			var err error
			if o.Nodes, err = parseCertNodes(nodes); err != nil {
				return err
			}
			if len(o.Nodes) == 0 {
				return usagef("--nodes is required")
			}
			wrote, err := certs.Make(o)
			for _, p := range wrote {
				fmt.Fprintln(cmd.OutOrStdout(), p)
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Dir, "out", "", "output directory (created 0700)")
	f.StringSliceVar(&nodes, "nodes", nil, "nodes, NAME or NAME=ADDRESS, comma-separated")
	f.StringSliceVar(&o.Hosts, "hosts", nil, "more addresses or DNS names for every node certificate")
	f.BoolVar(&o.Force, "force", false, "replace existing node and client certificates (never the CA)")
	return cmd
}

func newDatastoreStatusCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show each etcd member: leader, revision, database size, or why it does not answer",
		Args:  cobra.NoArgs,
	}
	out := outputFlag(cmd, "table", "json")
	datastoreFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		cfg, err := resources.LoadClientConfig()
		if err != nil {
			return err
		}
		if eps := resources.SplitEndpoints(cmd.Flag("datastore").Value.String()); len(eps) > 0 {
			cfg.Endpoints = eps
		}
		ctx, cancel := context.WithTimeout(cmdContext(cmd), 30*time.Second)
		defer cancel()
		s, err := datastore.Open(ctx, cfg)
		if err != nil {
			return err
		}
		defer s.Close()
		ms, err := s.Members(ctx)
		if err != nil {
			return err
		}
		// Members that do not answer make exit code 3 whatever the format.
		down := 0
		for _, m := range ms {
			if m.Error != "" {
				down++
			}
		}
		if *out == "json" {
			if err := printJSON(cmd, cmd.OutOrStdout(), ms); err != nil {
				return err
			}
		} else if err := printMembers(cmd.OutOrStdout(), ms); err != nil {
			return err
		}
		if down > 0 {
			return problemsError{fmt.Sprintf("%d of %d members do not answer", down, len(ms))}
		}
		return nil
	}
	return cmd
}

func printMembers(w io.Writer, ms []datastore.MemberStatus) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "NAME\tENDPOINT\tLEADER\tREVISION\tDB SIZE\tIN USE\tSTATUS")
	for _, m := range ms {
		status := "ok"
		if m.Error != "" {
			status = m.Error
		}
		fmt.Fprintf(tw, "%s\t%s\t%v\t%d\t%s\t%s\t%s\n", m.Name, m.Endpoint, m.Leader, m.Revision,
			mib(m.DBSize), mib(m.DBSizeInUse), status)
	}
	return tw.Flush()
}

func mib(b int64) string { return fmt.Sprintf("%.1fMiB", float64(b)/(1<<20)) }
