package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"podnet/api"
	"podnet/ipam"
	"podnet/resources"
)

func newIPAMCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "ipam", Short: "Show, check and repair IP address management"}
	datastoreFlag(cmd)
	cmd.AddCommand(newIPAMShowCmd(), newIPAMCheckCmd(), newIPAMReleaseCmd(), newIPAMConfigureCmd())
	return cmd
}

// ipamPools reads the pools as IPAM sees them.
func ipamPools(ctx context.Context, c *resources.Client) ([]ipam.Pool, error) {
	rs, _, err := c.List(ctx, api.KindIPPool)
	if err != nil {
		return nil, err
	}
	return ipam.PoolsFromResources(rs)
}

func pct(n, total int) string {
	if total == 0 {
		return "0%"
	}
	return fmt.Sprintf("%.0f%%", 100*float64(n)/float64(total))
}

func newIPAMShowCmd() *cobra.Command {
	var showBlocks, showBorrowed bool
	var ipStr, output string
	cmd := &cobra.Command{
		Use:   "show [--show-blocks] [--show-borrowed] [--ip=A.B.C.D]",
		Short: "Pools and blocks: how many addresses are in use, where; who holds an address",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if output == "json" && (ipStr != "" || showBorrowed) {
				return usagef("-o json shows pools and blocks; --ip and --show-borrowed print text only")
			}
			return withClient(cmd, func(ctx context.Context, c *resources.Client) error {
				m := ipam.New(c.Store())
				switch {
				case ipStr != "":
					return showIP(ctx, stdout, m, ipStr)
				case showBorrowed:
					return showBorrowedIPs(ctx, stdout, m)
				}
				pools, err := ipamPools(ctx, c)
				if err != nil {
					return err
				}
				usage, err := m.Usage(ctx, pools)
				if err != nil {
					return err
				}
				if output == "json" {
					return printJSON(cmd, stdout, poolUsageJSON(usage))
				}
				writeUsage(stdout, usage, showBlocks)
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&showBlocks, "show-blocks", false, "also show each block, its node and its use")
	cmd.Flags().BoolVar(&showBorrowed, "show-borrowed", false, "show addresses borrowed from other nodes' blocks")
	cmd.Flags().StringVar(&ipStr, "ip", "", "show who holds this address")
	outputFlagVar(cmd, &output, nil, formatTable, formatJSON)
	return cmd
}

// poolUsage and blockUsage are ipam.PoolUsage and ipam.BlockUsage as
// `ipam show -o json` prints them, with the CLI's camelCase keys.
type poolUsage struct {
	Name   string       `json:"name"` // "" for blocks outside every pool
	CIDR   netip.Prefix `json:"cidr"`
	Total  int          `json:"total"`
	InUse  int          `json:"inUse"`
	Blocks []blockUsage `json:"blocks"`
}

type blockUsage struct {
	CIDR  netip.Prefix `json:"cidr"`
	Pool  string       `json:"pool"`
	Node  string       `json:"node"`
	Total int          `json:"total"`
	InUse int          `json:"inUse"`
}

func poolUsageJSON(us []ipam.PoolUsage) []poolUsage {
	out := make([]poolUsage, 0, len(us))
	for _, u := range us {
		p := poolUsage{Name: u.Name, CIDR: u.CIDR, Total: u.Total, InUse: u.InUse, Blocks: make([]blockUsage, 0, len(u.Blocks))}
		for _, b := range u.Blocks {
			p.Blocks = append(p.Blocks, blockUsage{CIDR: b.CIDR, Pool: b.Pool, Node: b.Node, Total: b.Total, InUse: b.InUse})
		}
		out = append(out, p)
	}
	return out
}

func writeUsage(w io.Writer, usage []ipam.PoolUsage, blocks bool) {
	header := []string{"GROUPING", "CIDR", "IPS TOTAL", "IPS IN USE", "IPS FREE"}
	if blocks {
		header = append(header, "NODE")
	}
	var rows [][]string
	for _, u := range usage {
		name, cidr := "IP Pool", u.CIDR.String()
		if u.Name == "" {
			name, cidr = "No pool", "-"
		}
		free := u.Total - u.InUse
		row := []string{name, cidr, strconv.Itoa(u.Total),
			fmt.Sprintf("%d (%s)", u.InUse, pct(u.InUse, u.Total)), fmt.Sprintf("%d (%s)", free, pct(free, u.Total))}
		if blocks {
			row = append(row, "")
		}
		rows = append(rows, row)
		if !blocks {
			continue
		}
		for _, b := range u.Blocks {
			node := b.Node
			if node == "" {
				node = "(none)"
			}
			bf := b.Total - b.InUse
			rows = append(rows, []string{"Block", b.CIDR.String(), strconv.Itoa(b.Total),
				fmt.Sprintf("%d (%s)", b.InUse, pct(b.InUse, b.Total)), fmt.Sprintf("%d (%s)", bf, pct(bf, b.Total)), node})
		}
	}
	borderTable(w, header, rows, 2)
}

func showIP(ctx context.Context, w io.Writer, m *ipam.IPAM, s string) error {
	ip, err := netip.ParseAddr(s)
	if err != nil || !ip.Is4() {
		return fmt.Errorf("invalid IPv4 address %q", s)
	}
	a, ok, err := m.Lookup(ctx, ip)
	if err != nil {
		return err
	}
	if !ok {
		fmt.Fprintf(w, "%s is not assigned\n", ip)
		return nil
	}
	fmt.Fprintf(w, "IP %s is in use\nHandle ID: %s\nBlock: %s (affine to %s)\n", ip, a.HandleID, a.Block, orNone(a.BlockOwner))
	if a.Borrowed {
		fmt.Fprintf(w, "Borrowed: yes (node %s holds it in %s's block)\n", a.Attrs["node"], orNone(a.BlockOwner))
	}
	if len(a.Attrs) == 0 {
		fmt.Fprintln(w, "No attributes defined")
		return nil
	}
	fmt.Fprintln(w, "Active Owner Attributes:")
	keys := make([]string, 0, len(a.Attrs))
	for k := range a.Attrs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "  %s: %s\n", k, a.Attrs[k])
	}
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "no node"
	}
	return s
}

