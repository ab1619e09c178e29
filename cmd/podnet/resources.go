package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"podnet/api"
	"podnet/datastore"
	"podnet/ipam"
	"podnet/resources"
)

// The resource verbs (get, create, apply, replace, delete, patch, label)
// work on the datastore directly, like calicoctl with an etcd datastore;
// package resources does the work.

// poolInUse, when set, is asked before an IPPool is deleted (see
// resources.Options.PoolInUse); the ipam package provides it.
var poolInUse func(ctx context.Context, pool api.IPPool) (count int, where string, err error)

// datastoreFlag adds --datastore to a resource command.
func datastoreFlag(cmd *cobra.Command) {
	cmd.PersistentFlags().String("datastore", "",
		"etcd endpoints, comma-separated (default $"+resources.EndpointsEnv+", the config file $"+resources.ConfigEnv+
			" or "+resources.DefaultConfigFile+", else "+resources.DefaultEndpoint+")")
}

// resourcesClient opens the datastore named by --datastore, the
// environment or the config file (resources.LoadClientConfig) and
// returns a client on it and a function that closes it.
func resourcesClient(cmd *cobra.Command) (*resources.Client, func(), error) {
	cfg, err := resources.LoadClientConfig()
	if err != nil {
		return nil, nil, fmt.Errorf("Failed to create podnet API client: %w", err)
	}
	if f := cmd.Flags().Lookup("datastore"); f != nil {
		if eps := resources.SplitEndpoints(f.Value.String()); len(eps) > 0 {
			cfg.Endpoints = eps
		}
	}
	// The usual failure is a node without a running daemon: say so at
	// once instead of after the dial timeout.
	if len(cfg.Endpoints) == 1 && strings.HasPrefix(cfg.Endpoints[0], "unix://") {
		sock := strings.TrimPrefix(cfg.Endpoints[0], "unix://")
		if _, err := os.Stat(sock); err != nil {
			return nil, nil, fmt.Errorf("Failed to create podnet API client: etcd at %s is unreachable: %v (is the podnet daemon running?)", cfg.Endpoints[0], err)
		}
	}
	s, err := datastore.Open(cmdContext(cmd), cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("Failed to create podnet API client: %w", err)
	}
	opts := resources.PoolHooks(ipam.New(s))
	if poolInUse != nil {
		opts.PoolInUse = poolInUse
	}
	return resources.New(s, opts), func() { s.Close() }, nil
}

func cmdContext(cmd *cobra.Command) context.Context {
	if ctx := cmd.Context(); ctx != nil {
		return ctx
	}
	return context.Background()
}

// withClient runs f with a resources client and a bounded context.
func withClient(cmd *cobra.Command, f func(ctx context.Context, c *resources.Client) error) error {
	c, done, err := resourcesClient(cmd)
	if err != nil {
		return err
	}
	defer done()
	ctx, cancel := context.WithTimeout(cmdContext(cmd), time.Minute)
	defer cancel()
	return f(ctx, c)
}

func newGetCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "get KIND [NAME...]",
		Short: "Show resources: ippool, node, bgppeer, bgpconfig, ipamconfig, wep",
		Long: "Show resources of one kind, all or by name. Kinds are case-insensitive and accept calicoctl's aliases\n" +
			"(ippool|ippools|ipp|pool, node|no, bgppeer|bp, bgpconfig, ipamconfig, workloadendpoint|wep).\n" +
			"-o yaml output can be edited and given back to apply (its resourceVersion guards against lost updates).\n" +
			"Each resource is printed with the apiVersion it was written with: what was applied as\n" +
			"projectcalico.org/v3 goes back to calicoctl unchanged. --api-version converts the output.",
		Args: cobra.MinimumNArgs(1),
	}
	datastoreFlag(cmd)
	// calicoctl calls its table "ps".
	out := new(string)
	outputFlagVar(cmd, out, map[string]string{"ps": formatTable}, formatTable, formatWide, formatYAML, formatJSON)
	apiVersion := cmd.Flags().String("api-version", "",
		"with -o yaml|json, print every resource with this apiVersion: "+api.APIVersion+" or "+api.CalicoAPIVersion+" (default: the one each was written with)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if *apiVersion != "" && *out != "yaml" && *out != "json" {
			return usagef("--api-version needs -o yaml or -o json")
		}
		k, err := lookupKind(args[0])
		if err != nil {
			return err
		}
		w := cmd.OutOrStdout()
		return withClient(cmd, func(ctx context.Context, c *resources.Client) error {
			var rs []api.Resource
			var rev string
			if len(args) == 1 {
				if rs, rev, err = c.List(ctx, k.Kind); err != nil {
					return err
				}
			} else {
				for _, name := range args[1:] {
					r, err := c.Get(ctx, k.Kind, name)
					if err != nil {
						return err
					}
					rs = append(rs, r)
				}
			}
			switch *out {
			case "yaml", "json":
				if *apiVersion != "" {
					for _, r := range rs {
						if err := api.SetAPIVersion(r, *apiVersion); err != nil {
							return fmt.Errorf("--api-version: %w", err)
						}
					}
				}
				if len(args) == 1 {
					return api.EncodeList(w, k.Kind, rs, api.ListMeta{ResourceVersion: rev}, *out)
				}
				return api.Encode(w, rs, *out)
			}
			opts := api.TableOptions{Wide: *out == "wide"}
			if k.Kind == api.KindNode && opts.Wide {
				opts.GlobalASN = globalASN(ctx, c)
			}
			return api.PrintTable(w, k.Kind, rs, opts)
		})
	}
	return cmd
}

