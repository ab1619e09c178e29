package main

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"podnet/nat"
	"podnet/nodeapi"
)

func newNATCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "nat", Short: "NAT outgoing: the connection table and its counters"}
	list := &cobra.Command{Use: "list", Short: "Connections translated to the node's address", Args: cobra.NoArgs}
	lsock := socketFlag(list)
	lout := outputFlag(list, "table", "wide", "json")
	list.RunE = func(cmd *cobra.Command, args []string) error {
		es, err := daemonGet[[]nat.Entry](*lsock, nodeapi.PathNATEntries)
		if err != nil {
			return err
		}
		if *lout == "json" {
			return printJSON(cmd, stdout, es)
		}
		tw := newTable(stdout)
		if *lout == "wide" {
			fmt.Fprintln(tw, "PROTO\tPOD\tNODE\tREMOTE\tSTATE\tOUT BYTES\tIN BYTES\tAGE\tIDLE")
		} else {
			fmt.Fprintln(tw, "PROTO\tPOD\tNODE\tREMOTE\tSTATE")
		}
		for _, e := range es {
			nodeSide := "-"
			if e.Node.IsValid() {
				nodeSide = e.Node.String()
			}
			if *lout == "wide" {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\n", e.Proto, e.Pod, nodeSide, e.Remote, e.State,
					e.BytesOut, e.BytesIn, e.Age.Round(time.Second), e.Idle.Round(time.Second))
			} else {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.Proto, e.Pod, nodeSide, e.Remote, e.State)
			}
		}
		return tw.Flush()
	}
	stats := &cobra.Command{Use: "stats", Short: "Entries by protocol, drops by reason, port use", Args: cobra.NoArgs}
	ssock := socketFlag(stats)
	sout := outputFlag(stats, formatTable, formatJSON)
	stats.RunE = func(cmd *cobra.Command, args []string) error {
		s, err := daemonGet[nat.Stats](*ssock, nodeapi.PathNATStats)
		if err != nil {
			return err
		}
		if *sout == "json" {
			return printJSON(cmd, stdout, s)
		}
		fmt.Fprintf(stdout, "entries: %d (tcp %d, udp %d, icmp %d), %d admitted since start\n",
			s.Entries, s.ByProto["tcp"], s.ByProto["udp"], s.ByProto["icmp"], s.ConnsTotal)
		fmt.Fprintf(stdout, "tcp:     %s; packet-path connections since start: %d\n", s.TCPPath, s.PacketConnsTotal)
		fmt.Fprintf(stdout, "ports:   %d in use of %d\n", s.PortsInUse, s.PortsTotal)
		var drops []string
		for k, v := range s.Drops {
			if v > 0 {
				drops = append(drops, fmt.Sprintf("%s=%d", k, v))
			}
		}
		slices.Sort(drops)
		if len(drops) == 0 {
			drops = []string{"none"}
		}
		fmt.Fprintf(stdout, "drops:   %s\n", strings.Join(drops, " "))
		return nil
	}
	cmd.AddCommand(list, stats)
	return cmd
}