func showBorrowedIPs(ctx context.Context, w io.Writer, m *ipam.IPAM) error {
	allocs, err := m.Allocations(ctx)
	if err != nil {
		return err
	}
	var rows [][]string
	for _, a := range allocs {
		if !a.Borrowed {
			continue
		}
		rows = append(rows, []string{a.IP.String(), a.Attrs["node"], a.Block.String(), orNone(a.BlockOwner), a.Attrs["type"], a.Attrs["pod"]})
	}
	borderTable(w, []string{"IP", "BORROWING-NODE", "BLOCK", "BLOCK OWNER", "TYPE", "ALLOCATED-TO"}, rows)
	return nil
}

// ipamCheck is IPAM's own check (ipam.IPAM.Check) with the cluster's
// answer to "who uses this address", and the reverse check IPAM cannot
// make: workload endpoints whose address IPAM never allocated.
type ipamCheck struct {
	ipam.CheckReport
	// why says why each leaked address counts as leaked.
	why map[netip.Addr]string
	// unallocated maps addresses that endpoints use but IPAM does not
	// hold to the endpoint's name.
	unallocated        map[netip.Addr]string
	weps, nodes, alive int
}

// checkIPAM runs the check. A pod's address (type pod, or a pod
// attribute) is in use while a WorkloadEndpoint has it; any other address
// of a node (a tunnel address) while its Node exists.
func checkIPAM(ctx context.Context, c *resources.Client, m *ipam.IPAM) (ipamCheck, error) {
	pools, err := ipamPools(ctx, c)
	if err != nil {
		return ipamCheck{}, err
	}
	weps, _, err := c.List(ctx, api.KindWorkloadEndpoint)
	if err != nil {
		return ipamCheck{}, err
	}
	nodes, _, err := c.List(ctx, api.KindNode)
	if err != nil {
		return ipamCheck{}, err
	}
	alive, err := c.Store().AliveNodes(ctx)
	if err != nil {
		return ipamCheck{}, err
	}
	known := map[string]bool{}
	for _, n := range nodes {
		known[n.GetObjectMeta().Name] = true
	}
	usedBy := map[netip.Addr]string{} // address → endpoint name
	for _, r := range weps {
		wep := r.(*api.WorkloadEndpoint)
		for _, n := range wep.Spec.IPNetworks {
			if p, err := netip.ParsePrefix(n); err == nil {
				usedBy[p.Addr()] = wep.Name
			}
		}
	}
	why := map[netip.Addr]string{}
	allocated := map[netip.Addr]bool{}
	inUse := func(a ipam.Allocation) bool {
		allocated[a.IP] = true
		node := a.Attrs["node"]
		switch {
		case a.Attrs["type"] == "pod" || a.Attrs["pod"] != "":
			if _, ok := usedBy[a.IP]; ok {
				return true
			}
			why[a.IP] = "no workload endpoint has it"
			if node != "" && !alive[node] {
				why[a.IP] += fmt.Sprintf(" (node %s has no running daemon)", node)
			}
			return false
		case node != "" && !known[node]:
			why[a.IP] = fmt.Sprintf("node %s does not exist", node)
			return false
		}
		return true
	}
	report, err := m.Check(ctx, pools, inUse)
	if err != nil {
		return ipamCheck{}, err
	}
	r := ipamCheck{CheckReport: report, why: why, unallocated: map[netip.Addr]string{},
		weps: len(weps), nodes: len(nodes), alive: len(alive)}
	for ip, wep := range usedBy {
		if !allocated[ip] {
			r.unallocated[ip] = wep
		}
	}
	return r, nil
}

