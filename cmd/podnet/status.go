package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"podnet/nodeapi"
)

func newStatusCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "status", Short: "Show whether this node's daemon runs, and its summary", Args: cobra.NoArgs}
	sock := socketFlag(cmd)
	out := outputFlag(cmd, formatTable, formatJSON)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		s, err := client(*sock).Status()
		if err != nil {
			return err
		}
		if *out == "json" {
			return printJSON(cmd, stdout, s)
		}
		tw := newTable(stdout)
		fmt.Fprintf(tw, "node:\t%s\n", s.Node)
		fmt.Fprintf(tw, "underlay:\t%s %s\n", s.Underlay, s.Address)
		if s.UnderlayProblem != "" {
			fmt.Fprintf(tw, "underlay problem:\t%s\n", s.UnderlayProblem)
		}
		fmt.Fprintf(tw, "host port:\t%s\n", s.HostPort)
		fmt.Fprintf(tw, "tap offload:\t%v\n", s.TapOffload)
		fmt.Fprintf(tw, "udp superframes:\t%s\n", udpSuperframesLine(s.UDPSuperframes))
		if s.VXLANSuperframes != "" {
			fmt.Fprintf(tw, "vxlan superframes:\t%s\n", s.VXLANSuperframes)
		}
		if s.IPIPSuperframes != "" {
			fmt.Fprintf(tw, "ipip superframes:\t%s\n", s.IPIPSuperframes)
		}
		fmt.Fprintf(tw, "pod MTU:\t%d\n", s.PodMTU)
		fmt.Fprintf(tw, "pods:\t%d\n", s.Pods)
		fmt.Fprintf(tw, "routes:\t%d\n", s.Routes)
		fmt.Fprintf(tw, "up since:\t%s (%s)\n", s.Started.Format(time.RFC3339), time.Since(s.Started).Round(time.Second))
		fmt.Fprintf(tw, "datastore:\t%s\n", datastoreLine(s))
		if len(s.PendingReleases) > 0 {
			fmt.Fprintf(tw, "pending releases:\t%s (retried while the datastore answers)\n", strings.Join(s.PendingReleases, ", "))
		}
		return tw.Flush()
	}
	return cmd
}

// datastoreLine says whether the daemon reaches etcd, for status and
// node status.
func datastoreLine(s nodeapi.Status) string {
	switch s.Datastore {
	case nodeapi.DatastoreUnreachable:
		line := fmt.Sprintf("unreachable since %s (%s): pods here keep forwarding; pod add is refused until it is back", s.DatastoreSince.Format(time.RFC3339), s.DatastoreError)
		if !s.Registered {
			line += "; the node registers, and BGP starts, once it answers"
		}
		return line
	case nodeapi.DatastoreReachable:
		return "reachable"
	}
	return s.Datastore
}

// udpSuperframesLine says whether datagram bursts are merged, and why not.
func udpSuperframesLine(on bool) string {
	if on {
		return "true (a burst of one flow's datagrams reaches an offload pod or the node in one write; a pod's UDP_SEGMENT send is read in one)"
	}
	return "false (one write per datagram: plain TAPs, or a kernel without USO, before Linux 6.2)"
}
