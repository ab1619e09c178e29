package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"podnet/api"
	"podnet/datastore"
	"podnet/internal/syscheck"
	"podnet/nodeapi"
	"podnet/resources"
	"podnet/routing"
)

func newCheckSystemCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "checksystem",
		Short: "Check that this machine can run the daemon: devices, capabilities, sysctls, ports, MTU, kernel features, datastore",
		Long: `Check that this machine (this network namespace) can run 'podnet daemon',
and say for each check: ok, warn (runs, but less well) or problem, with
the fix. It reads the daemon's settings as the daemon does (--config,
default ` + DefaultDaemonConfig + `, and the datastore configuration); the
flags below override them. A running daemon's own ports count as in use
by podnet, not as taken.

Exit code 0 when no check finds a problem, 3 when one does (warnings do
not count), 1 when the checks could not run.`,
		Args: cobra.NoArgs,
	}
	out := outputFlag(cmd, formatTable, formatJSON)
	sock := socketFlag(cmd)
	configFile := cmd.Flags().String("config", DefaultDaemonConfig, "the daemon's settings file (the default may be absent)")
	underlay := cmd.Flags().String("underlay", "", "underlay interface (default: the settings file's, else the default route's)")
	bgpPort := cmd.Flags().Int("bgp-port", 0, "BGP port (default: the datastore's BGPConfiguration listenPort when it answers, else 179)")
	vxlanPort := cmd.Flags().Int("vxlan-port", 0, "VXLAN UDP port (default: the settings file's, else 4789)")
	endpoints := cmd.Flags().String("datastore", "", "etcd endpoints the daemon uses (default: the settings file's, $"+resources.EndpointsEnv+", podnet.cfg, else embedded)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		cfg, err := checkConfig(cmd, *configFile, *sock, *underlay, *endpoints, *bgpPort, *vxlanPort)
		if err != nil {
			return err
		}
		rs := syscheck.Run(cmdContext(cmd), cfg)
		if *out == formatJSON {
			if err := printJSON(cmd, stdout, rs); err != nil {
				return err
			}
		} else {
			printChecks(stdout, rs)
		}
		if n := syscheck.Problems(rs); n > 0 {
			return problemsError{fmt.Sprintf("%d of %d checks found a problem", n, len(rs))}
		}
		return nil
	}
	return cmd
}

// checkConfig gathers what the checks need: the daemon's settings (file,
// then flags), the running daemon if one answers, and the datastore.
func checkConfig(cmd *cobra.Command, configFile, sock, underlay, endpoints string, bgpPort, vxlanPort int) (syscheck.Config, error) {
	// The daemon's own flag set reads its settings file, so the checks
	// see the values the daemon would.
	d := newDaemonCmd()
	df := d.Flags()
	if err := applyDaemonConfig(df, configFile, cmd.Flags().Changed("config")); err != nil {
		return syscheck.Config{}, err
	}
	setting := func(name, override string) string {
		if override != "" {
			return override
		}
		return df.Lookup(name).Value.String()
	}
	var cfg syscheck.Config
	cfg.Underlay = setting("underlay", underlay)
	fmt.Sscan(setting("pod-mtu", ""), &cfg.PodMTU)
	cfg.VXLANPort = vxlanPort
	if vxlanPort == 0 {
		fmt.Sscan(setting("vxlan-port", ""), &cfg.VXLANPort)
	}
	if sock == "" && df.Lookup("socket").Changed {
		sock = df.Lookup("socket").Value.String()
	}
	node := setting("node", "")
	if st, err := client(sock).Status(); err == nil {
		cfg.DaemonInfo = fmt.Sprintf("podnet %s on node %s, underlay %s", st.Version, st.Node, st.Underlay)
		node = st.Node
		if cfg.Underlay == "" {
			cfg.Underlay, cfg.UnderlayFrom = st.Underlay, "the running daemon's"
		}
		path := sock
		if path == "" {
			path = nodeapi.DefaultClientSocket()
		}
		cfg.DaemonPID, _ = syscheck.DaemonPID(path)
	}
	if node == "" {
		node, _ = os.Hostname()
	}
	ds, err := daemonDatastore(setting("datastore", endpoints), datastore.Config{
		CAFile: setting("datastore-ca-file", ""), CertFile: setting("datastore-cert-file", ""), KeyFile: setting("datastore-key-file", ""),
	})
	if err != nil {
		return cfg, err
	}
	cfg.BGPPort = bgpPort
	if len(ds.Endpoints) > 0 {
		// Asked now, not in the datastore check: the BGP port check
		// needs the port the BGPConfigurations give this node.
		ctx, cancel := context.WithTimeout(cmdContext(cmd), 10*time.Second)
		defer cancel()
		what, degraded, port, err := askDatastore(ctx, ds, node)
		if bgpPort == 0 {
			cfg.BGPPort = port
		}
		cfg.DatastoreName = "etcd at " + strings.Join(ds.Endpoints, ",")
		cfg.Datastore = func(context.Context) (string, bool, error) { return what, degraded, err }
	}
	return cfg, nil
}

// askDatastore says how many etcd members answer, and which BGP port
// node's speaker will listen on (0 when the datastore does not say).
func askDatastore(ctx context.Context, ds datastore.Config, node string) (what string, degraded bool, port int, err error) {
	s, err := datastore.Open(ctx, ds)
	if err != nil {
		return "", false, 0, err
	}
	defer s.Close()
	ms, err := s.Members(ctx)
	if err != nil {
		return "", false, 0, err
	}
	up := 0
	for _, m := range ms {
		if m.Error == "" {
			up++
		}
	}
	if up < len(ms)/2+1 {
		return "", false, 0, fmt.Errorf("%d of %d members answer: no quorum", up, len(ms))
	}
	if rs, _, err := resources.New(s, resources.Options{}).List(ctx, api.KindBGPConfiguration); err == nil {
		var cfgs []*api.BGPConfiguration
		for _, r := range rs {
			if c, ok := r.(*api.BGPConfiguration); ok {
				cfgs = append(cfgs, c)
			}
		}
		port = routing.NewBGPSettings(cfgs).ListenPort(node)
	}
	return fmt.Sprintf("%d of %d members answer", up, len(ms)), up < len(ms), port, nil
}

// printChecks prints one line per check, and under each one that is not
// ok the fix.
func printChecks(w io.Writer, rs []syscheck.Result) {
	width := 0
	for _, r := range rs {
		width = max(width, len(r.Name))
	}
	for _, r := range rs {
		status := string(r.Status)
		if r.Status != syscheck.OK {
			status = strings.ToUpper(status)
		}
		fmt.Fprintf(w, "%-7s  %-*s  %s\n", status, width, r.Name, r.Detail)
		if r.Fix != "" {
			fmt.Fprintf(w, "%-7s  %-*s  fix: %s\n", "", width, "", r.Fix)
		}
	}
}