// problems counts what the check found.
func (r ipamCheck) problems() int { return r.Problems() + len(r.unallocated) }

// write prints the report as `podnet ipam check` shows it.
func (r ipamCheck) write(w io.Writer) {
	fmt.Fprintf(w, "Found %d allocations in %d blocks, %d workload endpoints, %d nodes (%d with a running daemon).\n",
		r.Allocations, r.Blocks, r.weps, r.nodes, r.alive)
	for _, ip := range slices.SortedFunc(maps.Keys(r.unallocated), netip.Addr.Compare) {
		fmt.Fprintf(w, "  %s is used by workload endpoint %s but not allocated in IPAM\n", ip, r.unallocated[ip])
	}
	for _, a := range r.Leaked {
		fmt.Fprintf(w, "  %s leaked: %s; handle %s, attrs %s\n", a.IP, r.why[a.IP], a.HandleID, attrString(a.Attrs))
	}
	fmt.Fprintf(w, "Found %d IPs that are allocated in IPAM but not actually in use.\n", len(r.Leaked))
	for _, a := range r.NotInPool {
		fmt.Fprintf(w, "  %s is allocated in block %s, which no IP pool holds; handle %s\n", a.IP, a.Block, a.HandleID)
	}
	fmt.Fprintf(w, "Found %d in-use IPs that are not in active IP pools.\n", len(r.NotInPool))
	for _, o := range r.OrphanBlocks {
		fmt.Fprintf(w, "  %s\n", o)
	}
	fmt.Fprintf(w, "Found %d blocks that are in no IP pool.\n", len(r.OrphanBlocks))
	for _, h := range r.Handles {
		fmt.Fprintf(w, "  %s\n", h)
	}
	fmt.Fprintf(w, "Found %d handle counts that do not match the blocks.\n", len(r.Handles))
	fmt.Fprintf(w, "Check complete; found %d problems.\n", r.problems())
	if len(r.Leaked) > 0 {
		fmt.Fprintln(w, "Release leaked addresses with: podnet ipam release --leaked")
	}
}

func newIPAMCheckCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "check",
		Short: "Find addresses allocated but not used by any pod (leaks), pods using unallocated addresses, and blocks of no pool; exit status 3 when anything is found",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(cmd, func(ctx context.Context, c *resources.Client) error {
				fmt.Fprintln(stdout, "Checking IPAM for inconsistencies...")
				r, err := checkIPAM(ctx, c, ipam.New(c.Store()))
				if err != nil {
					return err
				}
				r.write(stdout)
				// Exit code 3: the check ran and found something to repair.
				if n := r.problems(); n > 0 {
					return problemsError{fmt.Sprintf("ipam check: %d problems found", n)}
				}
				return nil
			})
		},
	}
}

