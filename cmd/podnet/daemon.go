package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"
	"github.com/spf13/cobra"

	"podnet/api"
	"podnet/datastore"
	"podnet/nat"
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
	var logLevel, endpoints, natRange, natAddr, ipipMode, vxlanMode, configFile string
	var vxlanSF, ipipSF, natPacket bool
	var dsTLS datastore.Config
	cmd := &cobra.Command{
		Use:   "daemon",
		Short: "Run the node's virtual switch (one per node)",
		Long: `Run the podnet daemon: the node's virtual L3 switch. It creates the host
port podnet0, re-attaches recorded pods and serves the local API that
'podnet pod', 'podnet route' and 'podnet port' use.

Settings come from the flags, else from the configuration file (--config,
default ` + DefaultDaemonConfig + ` when it exists): a YAML map whose keys are
the flag names, e.g. "metrics-listen: 127.0.0.1:9091". Under systemd
(Type=notify) the daemon reports READY=1 once it forwards and serves its API,
and STOPPING=1 as soon as SIGTERM or SIGINT starts its shutdown; a second
signal kills it without waiting for the shutdown.

--metrics-listen serves Prometheus metrics at /metrics without
authentication: give a loopback address, or one only the monitoring
system can reach.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := applyDaemonConfig(cmd.Flags(), configFile, cmd.Flags().Changed("config")); err != nil {
				return err
			}
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
			cfg.NoVXLANSuperframes = !vxlanSF
			cfg.NoIPIPSuperframes = !ipipSF
			cfg.NoNATPacketPath = !natPacket
			if cfg.MetricsListen != "" {
				if _, _, err := net.SplitHostPort(cfg.MetricsListen); err != nil {
					return fmt.Errorf("--metrics-listen %q: want HOST:PORT, e.g. 127.0.0.1:9091", cfg.MetricsListen)
				}
			}
			cfg.OnReady = func() { notifySystemd(cfg.Logger, sddaemon.SdNotifyReady) }
			n, err := node.New(cfg)
			if err != nil {
				return err
			}
			return runUntilSignal(n.Run, func() { notifySystemd(cfg.Logger, sddaemon.SdNotifyStopping) })
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Name, "node", "", "node name, a lower-case DNS subdomain as Calico's (default: the host name, lower-cased)")
	f.StringVar(&cfg.Underlay, "underlay", "", "interface toward other nodes (default: the default route's)")
	f.StringVar(&cfg.StateDir, "state-dir", node.DefaultStateDir, "directory for pod records")
	f.StringVar(&cfg.Socket, "socket", nodeapi.DefaultSocket, "unix socket of the local API")
	f.StringVar(&cfg.PodNetnsPrefix, "pod-netns-prefix", "", `name prefix of the namespaces "pod add --new" creates (default "<node>-")`)
	f.BoolVar(&cfg.TapOffload, "tap-offload", true, "pod TAPs with virtio headers and TSO (false: plain TAPs, one frame per read)")
	f.BoolVar(&ipipSF, "ipip-superframes", true, "send TCP superframes (and UDP ones, on kernels with USO) as IP-in-IP whole through a TAP ("+node.IPIPTapName+"), marked as IP-in-IP by a tc program, for the kernel to segment, where it can; false: cut them in userspace")
	f.BoolVar(&natPacket, "nat-packet-path", true, "NAT outgoing TCP to remotes routed out of the underlay rewrites packets and has the kernel forward them through a TAP ("+nat.PlainTapName+"), a tc program on the underlay steering the replies back; false: every connection ends in NAT's netstack and is spliced onto one of the node's own")
	f.BoolVar(&vxlanSF, "vxlan-superframes", true, "send TCP superframes as VXLAN whole through a TAP ("+node.VXLANTapName+") for the kernel to segment, where it can (Linux 6.17+, or 6.3+ with a tc program marking them); false: cut them in userspace")
	f.IntVar(&cfg.VXLANReceivers, "vxlan-receivers", 0, "sockets receiving VXLAN on its port (SO_REUSEPORT), each read by a reader of its own so that incoming VXLAN can use that many cores; about 8 MiB each (default: one per two CPUs, at most 8; at most 16)")
	f.DurationVar(&cfg.TunnelGrace, "tunnel-grace", 30*time.Second, "how long the sockets of an encapsulation no pool uses any more stay open")
	f.DurationVar(&cfg.ReplyPoll, "reply-poll", 50*time.Microsecond, "how long a reader polls a pod it has just written to for the answer, saving a wake-up per hop (0: off)")
	f.IntVar(&cfg.PodMTU, "pod-mtu", 0, "MTU of pods' eth0 (default: the underlay's)")
	f.IntVar(&cfg.PodQueueLen, "pod-queue-len", 0, fmt.Sprintf("txqueuelen of pods' eth0: frames a pod's TAP holds for the switch before the kernel drops what the pod sends (queue-full in 'podnet port stats'); more rides out longer moments when the switch gets no CPU, and lets one pod hold up to about 64 KiB of kernel memory per frame (default 0: as it is, the kernel's 1000 for a new pod; at most %d)", node.MaxPodQueueLen))
	f.StringVar(&ipipMode, "default-ipv4-pool-ipip", "", "ipipMode of the default pool created when none exists: Always, CrossSubnet or Never (like CALICO_IPV4POOL_IPIP)")
	f.StringVar(&vxlanMode, "default-ipv4-pool-vxlan", "", "vxlanMode of the default pool created when none exists: Always, CrossSubnet or Never (like CALICO_IPV4POOL_VXLAN)")
	f.Uint32Var(&cfg.VXLANVNI, "vxlan-vni", 4096, "VXLAN network identifier, 1..16777215 (the same on every node)")
	f.Uint16Var(&cfg.VXLANPort, "vxlan-port", 4789, "VXLAN UDP port (the same on every node)")
	f.StringVar(&natRange, "nat-port-range", "", "local ports for NAT outgoing, MIN:MAX (default: the kernel's ephemeral range)")
	f.StringVar(&natAddr, "nat-outgoing-address", "", "source address for NAT outgoing (default: the node's address toward each destination)")
	f.IntVar(&cfg.NAT.MaxEntries, "nat-max-entries", 0, "largest NAT connection table (default 65536)")
	f.IntVar(&cfg.NAT.MaxDialsPerPod, "nat-max-dials-per-pod", 0, "most TCP connections one pod may have waiting for their remote through NAT (default 256)")
	f.DurationVar(&cfg.NAT.UDP, "nat-udp-timeout", 0, "idle timeout of UDP NAT flows before a reply (default 30s)")
	f.DurationVar(&cfg.NAT.TCPClosing, "nat-tcp-closing-timeout", 0, "timeout of closing TCP NAT flows (default 2m)")
	f.DurationVar(&cfg.NAT.ICMP, "nat-icmp-timeout", 0, "idle timeout of ICMP echo NAT flows (default 30s)")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&configFile, "config", DefaultDaemonConfig, "YAML file of daemon settings, keys named as these flags (flags win; the default file may be absent)")
	f.StringVar(&cfg.MetricsListen, "metrics-listen", "", "HOST:PORT to serve Prometheus /metrics on, unauthenticated: loopback or a protected address (default: off)")
	f.StringVar(&endpoints, "datastore", "", "etcd endpoints, comma-separated (default: $"+resources.EndpointsEnv+", the CLI config file podnet.cfg, else an embedded etcd)")
	f.StringVar(&dsTLS.CAFile, "datastore-ca-file", "", "CA of the etcd servers' certificates (default: podnet.cfg's caFile)")
	f.StringVar(&dsTLS.CertFile, "datastore-cert-file", "", "this node's client certificate for etcd (default: podnet.cfg's certFile)")
	f.StringVar(&dsTLS.KeyFile, "datastore-key-file", "", "its private key (default: podnet.cfg's keyFile)")
	f.StringVar(&cfg.EtcdSocket, "etcd-socket", node.DefaultEtcdSocket, "client socket of the embedded etcd (mode 0600)")
	etcdServerFlags(cmd, "etcd-", "etcd-listen", &cfg.EtcdServer)
	return cmd
}

// runUntilSignal runs run with a context that ends at the first SIGINT
// or SIGTERM, and calls stopping once: at that signal, as the shutdown
// begins, or when run returns by itself. After the first signal a second
// one kills the process (Go's default), for a shutdown that hangs.
func runUntilSignal(run func(context.Context) error, stopping func()) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	done, signalled := make(chan struct{}), make(chan bool, 1)
	go func() {
		select {
		case <-ctx.Done():
			stop() // a second signal kills the process now
			stopping()
			signalled <- true
		case <-done:
			signalled <- false
		}
	}()
	err := run(ctx)
	close(done)
	if !<-signalled {
		stopping()
	}
	return err
}

// notifySystemd tells systemd about the daemon's state when it runs as a
// Type=notify service ($NOTIFY_SOCKET set); elsewhere it does nothing.
func notifySystemd(log *slog.Logger, state string) {
	if sent, err := sddaemon.SdNotify(false, state); err != nil {
		log.Warn("cannot notify systemd", "state", state, "err", err)
	} else if sent {
		log.Debug("notified systemd", "state", state)
	}
}
