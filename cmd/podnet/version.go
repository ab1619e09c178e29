package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"podnet/internal/buildinfo"
)

// versionLine is what --version prints.
func versionLine(in buildinfo.Info) string {
	s := fmt.Sprintf("podnet %s (commit %s", in.Version, in.Commit)
	if in.Modified {
		s += ", modified"
	}
	return s + ", " + in.GoVersion + ")"
}

// versionReport is `podnet version -o json`.
type versionReport struct {
	Client buildinfo.Info  `json:"client"`
	Daemon *buildinfo.Info `json:"daemon,omitempty"`
	// DaemonError says why the daemon did not answer.
	DaemonError string `json:"daemonError,omitempty"`
}

func newVersionCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Show the versions of this podnet and of the node's daemon",
		Long: `Show this binary's version, commit and Go release, and the version and
commit of the daemon answering on the local socket. When the daemon does
not answer the command fails (exit 1) after printing the client's
version; --client asks for the client only.`,
		Args: cobra.NoArgs,
	}
	sock := socketFlag(cmd)
	out := outputFlag(cmd, formatTable, formatJSON)
	clientOnly := cmd.Flags().Bool("client", false, "show only this binary's version; do not ask the daemon")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		r := versionReport{Client: buildinfo.Get()}
		var daemonErr error
		if !*clientOnly {
			if st, err := client(*sock).Status(); err != nil {
				daemonErr = fmt.Errorf("daemon: %w", err)
				r.DaemonError = err.Error()
			} else {
				r.Daemon = &buildinfo.Info{Version: st.Version, Commit: st.Commit}
			}
		}
		if *out == "json" {
			if err := printJSON(cmd, stdout, r); err != nil {
				return err
			}
			return daemonErr
		}
		tw := newTable(stdout)
		fmt.Fprintf(tw, "client:\t%s\t%s\t%s\n", r.Client.Version, commitText(r.Client), r.Client.GoVersion)
		if r.Daemon != nil {
			d := *r.Daemon
			if d.Version == "" { // a daemon from before versions were reported
				d.Version, d.Commit = "unknown", "unknown"
			}
			fmt.Fprintf(tw, "daemon:\t%s\t%s\n", d.Version, commitText(d))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		return daemonErr
	}
	return cmd
}

func commitText(in buildinfo.Info) string {
	if in.Modified {
		return in.Commit + " (modified)"
	}
	return in.Commit
}