func attrString(m map[string]string) string {
	var parts []string
	for k, v := range m {
		parts = append(parts, k+"="+v)
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

func newIPAMReleaseCmd() *cobra.Command {
	var ips []string
	var leaked bool
	var grace time.Duration
	cmd := &cobra.Command{
		Use:   "release (--ip=A.B.C.D ... | --leaked [--grace=45s])",
		Short: "Release addresses: given ones, or every leak `ipam check` finds twice, --grace apart",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if (len(ips) == 0) == !leaked {
				return usagef("give --ip or --leaked")
			}
			if grace < 0 {
				return usagef("--grace must not be negative")
			}
			return withClient(cmd, func(ctx context.Context, c *resources.Client) error {
				m := ipam.New(c.Store())
				if leaked {
					return releaseLeaked(ctx, c, m, grace)
				}
				var addrs []netip.Addr
				for _, s := range ips {
					ip, err := netip.ParseAddr(s)
					if err != nil || !ip.Is4() {
						return usagef("invalid IPv4 address %q", s)
					}
					addrs = append(addrs, ip)
				}
				released, err := m.ReleaseIPs(ctx, addrs...)
				for _, ip := range released {
					fmt.Fprintf(stdout, "Successfully released IP address %s\n", ip)
				}
				return err
			})
		},
	}
	cmd.Flags().StringSliceVar(&ips, "ip", nil, "address to release (repeatable)")
	cmd.Flags().BoolVar(&leaked, "leaked", false, "release every address that ipam check reports as leaked, twice, --grace apart")
	// Longer than a pod add may hold its address before its endpoint is
	// written (the daemon's 30-s limit on an operation).
	cmd.Flags().DurationVar(&grace, "grace", 45*time.Second, "with --leaked: time between the two checks")
	return cmd
}

// leakRecheckWait is releaseLeaked's wait between its checks (a variable
// so that a test can do what a pod add would do meanwhile).
var leakRecheckWait = func(ctx context.Context, grace time.Duration) error {
	select {
	case <-time.After(grace):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// releaseLeaked releases what two checks, grace apart, both call leaked,
// and only if each is still the same allocation (handle and sequence
// number). A pod being added holds its address before its
// WorkloadEndpoint is written, and one check alone would call it leaked;
// an address freed and given to a new pod meanwhile is left alone.
func releaseLeaked(ctx context.Context, c *resources.Client, m *ipam.IPAM, grace time.Duration) error {
	first, err := checkIPAM(ctx, c, m)
	if err != nil {
		return err
	}
	if len(first.Leaked) == 0 {
		fmt.Fprintln(stdout, "No leaked addresses found")
		return nil
	}
	type allocKey struct {
		ip     netip.Addr
		handle string
		seq    uint64
	}
	seen := map[allocKey]bool{}
	for _, a := range first.Leaked {
		seen[allocKey{a.IP, a.HandleID, a.Seq}] = true
	}
	fmt.Fprintf(stdout, "Found %d leaked addresses; checking again in %s, so that pods being added are not taken for leaks\n", len(first.Leaked), grace)
	if err := leakRecheckWait(ctx, grace); err != nil {
		return err
	}
	second, err := checkIPAM(ctx, c, m)
	if err != nil {
		return err
	}
	var both []ipam.Allocation
	for _, a := range second.Leaked {
		if seen[allocKey{a.IP, a.HandleID, a.Seq}] {
			both = append(both, a)
		}
	}
	if kept := len(first.Leaked) - len(both); kept > 0 {
		fmt.Fprintf(stdout, "%d of them are in use now or changed: not released\n", kept)
	}
	if len(both) == 0 {
		fmt.Fprintln(stdout, "No leaked addresses found")
		return nil
	}
	released, err := m.ReleaseAllocations(ctx, both)
	for _, ip := range released {
		fmt.Fprintf(stdout, "Successfully released IP address %s\n", ip)
	}
	return err
}

func newIPAMConfigureCmd() *cobra.Command {
	var strict string
	var maxBlocks int
	cmd := &cobra.Command{
		Use:   "configure --strictaffinity=true|false [--max-blocks-per-host=N]",
		Short: "Set IPAM configuration: strict affinity (no borrowing), block limit per node",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("strictaffinity") && !cmd.Flags().Changed("max-blocks-per-host") {
				return usagef("nothing to set: give --strictaffinity and/or --max-blocks-per-host")
			}
			return withClient(cmd, func(ctx context.Context, c *resources.Client) error {
				m := ipam.New(c.Store())
				cfg, err := m.GetConfig(ctx)
				if err != nil {
					return err
				}
				if cmd.Flags().Changed("strictaffinity") {
					v, err := strconv.ParseBool(strict)
					if err != nil {
						return usagef("--strictaffinity: want true or false, got %q", strict)
					}
					cfg.StrictAffinity = v
				}
				if cmd.Flags().Changed("max-blocks-per-host") {
					cfg.MaxBlocksPerHost = maxBlocks
				}
				if err := m.SetConfig(ctx, cfg); err != nil {
					return err
				}
				fmt.Fprintf(stdout, "Successfully set StrictAffinity to: %v, MaxBlocksPerHost to: %d\n", cfg.StrictAffinity, cfg.MaxBlocksPerHost)
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&strict, "strictaffinity", "", "true: nodes use only their own blocks (no borrowing)")
	cmd.Flags().IntVar(&maxBlocks, "max-blocks-per-host", 0, "most blocks one node may claim (0: no limit; needs strict affinity)")
	return cmd
}
