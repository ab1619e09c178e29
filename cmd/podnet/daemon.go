package main

import (
	"context"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"podnet/api"
	"podnet/datastore"
	"podnet/node"
	"podnet/nodeapi"
	"podnet/resources"
)

// daemonDatastore picks the daemon's etcd: --datastore, else what the CLI
// configuration says ($PODNET_DATASTORE_ENDPOINTS, /etc/podnet/podnet.cfg),
// else none, which makes the daemon run an embedded etcd. The TLS files
// come from the flags, else from the configuration file.
func daemonDatastore(flag string, tlsFlags datastore.Config) (datastore.Config, error) {
	cfg, err := resources.LoadClientConfig()
	if err != nil {
		return cfg, err
	}
	if eps := resources.SplitEndpoints(flag); len(eps) > 0 {
		cfg.Endpoints = eps
	} else if len(cfg.Endpoints) == 1 && cfg.Endpoints[0] == resources.DefaultEndpoint {
		cfg.Endpoints = nil // nothing configured: embedded
	}
	for _, f := range []struct{ flag, cfg *string }{
		{&tlsFlags.CAFile, &cfg.CAFile}, {&tlsFlags.CertFile, &cfg.CertFile}, {&tlsFlags.KeyFile, &cfg.KeyFile},
	} {
		if *f.flag != "" {
			*f.cfg = *f.flag
		}
	}
	return cfg, nil
}

func newDaemonCmd() *cobra.Command {
	var cfg node.Config
	var logLevel, endpoints, natRange, natAddr, ipipMode, vxlanMode string
	var dsTLS datastore.Config
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
			ds, err := daemonDatastore(endpoints, dsTLS)
			if err != nil {
				return err
			}
			cfg.Datastore = ds
			if len(ds.Endpoints) == 0 {
				// The daemon will run an embedded etcd: refuse a bad
				// listener now, before the switch is set up.
				if err := cfg.EtcdServer.Check(); err != nil {
					return err
				}
			}
			if natRange != "" {
				lo, hi, ok := strings.Cut(natRange, ":")
				a, err1 := strconv.ParseUint(lo, 10, 16)
				b, err2 := strconv.ParseUint(hi, 10, 16)
				if !ok || err1 != nil || err2 != nil || a == 0 || a > b {
					return usagef("--nat-port-range %q: want MIN:MAX with 1 <= MIN <= MAX <= 65535", natRange)
				}
				cfg.NAT.PortMin, cfg.NAT.PortMax = uint16(a), uint16(b)
			}
			if natAddr != "" {
				a, err := netip.ParseAddr(natAddr)
				if err != nil || !a.Is4() {
					return usagef("--nat-outgoing-address %q: not an IPv4 address", natAddr)
				}
				cfg.NAT.SourceAddr = a
			}
			cfg.DefaultPoolIPIPMode, cfg.DefaultPoolVXLANMode = api.EncapMode(ipipMode), api.EncapMode(vxlanMode)
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
	f.StringVar(&cfg.Socket, "socket", nodeapi.DefaultSocket, "unix socket of the local API")
	f.StringVar(&cfg.PodNetnsPrefix, "pod-netns-prefix", "", `name prefix of the namespaces "pod add --new" creates (default "<node>-")`)
	f.BoolVar(&cfg.TapOffload, "tap-offload", true, "pod TAPs with virtio headers and TSO (false: plain TAPs, one frame per read)")
	f.IntVar(&cfg.PodMTU, "pod-mtu", 0, "MTU of pods' eth0 (default: the underlay's)")
	f.StringVar(&ipipMode, "default-ipv4-pool-ipip", "", "ipipMode of the default pool created when none exists: Always, CrossSubnet or Never (like CALICO_IPV4POOL_IPIP)")
	f.StringVar(&vxlanMode, "default-ipv4-pool-vxlan", "", "vxlanMode of the default pool created when none exists: Always, CrossSubnet or Never (like CALICO_IPV4POOL_VXLAN)")
	f.Uint32Var(&cfg.VXLANVNI, "vxlan-vni", 4096, "VXLAN network identifier, 1..16777215 (the same on every node)")
	f.Uint16Var(&cfg.VXLANPort, "vxlan-port", 4789, "VXLAN UDP port (the same on every node)")
	f.StringVar(&natRange, "nat-port-range", "", "local ports for NAT outgoing, MIN:MAX (default: the kernel's ephemeral range)")
	f.StringVar(&natAddr, "nat-outgoing-address", "", "source address for NAT outgoing (default: the node's address toward each destination)")
	f.IntVar(&cfg.NAT.MaxEntries, "nat-max-entries", 0, "largest NAT connection table (default 65536)")
	f.DurationVar(&cfg.NAT.UDP, "nat-udp-timeout", 0, "idle timeout of UDP NAT flows before a reply (default 30s)")
	f.DurationVar(&cfg.NAT.TCPClosing, "nat-tcp-closing-timeout", 0, "timeout of closing TCP NAT flows (default 2m)")
	f.DurationVar(&cfg.NAT.ICMP, "nat-icmp-timeout", 0, "idle timeout of ICMP echo NAT flows (default 30s)")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&endpoints, "datastore", "", "etcd endpoints, comma-separated (default: $"+resources.EndpointsEnv+", the config file, else an embedded etcd)")
	f.StringVar(&dsTLS.CAFile, "datastore-ca-file", "", "CA of the etcd servers' certificates (default: the config file's caFile)")
	f.StringVar(&dsTLS.CertFile, "datastore-cert-file", "", "this node's client certificate for etcd (default: the config file's certFile)")
	f.StringVar(&dsTLS.KeyFile, "datastore-key-file", "", "its private key (default: the config file's keyFile)")
	f.StringVar(&cfg.EtcdSocket, "etcd-socket", node.DefaultEtcdSocket, "client socket of the embedded etcd (mode 0600)")
	etcdServerFlags(cmd, "etcd-", "etcd-listen", &cfg.EtcdServer)
	return cmd
}
