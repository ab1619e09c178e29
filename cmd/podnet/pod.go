package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"podnet/nodeapi"
)

func newPodCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "pod", Short: "Attach, detach and list pods on this node"}

	var req nodeapi.AddPodRequest
	add := &cobra.Command{
		Use:   "add NAME (--netns PATH | --new) [--ip A.B.C.D | --pool NAME]",
		Short: "Give a pod (a network namespace) an eth0 on this node's switch",
		Args:  cobra.ExactArgs(1),
	}
	addSock := socketFlag(add)
	addOut := outputFlag(add, formatTable, formatJSON)
	add.Flags().StringVar(&req.Netns, "netns", "", "path of the pod's network namespace")
	add.Flags().BoolVar(&req.New, "new", false, "create a namespace for the pod (deleted with it)")
	add.Flags().StringVar(&req.IP, "ip", "", "the pod's IPv4 address (default: one from IPAM)")
	add.Flags().StringVar(&req.Pool, "pool", "", "IP pool to take the address from (default: any enabled pool)")
	add.RunE = func(cmd *cobra.Command, args []string) error {
		req.Name = args[0]
		info, err := client(*addSock).AddPod(req)
		if err != nil {
			return err
		}
		if *addOut == "json" {
			return printJSON(cmd, stdout, info)
		}
		fmt.Fprintf(stdout, "pod %s added: %s on %s (%s, mac %s)\n", info.Name, info.IP, info.Node, info.Netns, info.MAC)
		return nil
	}

	del := &cobra.Command{
		Use:   "del NAME",
		Short: "Detach a pod and delete its eth0",
		Args:  cobra.ExactArgs(1),
	}
	delSock := socketFlag(del)
	del.RunE = func(cmd *cobra.Command, args []string) error {
		if err := client(*delSock).DeletePod(args[0]); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "pod %s deleted\n", args[0])
		return nil
	}

	list := &cobra.Command{Use: "list", Short: "List this node's pods", Args: cobra.NoArgs}
	listSock := socketFlag(list)
	listOut := outputFlag(list, "table", "wide", "json")
	list.RunE = func(cmd *cobra.Command, args []string) error {
		pods, err := client(*listSock).Pods()
		if err != nil {
			return err
		}
		if *listOut == "json" {
			return printJSON(cmd, stdout, pods)
		}
		tw := newTable(stdout)
		if *listOut == "wide" {
			fmt.Fprintln(tw, "NAME\tIP\tNODE\tSTATE\tPORT\tMAC\tNETNS\tERROR")
		} else {
			fmt.Fprintln(tw, "NAME\tIP\tNODE\tSTATE")
		}
		for _, p := range pods {
			state := "attached"
			if !p.Attached {
				state = "detached"
			}
			if *listOut == "wide" {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", p.Name, p.IP, p.Node, state, p.Port, p.MAC, p.Netns, p.Error)
			} else {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", p.Name, p.IP, p.Node, state)
			}
		}
		return tw.Flush()
	}
	cmd.AddCommand(add, del, list)
	return cmd
}
