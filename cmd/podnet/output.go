package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"podnet/bench"
	"podnet/datastore"
	"podnet/internal/syscheck"
	"podnet/lab"
	"podnet/nat"
	"podnet/nodeapi"
	"podnet/router"
	vswitch "podnet/switch"
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

// The output formats (docs/cli.md). table is the human format and the
// default of every command that prints data; wide is table with more
// columns; json and yaml are for programs.
const (
	formatTable = "table"
	formatWide  = "wide"
	formatJSON  = "json"
	formatYAML  = "yaml"
)

// formatValue is the value of -o: one of formats, or an alias of one.
// Checking it while flags are parsed makes a bad -o a usage error
// (exit code 2) before anything runs.
type formatValue struct {
	v       *string
	formats []string
	aliases map[string]string
}

func (f *formatValue) String() string { return *f.v }
func (f *formatValue) Type() string   { return "format" }

func (f *formatValue) Set(s string) error {
	if c, ok := f.aliases[s]; ok {
		s = c
	}
	if !slices.Contains(f.formats, s) {
		return fmt.Errorf("unknown output format %q (want one of %s)", s, strings.Join(f.formats, ", "))
	}
	*f.v = s
	return nil
}

// outputFlag adds -o/--output with the given formats; the first is the
// default.
func outputFlag(cmd *cobra.Command, formats ...string) *string {
	o := new(string)
	outputFlagVar(cmd, o, nil, formats...)
	return o
}

// outputFlagVar adds -o/--output writing to p. aliases maps other
// accepted names to formats (get takes calicoctl's "ps" for table).
func outputFlagVar(cmd *cobra.Command, p *string, aliases map[string]string, formats ...string) {
	*p = formats[0]
	names := slices.Clone(formats)
	for a, f := range aliases {
		if i := slices.Index(names, f); i >= 0 {
			names[i] += " (or " + a + ")"
		}
	}
	usage := "output format: " + strings.Join(names, ", ")
	cmd.Flags().VarP(&formatValue{v: p, formats: formats, aliases: aliases}, "output", "o", usage)
}

// jsonTypes is what each command prints with -o json, by command path
// without "podnet ". printJSON refuses any other type, and a test checks
// that every command offering json is here and that every field of these
// types has a camelCase json tag. get prints the api kinds (api.Kinds).
var jsonTypes = map[string]any{
	"status":            nodeapi.Status{},
	"pod add":           nodeapi.PodInfo{},
	"pod list":          []nodeapi.PodInfo{},
	"route list":        []router.Route{},
	"port stats":        []vswitch.PortStats{},
	"nat list":          []nat.Entry{},
	"nat stats":         nat.Stats{},
	"node status":       []peerWithRoutes{},
	"node checksystem":  []syscheck.Result{},
	"trace":             vswitch.TraceResult{},
	"version":           versionReport{},
	"ipam show":         []poolUsage{},
	"datastore status":  []datastore.MemberStatus{},
	"lab status":        lab.Status{},
	"bench":             &bench.Report{},
	"bench same-node":   &bench.Report{},
	"bench cross-node":  &bench.Report{},
	"bench nat":         &bench.Report{},
	"bench pod-add":     &bench.Report{},
	"bench convergence": &bench.Report{},
	"bench pair":        &bench.Report{},
}

// printJSON prints v, the -o json answer of cmd, indented.
func printJSON(cmd *cobra.Command, w io.Writer, v any) error {
	path := strings.TrimPrefix(cmd.CommandPath(), "podnet ")
	if want, ok := jsonTypes[path]; !ok || reflect.TypeOf(want) != reflect.TypeOf(v) {
		return fmt.Errorf("internal error: %s -o json prints %T, which jsonTypes does not list for it", path, v)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
}

var (
	stdout io.Writer = os.Stdout
	stderr io.Writer = os.Stderr
)
