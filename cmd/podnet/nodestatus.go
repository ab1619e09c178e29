package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"podnet/nodeapi"
	"podnet/router/bgp"
)

func newNodeCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "node", Short: "This node's daemon and its BGP sessions"}
	status := &cobra.Command{
		Use:   "status",
		Short: "BGP peers of this node: address, type, state, since when, and why a session is not up",
		Args:  cobra.NoArgs,
	}
	sock := socketFlag(status)
	out := outputFlag(status, "table", "json")
	status.RunE = func(cmd *cobra.Command, args []string) error {
		peers, err := daemonGet[[]bgp.PeerStatus](*sock, nodeapi.PathBGPPeers)
		if err != nil {
			return err
		}
		if *out == "json" {
			return printJSON(cmd, stdout, peers)
		}
		fmt.Fprintln(stdout, "podnet process is running.")
		fmt.Fprintln(stdout)
		fmt.Fprintln(stdout, "IPv4 BGP status")
		if len(peers) == 0 {
			fmt.Fprintln(stdout, "No IPv4 peers found.")
			return nil
		}
		var rows [][]string
		for _, p := range peers {
			state, since := "start", "-"
			if p.State == "Established" {
				state = "up"
			}
			if !p.Since.IsZero() {
				since = p.Since.Local().Format("15:04:05")
			}
			info := p.Info
			if info == "" {
				info = p.State
			}
			rows = append(rows, []string{p.Address.String(), p.Type, state, since, info})
		}
		borderTable(stdout, []string{"PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO"}, rows)
		return nil
	}
	cmd.AddCommand(status)
	return cmd
}
