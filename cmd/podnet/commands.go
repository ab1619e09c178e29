package main

import "github.com/spf13/cobra"

// commands lists the top-level verbs; each lives in its own file.
func commands() []*cobra.Command {
	return []*cobra.Command{
		newDaemonCmd(),
		newStatusCmd(),
		newPodCmd(),
		newRouteCmd(),
		newTraceCmd(),
		newCaptureCmd(),
		newPortCmd(),
		newGetCmd(),
		newCreateCmd(),
		newApplyCmd(),
		newReplaceCmd(),
		newDeleteCmd(),
		newPatchCmd(),
		newLabelCmd(),
		newIPAMCmd(),
		newNodeCmd(),
		newNATCmd(),
		newLabCmd(),
		newBenchCmd(),
		newDatastoreCmd(),
		newVersionCmd(),
	}
}
