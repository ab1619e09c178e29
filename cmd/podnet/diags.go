package main

import "github.com/spf13/cobra"

func newDiagsCmd() *cobra.Command {
	return &cobra.Command{Use: "diags", Hidden: true}
}
