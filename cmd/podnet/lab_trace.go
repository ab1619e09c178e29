package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"podnet/lab"
	"podnet/nodeapi"
	vswitch "podnet/switch"
)

// newLabTraceCmd is `podnet lab trace`: a packet followed node by node.
func newLabTraceCmd(name *string) *cobra.Command {
	var q vswitch.TraceQuery
	var probe bool
	cmd := &cobra.Command{
		Use:   "trace SRC DST",
		Short: "Follow a packet through the lab, node by node, from the live tables",
		Long: `trace follows one packet from SRC to DST through the lab: on each node
it asks that node's switch what it does (ingress, checks, route and where
it came from, egress and encapsulation, or the drop and its reason), then
follows the packet to the node it is sent to. SRC and DST are lab pods,
nodes (worker1 ...), external, or addresses.

--probe then sends a real ping along the same path and checks each
node's counters: the packet was seen where the trace says, and dropped or
delivered where it says.`,
		Example: `  podnet lab trace test-1 test-2 --probe
  podnet lab trace test-1 external --proto tcp --port 80
  podnet lab trace test-1 test-2 --ttl 2        # where does TTL 2 run out?`,
		Args: cobra.ExactArgs(2),
	}
	cmd.Flags().StringVar(&q.Proto, "proto", "icmp", "icmp, tcp or udp")
	cmd.Flags().Uint16Var(&q.Port, "port", 0, "destination port (tcp, udp)")
	cmd.Flags().IntVar(&q.Size, "size", 0, "IPv4 packet size in bytes (default 84, a ping)")
	cmd.Flags().Uint8Var(&q.TTL, "ttl", 0, "TTL as sent (default 64)")
	cmd.Flags().BoolVar(&q.DF, "df", false, "set don't-fragment")
	cmd.Flags().StringVar(&q.ECN, "ecn", "", "the packet's ECN field as sent: not-ect (default), ect0, ect1 or ce")
	cmd.Flags().StringVar(&q.OuterECN, "outer-ecn", "", "the outer ECN field at every tunnel hop, as a router on the underlay may have marked it (default: what the sending node wrote)")
	cmd.Flags().BoolVar(&probe, "probe", false, "send a real ping and confirm each hop from the counters")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		l, err := openLab(*name)
		if err != nil {
			return err
		}
		if probe && q.Proto != "icmp" {
			return fmt.Errorf("--probe sends a ping: use it with --proto icmp")
		}
		if probe && q.OuterECN != "" {
			return fmt.Errorf("--probe sends a real ping, whose outer ECN field is what the tunnel writes: leave out --outer-ecn")
		}
		st := l.Status()
		srcNode, from, src, err := labEndpoint(st, args[0])
		if err != nil {
			return err
		}
		_, _, dst, err := labEndpoint(st, args[1])
		if err != nil {
			return err
		}
		if srcNode == "" {
			return fmt.Errorf("%s is not on a node of lab %s: a trace starts at a pod or a node", args[0], l.Name())
		}
		q.Src, q.Dst, q.From = src, dst, from
		hops, err := labTrace(st, srcNode, q)
		for _, h := range hops {
			if h.kernel != "" {
				fmt.Fprintf(stdout, "on %s (its kernel, not the switch):\n  %s\n", h.node, h.kernel)
				continue
			}
			fmt.Fprintf(stdout, "on %s:\n", h.node)
			printTrace(stdout, "  ", h.res)
		}
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, traceSummary(st, hops))
		if probe {
			// The ping goes from the pod, or from the node itself.
			target := from
			if from == "host" {
				target = srcNode
			}
			return probeTrace(cmd.Context(), l, st, target, q, hops, stdout)
		}
		return nil
	}
	return cmd
}

// traceHop is the trace on one node: its switch's, or, when kernel is
// set, the node's kernel's fate for the packet (plain routing: the
// kernels forward between the switches, and TTL can run out there).
type traceHop struct {
	node   string
	res    vswitch.TraceResult
	kernel string
}

// kernelTTLExceeded is what a node's kernel does with a packet it would
// forward with TTL 1 or less.
const kernelTTLExceeded = "TTL exceeded: dropped, ICMP time exceeded back to the sender from the node's address"

