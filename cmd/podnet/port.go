package main

import (
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"podnet/nodeapi"
	vswitch "podnet/switch"
)

func newPortCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "port", Short: "Show the switch's ports"}
	stats := &cobra.Command{Use: "stats", Short: "Per-port packet counters and drops by reason", Args: cobra.NoArgs}
	sock := socketFlag(stats)
	out := outputFlag(stats, "table", "json")
	stats.RunE = func(cmd *cobra.Command, args []string) error {
		ports, err := daemonGet[[]vswitch.PortStats](*sock, nodeapi.PathPorts)
		if err != nil {
			return err
		}
		if *out == "json" {
			return printJSON(cmd, stdout, ports)
		}
		tw := newTable(stdout)
		fmt.Fprintln(tw, "PORT\tNAME\tKIND\tDEVICE\tIP\tRX PKTS\tRX BYTES\tTX PKTS\tTX BYTES\tGSO IN\tGSO OUT\tARP\tICMP ERR\tNAT\tDROPS")
		for _, p := range ports {
			var drops []string
			for reason, n := range p.Drops {
				drops = append(drops, fmt.Sprintf("%s=%d", reason, n))
			}
			slices.Sort(drops)
			d := strings.Join(drops, ",")
			if d == "" {
				d = "-"
			}
			idx := fmt.Sprint(p.Index)
			if p.Index < 0 {
				idx = p.Kind
			}
			ip := p.IP
			if ip == "" {
				ip = "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\n", idx, p.Name, p.Kind, p.Device, ip,
				p.RxFrames, p.RxBytes, p.TxFrames, p.TxBytes, p.GSOFrames, p.TxSuperframes, p.ARPReplies, p.ICMPErrors, p.NATPackets, d)
		}
		return tw.Flush()
	}
	cmd.AddCommand(stats)
	return cmd
}
