package main

import (
	"fmt"
	"io"
	"net/netip"

	"github.com/spf13/cobra"

	"podnet/nodeapi"
	vswitch "podnet/switch"
)

func newTraceCmd() *cobra.Command {
	var q vswitch.TraceQuery
	var node string
	cmd := &cobra.Command{
		Use:   "trace SRC DST",
		Short: "Show what this node's switch does with a packet from SRC to DST",
		Long: `trace asks this node's switch how it would forward one packet: where it
enters (a pod port, the host, a tunnel), the checks it passes, the route
that matches and where it came from, the egress and its encapsulation, or
why it is dropped and which ICMP error goes back. The packet is run
through the switch's own forwarding code without being sent.

SRC and DST are IPv4 addresses or names of pods on this node. In a lab,
"podnet lab trace" follows a packet across nodes.`,
		Example: `  podnet trace test-1 192.168.14.2
  podnet trace 192.168.14.2 10.77.0.100 --proto tcp --port 80
  podnet trace 10.0.2.5 test-1 --from vxlan --node 10.77.0.3   # as if node 10.77.0.3 sent it
  podnet trace 10.0.2.5 test-1 --from vxlan --node 10.77.0.3 --ecn ect0 --outer-ecn ce   # a router marked congestion`,
		Args: cobra.ExactArgs(2),
	}
	sock := socketFlag(cmd)
	out := outputFlag(cmd, "table", "json")
	cmd.Flags().StringVar(&q.From, "from", "", "where the packet enters: a pod's name, host, ipip or vxlan (default: the pod whose address is SRC, else host)")
	cmd.Flags().StringVar(&node, "node", "", "with --from ipip|vxlan: the sending node's underlay address")
	cmd.Flags().StringVar(&q.Proto, "proto", "icmp", "icmp, tcp or udp")
	cmd.Flags().Uint16Var(&q.Port, "port", 0, "destination port (tcp, udp)")
	cmd.Flags().IntVar(&q.Size, "size", 0, "IPv4 packet size in bytes (default 84, a ping)")
	cmd.Flags().Uint8Var(&q.TTL, "ttl", 0, "TTL on arrival (default 64)")
	cmd.Flags().BoolVar(&q.DF, "df", false, "set don't-fragment")
	cmd.Flags().StringVar(&q.ECN, "ecn", "", "the packet's ECN field: not-ect (default), ect0, ect1 or ce")
	cmd.Flags().StringVar(&q.OuterECN, "outer-ecn", "", "with --from ipip|vxlan: the outer header's ECN field on arrival, as a router may have marked it (default: what the sender wrote)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c := client(*sock)
		var err error
		if q.Src, err = resolveAddr(c, args[0], &q.From); err != nil {
			return err
		}
		noFrom := ""
		if q.Dst, err = resolveAddr(c, args[1], &noFrom); err != nil {
			return err
		}
		if node != "" {
			if q.Node, err = netip.ParseAddr(node); err != nil || !q.Node.Is4() {
				return usagef("--node %q: want the sending node's IPv4 underlay address", node)
			}
		}
		var res vswitch.TraceResult
		if err := c.Post(nodeapi.PathTrace, q, &res); err != nil {
			return err
		}
		if *out == "json" {
			return printJSON(cmd, stdout, res)
		}
		printTrace(stdout, "", res)
		return nil
	}
	return cmd
}

// resolveAddr turns a pod name of this node into its address; a pod named
// as the source is also where the packet enters, unless --from says.
func resolveAddr(c *nodeapi.Client, s string, from *string) (netip.Addr, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		if !a.Is4() {
			return netip.Addr{}, fmt.Errorf("%s: only IPv4 is routed", s)
		}
		return a, nil
	}
	pods, err := c.Pods()
	if err != nil {
		return netip.Addr{}, err
	}
	for _, p := range pods {
		if p.Name == s {
			if *from == "" {
				*from = p.Name
			}
			return netip.ParseAddr(p.IP)
		}
	}
	return netip.Addr{}, fmt.Errorf("%s is neither an IPv4 address nor a pod on this node", s)
}

// printTrace writes one node's trace for people; indent prefixes lines.
func printTrace(w io.Writer, indent string, r vswitch.TraceResult) {
	fmt.Fprintf(w, "%singress  %s\n", indent, r.Ingress)
	for _, s := range r.Steps {
		fmt.Fprintf(w, "%s  %-22s %s\n", indent, s.Check, s.Result)
	}
	switch r.Verdict {
	case "drop":
		fmt.Fprintf(w, "%sverdict  DROPPED (%s)\n", indent, r.Drop)
	case "encapsulate":
		fmt.Fprintf(w, "%sverdict  encapsulated to node %s over %s\n%s  outer  %s\n", indent, r.NextHop, r.Egress, indent, r.Outer)
	default:
		fmt.Fprintf(w, "%sverdict  %s → %s\n", indent, r.Verdict, r.Egress)
	}
	if r.ICMP != "" {
		fmt.Fprintf(w, "%s  icmp back to the sender: %s\n", indent, r.ICMP)
	}
	if r.Packets > 1 {
		fmt.Fprintf(w, "%s  leaves as %d packets\n", indent, r.Packets)
	}
}