// lookupKind is api.LookupKind for a command-line argument: an unknown
// kind is a usage error that lists the kinds podnet knows.
func lookupKind(name string) (api.KindInfo, error) {
	k, err := api.LookupKind(name)
	if err != nil {
		return k, usageError{fmt.Errorf("%w; the kinds podnet knows, and their other names:\n%s", err, kindList())}
	}
	return k, nil
}

// kindList is one line per kind: its name and its aliases.
func kindList() string {
	var b strings.Builder
	tw := newTable(&b)
	for _, k := range api.Kinds() {
		name := strings.ToLower(k.Kind)
		aliases := slices.DeleteFunc(slices.Clone(k.Aliases), func(a string) bool { return a == name })
		fmt.Fprintf(tw, "  %s\t%s\n", name, strings.Join(aliases, ", "))
	}
	tw.Flush()
	return strings.TrimSuffix(b.String(), "\n")
}

// globalASN is the AS of nodes without their own, for get node -o wide.
func globalASN(ctx context.Context, c *resources.Client) string {
	r, err := c.Get(ctx, api.KindBGPConfiguration, api.BGPConfigurationGlobal)
	switch {
	case errors.Is(err, datastore.ErrNotFound):
		return api.DefaultASNumber.String()
	case err != nil:
		return "unknown"
	}
	if a := r.(*api.BGPConfiguration).Spec.ASNumber; a != nil {
		return a.String()
	}
	return api.DefaultASNumber.String()
}

// filenameFlag adds -f/--filename.
func filenameFlag(cmd *cobra.Command) *string {
	f := new(string)
	cmd.Flags().StringVarP(f, "filename", "f", "", "file or directory of resources (YAML or JSON), or - for stdin")
	return f
}

// readResources decodes the resources of a file, of the *.yaml, *.yml
// and *.json files of a directory, or of stdin ("-").
func readResources(cmd *cobra.Command, name string) ([]api.Resource, error) {
	if name == "-" {
		return api.Decode(cmd.InOrStdin())
	}
	st, err := os.Stat(name)
	if err != nil {
		return nil, err
	}
	files := []string{name}
	if st.IsDir() {
		files = nil
		ents, err := os.ReadDir(name)
		if err != nil {
			return nil, err
		}
		for _, e := range ents {
			switch strings.ToLower(filepath.Ext(e.Name())) {
			case ".yaml", ".yml", ".json":
				if !e.IsDir() {
					files = append(files, filepath.Join(name, e.Name()))
				}
			}
		}
		sort.Strings(files)
	}
	var out []api.Resource
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return nil, err
		}
		rs, err := api.Decode(fh)
		fh.Close()
		if err != nil {
			if len(files) > 1 {
				return nil, fmt.Errorf("%s: %w", f, err)
			}
			return nil, err
		}
		out = append(out, rs...)
	}
	return out, nil
}

// commonKind is the kind all rs share, or "".
func commonKind(rs []api.Resource) string {
	kind := ""
	for i, r := range rs {
		if i == 0 {
			kind = r.ResourceKind()
		} else if r.ResourceKind() != kind {
			return ""
		}
	}
	return kind
}

// succeeded prints calicoctl's success line.
func succeeded(w io.Writer, past string, rs []api.Resource) {
	if k := commonKind(rs); k != "" {
		fmt.Fprintf(w, "Successfully %s %d '%s' resource(s)\n", past, len(rs), k)
		return
	}
	fmt.Fprintf(w, "Successfully %s %d resource(s)\n", past, len(rs))
}

// newFileCmd builds create, apply and replace: -f FILE, one verb of the
// client on every resource in it.
func newFileCmd(use, short, past string, do func(*resources.Client, context.Context, []api.Resource) ([]api.Resource, error)) *cobra.Command {
	cmd := &cobra.Command{Use: use + " -f FILE", Short: short, Args: cobra.NoArgs}
	datastoreFlag(cmd)
	file := filenameFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if *file == "" {
			return errors.New("no file given: use -f FILE (or -f - for stdin)")
		}
		rs, err := readResources(cmd, *file)
		if err != nil {
			return fmt.Errorf("Failed to execute command: %w", err)
		}
		if len(rs) == 0 {
			return errors.New("No resources specified")
		}
		return withClient(cmd, func(ctx context.Context, c *resources.Client) error {
			done, err := do(c, ctx, rs)
			if err != nil {
				return err
			}
			succeeded(cmd.OutOrStdout(), past, done)
			return nil
		})
	}
	return cmd
}