// labEndpoint resolves a lab name or an address: the node it lives on
// ("" outside the nodes), where a packet from it enters that node's
// switch, and its address.
func labEndpoint(st lab.Status, s string) (nodeName, from string, addr netip.Addr, err error) {
	for _, p := range st.Pods {
		if p.Name == s || p.IP.String() == s {
			return p.Node, p.Name, p.IP, nil
		}
	}
	for _, n := range st.Nodes {
		if n.Name == s || n.Address.Addr().String() == s {
			return n.Name, "host", n.Address.Addr(), nil
		}
	}
	if st.External != nil && (s == "external" || st.External.Address.Addr().String() == s) {
		return "", "", st.External.Address.Addr(), nil
	}
	a, perr := netip.ParseAddr(s)
	if perr != nil || !a.Is4() {
		return "", "", netip.Addr{}, fmt.Errorf("%s is no pod, node or external host of lab %s, nor an IPv4 address", s, st.Name)
	}
	return "", "", a, nil
}

// labTrace traces q on node first, then on each node the packet is sent
// to, until it is delivered, leaves the cluster or is dropped.
func labTrace(st lab.Status, first string, q vswitch.TraceQuery) ([]traceHop, error) {
	var hops []traceHop
	cur := first
	for len(hops) < 8 {
		n := labNode(st, cur)
		if n == nil {
			return hops, fmt.Errorf("no node %s in lab %s", cur, st.Name)
		}
		var res vswitch.TraceResult
		if err := nodeapi.NewClient(n.Socket).Post(nodeapi.PathTrace, q, &res); err != nil {
			return hops, fmt.Errorf("trace on %s: %w", cur, err)
		}
		hops = append(hops, traceHop{node: cur, res: res})
		var next *lab.NodeStatus
		switch {
		case res.Verdict == "encapsulate":
			next = labNodeByAddr(st, res.NextHop)
			q.From, q.Node = res.Egress, n.Address.Addr()
			q.TTL = res.TTLOut
		case res.Verdict == "host" && res.Route != nil && res.Route.NextHop.IsValid():
			// Plain routing: the node's kernel forwards it on the underlay
			// to the next node, whose kernel forwards it to its switch:
			// two more TTL, and either kernel drops it at TTL 1.
			if res.TTLOut <= 1 {
				return append(hops, traceHop{node: cur, kernel: kernelTTLExceeded}), nil
			}
			next = labNodeByAddr(st, res.Route.NextHop)
			if next != nil && res.TTLOut <= 2 {
				return append(hops, traceHop{node: next.Name, kernel: kernelTTLExceeded}), nil
			}
			q.From, q.Node = "host", netip.Addr{}
			q.TTL = res.TTLOut - 2
		}
		if next == nil {
			return hops, nil
		}
		cur = next.Name
	}
	return hops, fmt.Errorf("more than 8 hops: a loop?")
}

func labNode(st lab.Status, name string) *lab.NodeStatus {
	for i := range st.Nodes {
		if st.Nodes[i].Name == name {
			return &st.Nodes[i]
		}
	}
	return nil
}

func labNodeByAddr(st lab.Status, a netip.Addr) *lab.NodeStatus {
	for i := range st.Nodes {
		if st.Nodes[i].Address.Addr() == a {
			return &st.Nodes[i]
		}
	}
	return nil
}

// traceSummary says in one line where the packet ends.
func traceSummary(st lab.Status, hops []traceHop) string {
	last := hops[len(hops)-1]
	var path []string
	for _, h := range hops {
		path = append(path, h.node)
	}
	r := last.res
	if last.kernel != "" {
		return fmt.Sprintf("result: dropped in %s's kernel (ttl-exceeded), path %s", last.node, strings.Join(path, " → "))
	}
	switch r.Verdict {
	case "drop":
		return fmt.Sprintf("result: dropped on %s (%s), path %s", last.node, r.Drop, strings.Join(path, " → "))
	case "nat":
		n := labNode(st, last.node)
		return fmt.Sprintf("result: leaves the cluster through NAT on %s as %s, path %s", last.node, n.Address.Addr(), strings.Join(path, " → "))
	case "deliver":
		return fmt.Sprintf("result: delivered to %s, path %s", r.Egress, strings.Join(path, " → "))
	case "host":
		return fmt.Sprintf("result: handed to %s's own stack, path %s", last.node, strings.Join(path, " → "))
	}
	return fmt.Sprintf("result: %s, path %s", r.Verdict, strings.Join(path, " → "))
}

