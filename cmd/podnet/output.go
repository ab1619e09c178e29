package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"podnet/nodeapi"
)

// socketFlag adds --socket to a command that talks to the local daemon.
func socketFlag(cmd *cobra.Command) *string {
	s := new(string)
	cmd.Flags().StringVar(s, "socket", "", "daemon socket (default $"+nodeapi.SocketEnv+" or "+nodeapi.DefaultSocket+")")
	return s
}

func client(socket string) *nodeapi.Client {
	if socket == "" {
		socket = nodeapi.DefaultClientSocket()
	}
	return nodeapi.NewClient(socket)
}

// daemonGet reads an answer of the local daemon whose type belongs to
// the daemon's packages (switch ports, BGP sessions, NAT), which nodeapi
// leaves to its callers.
func daemonGet[T any](socket, path string) (T, error) {
	var v T
	return v, client(socket).Get(path, &v)
}

// outputFlag adds -o with the given formats; the first is the default.
func outputFlag(cmd *cobra.Command, formats ...string) *string {
	o := new(string)
	cmd.Flags().StringVarP(o, "output", "o", formats[0], fmt.Sprintf("output format: %v", formats))
	return o
}

func checkFormat(o string, formats ...string) error {
	for _, f := range formats {
		if o == f {
			return nil
		}
	}
	return fmt.Errorf("unknown output format %q (want one of %v)", o, formats)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
}

var stdout io.Writer = os.Stdout
