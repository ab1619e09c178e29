// Command podnet is the one binary of podnet: the node daemon, the
// resource and status CLI, the lab and the bench. It only parses flags
// and calls the packages that do the work.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"podnet/internal/buildinfo"
)

func main() {
	root := newRootCmd()
	cmd, err := root.ExecuteC()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		if isUsage(err) {
			fmt.Fprintf(os.Stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
		}
	}
	os.Exit(exitCode(err))
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "podnet",
		Short:         "podnet: a userspace virtual L3 switch and router for pods",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       buildinfo.Get().Version,
	}
	root.SetVersionTemplate(versionLine(buildinfo.Get()) + "\n")
	root.AddCommand(commands()...)
	setUsageErrors(root)
	return root
}