// probeTrace pings along the traced path and checks, on every node, that
// the ingress port saw the packet and that the last node dropped or
// delivered it as traced.
func probeTrace(ctx context.Context, l *lab.Lab, st lab.Status, src string, q vswitch.TraceQuery, hops []traceHop, w io.Writer) error {
	before := map[string][]vswitch.PortStats{}
	for _, h := range hops {
		var ports []vswitch.PortStats
		err := nodeapi.NewClient(labNode(st, h.node).Socket).Get(nodeapi.PathPorts, &ports)
		if err != nil {
			return err
		}
		before[h.node] = ports
	}
	args := []string{"ping", "-n", "-c", "1", "-W", "1"}
	if q.TTL > 0 {
		args = append(args, "-t", strconv.Itoa(int(q.TTL)))
	}
	if q.Size > 0 {
		args = append(args, "-s", strconv.Itoa(max(q.Size-28, 0)))
	}
	if q.DF {
		args = append(args, "-M", "do")
	}
	if ecn, ok := vswitch.ParseECN(q.ECN); ok {
		args = append(args, "-Q", strconv.Itoa(int(ecn)))
	}
	out, err := l.Output(ctx, src, append(args, q.Dst.String())...)
	if ee := (*exec.ExitError)(nil); err != nil && !errors.As(err, &ee) {
		return fmt.Errorf("probe: ping from %s: %w", src, err) // not ping's own failure
	}
	fmt.Fprintf(w, "probe: %s\n", firstLines(string(out), 2))
	var failed []string
	for i, h := range hops {
		if h.kernel != "" {
			// No switch counter sees a kernel's drop; the sender gets
			// its ICMP error.
			if i == len(hops)-1 && !strings.Contains(string(out), "Time to live exceeded") {
				failed = append(failed, fmt.Sprintf("%s's kernel: ping got no time exceeded", h.node))
			}
			continue
		}
		var after []vswitch.PortStats
		err := nodeapi.NewClient(labNode(st, h.node).Socket).Get(nodeapi.PathPorts, &after)
		if err != nil {
			return err
		}
		in := ingressPort(h.res.Ingress)
		d := portDelta(before[h.node], after, in)
		if d.RxFrames == 0 {
			failed = append(failed, fmt.Sprintf("%s: port %s saw nothing", h.node, in))
			continue
		}
		last := i == len(hops)-1
		switch {
		case last && h.res.Verdict == "drop":
			if d.Drops[h.res.Drop] == 0 {
				failed = append(failed, fmt.Sprintf("%s: no %s drop counted on %s (drops %v)", h.node, h.res.Drop, in, d.Drops))
			}
		case last && h.res.Verdict == "deliver":
			eg := ingressPort(h.res.Egress)
			if portDelta(before[h.node], after, eg).TxFrames == 0 {
				failed = append(failed, fmt.Sprintf("%s: nothing sent to %s", h.node, eg))
			}
		case last && h.res.Verdict == "nat":
			if d.NATPackets == 0 {
				failed = append(failed, fmt.Sprintf("%s: nothing handed to NAT from %s", h.node, in))
			}
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("probe disagrees with the trace: %s", strings.Join(failed, "; "))
	}
	if last := hops[len(hops)-1]; last.kernel != "" {
		fmt.Fprintf(w, "probe: confirmed: each switch on the way saw the packet, and %s's kernel sent time exceeded\n", last.node)
		return nil
	}
	fmt.Fprintf(w, "probe: confirmed on %d node(s): each ingress saw the packet, and the last node %s it\n", len(hops), verdictVerb(hops[len(hops)-1].res.Verdict))
	return nil
}

func verdictVerb(v string) string {
	switch v {
	case "drop":
		return "dropped"
	case "deliver":
		return "delivered"
	case "nat":
		return "NATed"
	}
	return "forwarded"
}

// ingressPort turns a trace's "pod test-1 (port 0, ...)" / "host podnet0
// ..." / "tunnel vxlan from ..." / "vxlan" into the port's stats name.
func ingressPort(s string) string {
	f := strings.Fields(s)
	switch {
	case len(f) >= 2 && (f[0] == "pod" || f[0] == "tunnel"):
		return f[1]
	case len(f) >= 1 && f[0] == "host":
		return "host"
	case len(f) >= 1:
		return f[0]
	}
	return s
}

// portDelta is what moved on port between two snapshots.
func portDelta(before, after []vswitch.PortStats, port string) vswitch.PortStats {
	var b, a vswitch.PortStats
	for _, p := range before {
		if p.Name == port {
			b = p
		}
	}
	for _, p := range after {
		if p.Name == port {
			a = p
		}
	}
	d := vswitch.PortStats{Name: port, RxFrames: a.RxFrames - b.RxFrames, TxFrames: a.TxFrames - b.TxFrames,
		NATPackets: a.NATPackets - b.NATPackets, Drops: map[string]uint64{}}
	for k, v := range a.Drops {
		if v > b.Drops[k] {
			d.Drops[k] = v - b.Drops[k]
		}
	}
	return d
}

func firstLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, " / ")
}
