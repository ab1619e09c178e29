package main

import (
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"podnet/lab"
)

// newLabListCmd is `podnet lab list`: the labs that are up.
func newLabListCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the labs that are up",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			names, err := lab.List()
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if len(names) == 0 {
				fmt.Fprintln(w, "no lab is up; start one with: podnet lab up")
				return nil
			}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tNODES\tPODS\tDATASTORE")
			for _, n := range names {
				l, err := lab.Open(n)
				if err != nil {
					fmt.Fprintf(tw, "%s\t-\t-\t%v\n", n, err)
					continue
				}
				s := l.Status()
				ds := s.Datastore
				if ds == "" {
					ds = "-"
				}
				fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", n, len(s.Nodes), len(s.Pods), ds)
			}
			return tw.Flush()
		},
	}
}

// newLabEnvCmd is `podnet lab env`: the exports that make this shell's
// podnet commands talk to a lab.
func newLabEnvCmd(name *string) *cobra.Command {
	var node string
	cmd := &cobra.Command{
		Use:   "env [--name NAME] [--node NODE]",
		Short: "Print the exports for using a lab from the host: eval \"$(podnet lab env)\"",
		Long: `Print export lines for this shell: PODNET_LAB (the default --name of
podnet lab commands), PODNET_DATASTORE_ENDPOINTS (the lab's etcd, for
podnet get/apply/ipam ...) and PODNET_SOCKET (NODE's daemon, default the
first node, for podnet node status, route list, pod list ...). Use it as
  eval "$(podnet lab env --name NAME)"`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := openLab(*name)
			if err != nil {
				return err
			}
			env, err := l.Env(node)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			for _, e := range env {
				k, v, _ := strings.Cut(e, "=")
				fmt.Fprintf(w, "export %s=%s\n", k, shellWord(v))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "node whose daemon PODNET_SOCKET points at (default: the first node)")
	return cmd
}

// shellWord quotes s for a POSIX shell unless it needs none.
func shellWord(s string) string {
	if s != "" && strings.IndexFunc(s, func(c rune) bool {
		return !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("-_./:=,+@%", c))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// newLabPodCmd is `podnet lab pod add|del`: pods added to a running lab,
// with an HTTP server, seen by lab exec, status and down.
func newLabPodCmd(name *string) *cobra.Command {
	cmd := &cobra.Command{Use: "pod", Short: "Add or delete pods of a running lab"}
	var spec lab.PodSpec
	add := &cobra.Command{
		Use:   "add NAME [--node NODE] [--pool POOL]",
		Short: "Add a pod (namespace LAB-NAME, eth0 from the node's daemon, HTTP on port 80)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := openLab(*name)
			if err != nil {
				return err
			}
			spec.Name = args[0]
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			p, err := l.AddPod(ctx, spec)
			if err != nil {
				return flatten(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "pod %s added on %s: %s (netns %s, http pid %d)\n", p.Name, p.Node, p.IP, p.Netns, p.HTTPPID)
			return nil
		},
	}
	add.Flags().StringVar(&spec.Node, "node", "", "node to attach to (default: the node with the fewest pods)")
	add.Flags().StringVar(&spec.Pool, "pool", "", "IP pool for the address (default: any enabled pool)")
	del := &cobra.Command{
		Use:   "del NAME",
		Short: "Delete a pod of the lab: HTTP server, eth0 and address, namespace",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := openLab(*name)
			if err != nil {
				return err
			}
			if err := l.DeletePod(cmd.Context(), args[0]); err != nil {
				return flatten(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "pod %s deleted\n", args[0])
			return nil
		},
	}
	cmd.AddCommand(add, del)
	return cmd
}

// newLabScaleCmd is `podnet lab scale DEPLOYMENT=N`.
func newLabScaleCmd(name *string) *cobra.Command {
	return &cobra.Command{
		Use:   "scale DEPLOYMENT=REPLICAS",
		Short: "Add or remove pods DEPLOYMENT-1..N to reach REPLICAS, spread over the nodes",
		Long: `Like a Kubernetes deployment's replica count: 'podnet lab scale test=5'
adds the missing pods test-1..test-5, each on the node with the fewest
pods, and removes test-6 and above. Each pod serves HTTP on port 80.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dep, n, ok := strings.Cut(args[0], "=")
			replicas, err := strconv.Atoi(n)
			if !ok || dep == "" || err != nil {
				return usagef("scale %q: want DEPLOYMENT=REPLICAS, e.g. test=5", args[0])
			}
			l, err := openLab(*name)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			added, removed, err := l.Scale(ctx, dep, replicas)
			w := cmd.OutOrStdout()
			for _, p := range l.Status().Pods {
				for _, a := range added {
					if a == p.Name {
						fmt.Fprintf(w, "pod %s added on %s: %s\n", p.Name, p.Node, p.IP)
					}
				}
			}
			for _, r := range removed {
				fmt.Fprintf(w, "pod %s deleted\n", r)
			}
			if err != nil {
				return flatten(err)
			}
			fmt.Fprintf(w, "deployment %s: %d pods\n", dep, replicas)
			return nil
		},
	}
}

// newLabIPCmd is `podnet lab ip TARGET`: a pod's or node's address, for
// command lines such as wget -qO- http://$(podnet lab ip test-2)/.
func newLabIPCmd(name *string) *cobra.Command {
	return &cobra.Command{
		Use:   "ip POD|NODE|external",
		Short: "Print the address of a pod, a node (its underlay address) or the external host",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := openLab(*name)
			if err != nil {
				return err
			}
			s := l.Status()
			for _, p := range s.Pods {
				if p.Name == args[0] {
					fmt.Fprintln(cmd.OutOrStdout(), p.IP)
					return nil
				}
			}
			for _, n := range s.Nodes {
				if n.Name == args[0] {
					fmt.Fprintln(cmd.OutOrStdout(), n.Address.Addr())
					return nil
				}
			}
			if args[0] == "external" && s.External != nil {
				fmt.Fprintln(cmd.OutOrStdout(), s.External.Address.Addr())
				return nil
			}
			var names []string
			for _, p := range s.Pods {
				names = append(names, p.Name)
			}
			for _, n := range s.Nodes {
				names = append(names, n.Name)
			}
			return fmt.Errorf("lab %s has no pod or node %q (have: %s)", s.Name, args[0], strings.Join(names, ", "))
		},
	}
}
