package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"podnet/nodeapi"
)

// newLabCaptureCmd is `podnet lab capture`: podnet capture on the node
// that holds the link, named the lab's way.
func newLabCaptureCmd(name *string) *cobra.Command {
	var file string
	var count int
	var seconds float64
	cmd := &cobra.Command{
		Use:   "capture LINK [FILTER...]",
		Short: "Show or save the packets on one link of the lab, each packet once",
		Long: `capture shows the packets on one link of the lab, as podnet capture does
on a node: a pod's port (LINK is the pod's name), a node's own port
(worker1:host), the packets a node's tunnel carries (worker1:vxlan,
worker1:ipip) or a node's underlay interface, the wire with outer headers
(worker1:underlay, or just worker1). Unlike tcpdump -i any in the fabric,
each packet shows once, at the link you picked.

FILTER terms, joined by "and": host ADDR, port N, tcp, udp, icmp.`,
		Example: `  podnet lab capture test-1
  podnet lab capture worker1 host 192.168.15.193
  podnet lab capture worker2:vxlan -w /tmp/vxlan.pcap --seconds 5`,
		Args: cobra.MinimumNArgs(1),
	}
	cmd.Flags().StringVarP(&file, "write", "w", "", "write a pcapng file instead of printing")
	cmd.Flags().IntVarP(&count, "count", "c", 0, "stop after this many packets (default: until interrupted)")
	cmd.Flags().Float64Var(&seconds, "seconds", 0, "stop after this many seconds (at most 3600)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		l, err := openLab(*name)
		if err != nil {
			return err
		}
		st := l.Status()
		nodeName, port, _ := strings.Cut(args[0], ":")
		if port == "" {
			port = "underlay"
		}
		if n := labNode(st, nodeName); n == nil {
			// A pod: its port on the node it runs on.
			nodeName, port = "", args[0]
			for _, p := range st.Pods {
				if p.Name == args[0] {
					nodeName = p.Node
				}
			}
			if nodeName == "" {
				return usageError{fmt.Errorf("%s is no pod or node of lab %s (a pod, or NODE[:host|ipip|vxlan|underlay])", args[0], l.Name())}
			}
		}
		n := labNode(st, nodeName)
		return runCapture(nodeapi.NewClient(n.Socket), port, strings.Join(args[1:], " "), count, seconds, file)
	}
	return cmd
}