func newCreateCmd() *cobra.Command {
	return newFileCmd("create", "Create resources from a file; fails if any exists", "created", (*resources.Client).CreateAll)
}

func newApplyCmd() *cobra.Command {
	return newFileCmd("apply", "Create resources from a file, or update them if they exist", "applied", (*resources.Client).ApplyAll)
}

func newReplaceCmd() *cobra.Command {
	return newFileCmd("replace", "Update existing resources from a file", "replaced", (*resources.Client).ReplaceAll)
}

func newDeleteCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "delete (-f FILE | KIND NAME...)",
		Short: "Delete resources named in a file or on the command line",
		Long: "Delete resources named in a file or on the command line. An IPPool that still has allocated\n" +
			"addresses is kept unless --force is given.",
		// RunE checks the arguments: -f FILE or KIND NAME..., not both.
		Args: cobra.ArbitraryArgs,
	}
	datastoreFlag(cmd)
	file := filenameFlag(cmd)
	force := cmd.Flags().Bool("force", false, "delete IPPools even if addresses are still allocated from them")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		var rs []api.Resource
		switch {
		case *file != "" && len(args) > 0:
			return usagef("give either -f FILE or KIND NAME..., not both")
		case *file != "":
			var err error
			if rs, err = readResources(cmd, *file); err != nil {
				return fmt.Errorf("Failed to execute command: %w", err)
			}
		case len(args) >= 2:
			k, err := lookupKind(args[0])
			if err != nil {
				return err
			}
			for _, name := range args[1:] {
				r := k.New()
				r.GetObjectMeta().Name = name
				rs = append(rs, r)
			}
		default:
			return usagef("usage: podnet delete -f FILE | podnet delete KIND NAME...")
		}
		if len(rs) == 0 {
			return errors.New("No resources specified")
		}
		return withClient(cmd, func(ctx context.Context, c *resources.Client) error {
			done, err := c.DeleteAll(ctx, rs, *force)
			if err != nil {
				return err
			}
			succeeded(cmd.OutOrStdout(), "deleted", done)
			return nil
		})
	}
	return cmd
}

func newPatchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "patch KIND NAME -p JSON",
		Short: "Change fields of a resource with a JSON merge patch",
		Example: `  podnet patch ippool default-ipv4-ippool -p '{"spec":{"disabled":true}}'
  podnet patch node worker1 -p '{"spec":{"bgp":{"routeReflectorClusterID":"244.0.0.1"}}}'`,
		Args: cobra.ExactArgs(2),
	}
	datastoreFlag(cmd)
	patch := cmd.Flags().StringP("patch", "p", "", "JSON merge patch (RFC 7386)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if *patch == "" {
			return usagef("no patch given: use -p '{\"spec\":{...}}'")
		}
		k, err := lookupKind(args[0])
		if err != nil {
			return err
		}
		return withClient(cmd, func(ctx context.Context, c *resources.Client) error {
			r, err := c.Patch(ctx, k.Kind, args[1], []byte(*patch))
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Successfully patched 1 '%s' resource\n", r.ResourceKind())
			return nil
		})
	}
	return cmd
}

func newLabelCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "label KIND NAME key=value | label KIND NAME key --remove",
		Short: "Set or remove a label of a resource",
		Args:  cobra.ExactArgs(3),
	}
	datastoreFlag(cmd)
	overwrite := cmd.Flags().Bool("overwrite", false, "replace the value of a label that is already set")
	remove := cmd.Flags().Bool("remove", false, "remove the label")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		kind, name := args[0], args[1]
		k, err := lookupKind(kind)
		if err != nil {
			return err
		}
		key, value, hasValue := strings.Cut(args[2], "=")
		switch {
		case *remove && hasValue:
			return usagef("--remove takes a label key, not key=value")
		case !*remove && !hasValue:
			return usagef("give the label as key=value (or key with --remove)")
		}
		return withClient(cmd, func(ctx context.Context, c *resources.Client) error {
			_, err := c.Label(ctx, k.Kind, name, key, value, resources.LabelOptions{Overwrite: *overwrite, Remove: *remove})
			if err != nil {
				return err
			}
			if *remove {
				fmt.Fprintf(cmd.OutOrStdout(), "Successfully removed label %s from %s %s\n", key, strings.ToLower(k.Kind), name)
			} else {
				fmt.Fprintf(cmd.OutOrStdout(), "Successfully set label %s on %s %s\n", key, strings.ToLower(k.Kind), name)
			}
			return nil
		})
	}
	return cmd
}
