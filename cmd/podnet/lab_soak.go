package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"podnet/lab/soak"
)

// newLabSoakCmd is `podnet lab soak`: a lab of its own, traffic on every
// path and a pod added and removed every second, then a verdict on the
// daemons' memory, goroutines and fds and on IPAM.
func newLabSoakCmd(name *string) *cobra.Command {
	var cfg soak.Config
	cmd := &cobra.Command{
		Use:   "soak [--duration D] [--nodes N]",
		Short: "Soak a fresh lab: traffic on every path, pods churned every second; fail on leaks",
		Long: `Build a lab of its own (default name "soak"; --name picks another), keep
traffic on every path (pod to pod on one node and across nodes, node to
pod, pod to the external host through NAT outgoing; pings, iperf3 and HTTP)
while a pod is added and another deleted every second on rotating nodes
and the default pool switches live between IP-in-IP, VXLAN and plain
routing. Each daemon's RSS, goroutines and open fds are sampled
throughout. At the end IPAM must be clean and the daemons' pods must be
the lab's. The lab is removed however the soak ends (Ctrl-C too).

The summary table ends with PASS or FAIL and the rules broken; the exit
status is 3 when a rule is broken, 1 when the soak was interrupted. The rules and their reasons are in
docs/soak.md. make soak runs it for 20 minutes (make soak SOAK=2m for
less).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.Flag("name").Changed {
				cfg.Name = *name
				if err := checkLabName(cfg.Name); err != nil {
					return err
				}
			}
			if cfg.Duration < soak.MinDuration {
				return usagef("--duration %v: must be at least %v", cfg.Duration, soak.MinDuration)
			}
			if cfg.Nodes < 2 {
				return usagef("--nodes %d: must be 2 or more (cross-node paths need two)", cfg.Nodes)
			}
			out := cmd.OutOrStdout()
			cfg.Progress = out
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			rep, err := soak.Run(ctx, cfg)
			if rep != nil {
				fmt.Fprintln(out)
				rep.Write(out)
			}
			if err != nil {
				return flatten(err)
			}
			if ctx.Err() != nil {
				// Not a verdict: the soak did not run its course.
				return fmt.Errorf("lab soak: interrupted after the summary above; lab %s removed", rep.Lab)
			}
			if n := len(rep.Failures()); n > 0 {
				return problemsError{fmt.Sprintf("lab soak: %d problems", n)}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.DurationVar(&cfg.Duration, "duration", soak.DefaultDuration, "how long pods are churned under traffic (at least 20s)")
	f.IntVar(&cfg.Nodes, "nodes", soak.DefaultNodes, "number of nodes")
	f.DurationVar(&cfg.Interval, "interval", 0, "how often the daemons are sampled (default: duration/40 within 1s..10s)")
	f.StringVar(&cfg.ProfileDir, "profiles", "", "directory for each daemon's heap profile and goroutine stacks at the start and end (default: none)")
	return cmd
}
