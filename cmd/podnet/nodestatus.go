package main

import (
	"fmt"
	"net/netip"
	"strings"

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
	withRoutes := status.Flags().Bool("routes", false, "also list, under each peer, the prefixes received from it and advertised to it")
	status.RunE = func(cmd *cobra.Command, args []string) error {
		st, err := client(*sock).Status()
		if err != nil {
			return err
		}
		if *out != "json" && st.Datastore == nodeapi.DatastoreUnreachable {
			fmt.Fprintf(stdout, "datastore: %s\n\n", datastoreLine(st))
		}
		peers, err := daemonGet[[]bgp.PeerStatus](*sock, nodeapi.PathBGPPeers)
		if err != nil {
			return err
		}
		var routes map[netip.Addr]bgp.PeerRoutes
		if *withRoutes {
			list, err := daemonGet[[]bgp.PeerRoutes](*sock, nodeapi.PathBGPRoutes)
			if err != nil {
				return err
			}
			routes = make(map[netip.Addr]bgp.PeerRoutes, len(list))
			for _, r := range list {
				routes[r.Peer] = r
			}
		}
		if *out == "json" {
			// One shape: the peers, with their prefixes under --routes.
			rows := make([]peerWithRoutes, 0, len(peers))
			for _, p := range peers {
				row := peerWithRoutes{PeerStatus: p}
				if *withRoutes {
					r := routes[p.Address]
					row.Received, row.Advertised = orEmpty(r.Received), orEmpty(r.Advertised)
				}
				rows = append(rows, row)
			}
			return printJSON(cmd, stdout, rows)
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
		if *withRoutes {
			for _, p := range peers {
				r := routes[p.Address]
				fmt.Fprintln(stdout)
				fmt.Fprintf(stdout, "Peer %s (%s)\n", p.Address, p.Type)
				fmt.Fprintf(stdout, "  received (%d):   %s\n", len(r.Received), prefixList(r.Received))
				fmt.Fprintf(stdout, "  advertised (%d): %s\n", len(r.Advertised), prefixList(r.Advertised))
			}
		}
		return nil
	}
	cmd.AddCommand(status, newCheckSystemCmd(), newDiagsCmd())
	return cmd
}

// peerWithRoutes is one row of `podnet node status -o json`: the
// session, and with --routes the prefixes received and advertised.
type peerWithRoutes struct {
	bgp.PeerStatus
	Received   []netip.Prefix `json:"received,omitempty"`
	Advertised []netip.Prefix `json:"advertised,omitempty"`
}

func orEmpty(ps []netip.Prefix) []netip.Prefix {
	if ps == nil {
		return []netip.Prefix{}
	}
	return ps
}

func prefixList(ps []netip.Prefix) string {
	if len(ps) == 0 {
		return "-"
	}
	ss := make([]string, len(ps))
	for i, p := range ps {
		ss[i] = p.String()
	}
	return strings.Join(ss, " ")
}
