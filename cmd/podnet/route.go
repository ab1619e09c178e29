package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newRouteCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "route", Short: "Show the switch's route table"}
	list := &cobra.Command{Use: "list", Short: "List routes (longest-prefix-match table)", Args: cobra.NoArgs}
	sock := socketFlag(list)
	out := outputFlag(list, "table", "wide", "json")
	list.RunE = func(cmd *cobra.Command, args []string) error {
		routes, err := client(*sock).Routes()
		if err != nil {
			return err
		}
		if *out == "json" {
			return printJSON(cmd, stdout, routes)
		}
		tw := newTable(stdout)
		if *out == "wide" {
			fmt.Fprintln(tw, "PREFIX\tKIND\tDEV\tNEXT HOP\tENCAP\tSOURCE\tPORT")
		} else {
			fmt.Fprintln(tw, "PREFIX\tKIND\tDEV\tNEXT HOP\tSOURCE")
		}
		for _, r := range routes {
			nh := "-"
			if r.NextHop.IsValid() {
				nh = r.NextHop.String()
			}
			dev := r.Dev
			if dev == "" {
				dev = "-"
			}
			if *out == "wide" {
				port := "-"
				if r.Kind.String() == "local" {
					port = fmt.Sprint(r.Port)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Prefix, r.Kind, dev, nh, r.Encap, r.Source, port)
			} else {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Prefix, r.Kind, dev, nh, r.Source)
			}
		}
		return tw.Flush()
	}
	cmd.AddCommand(list)
	return cmd
}
