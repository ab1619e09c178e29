package ipam

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
)

// CheckReport is what Check found: Calico's `ipam check` without
// Kubernetes.
type CheckReport struct {
	// Blocks and Allocations count what the blocks hold.
	Blocks, Allocations int
	// Leaked are allocated addresses that the caller's inUse says nobody
	// uses; release them with ReleaseIPs.
	Leaked []Allocation
	// NotInPool are allocated addresses in blocks outside every pool.
	NotInPool []Allocation
	// OrphanBlocks are blocks outside every pool (their pool was deleted
	// with --force). An empty one should have been released by its
	// node; one with addresses goes when they are released.
	OrphanBlocks []OrphanBlock
	// Handles are handles whose counts differ from what the blocks hold,
	// including handles with no addresses and addresses with no handle.
	Handles []HandleProblem
}

// HandleProblem is one handle count that does not match the blocks.
type HandleProblem struct {
	ID    string
	Block netip.Prefix
	// Counted is what the handle says, Found what the block holds.
	Counted, Found int
}

// OrphanBlock is a block that no pool holds.
type OrphanBlock struct {
	Block netip.Prefix
	// Node is the node the block is affine to; "" for none.
	Node string
	// InUse counts its allocated addresses.
	InUse int
}

func (o OrphanBlock) String() string {
	node := "no node"
	if o.Node != "" {
		node = "node " + o.Node
	}
	return fmt.Sprintf("block %s (affine to %s, %d addresses in use) is in no IP pool", o.Block, node, o.InUse)
}

func (p HandleProblem) String() string {
	return fmt.Sprintf("handle %s: %d addresses counted in %s, %d found", p.ID, p.Counted, p.Block, p.Found)
}

// Problems is the number of problems found.
func (r CheckReport) Problems() int {
	return len(r.Leaked) + len(r.NotInPool) + len(r.OrphanBlocks) + len(r.Handles)
}

func (r CheckReport) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "IPAM blocks record %d allocations in %d blocks.\n", r.Allocations, r.Blocks)
	for _, a := range r.Leaked {
		fmt.Fprintf(&b, "  %s leaked; handle %s attrs %v\n", a.IP, a.HandleID, a.Attrs)
	}
	fmt.Fprintf(&b, "Found %d IPs that are allocated in IPAM but not actually in use.\n", len(r.Leaked))
	fmt.Fprintf(&b, "Found %d in-use IPs that are not in active IP pools.\n", len(r.NotInPool))
	for _, o := range r.OrphanBlocks {
		fmt.Fprintf(&b, "  %s\n", o)
	}
	fmt.Fprintf(&b, "Found %d blocks that are in no IP pool.\n", len(r.OrphanBlocks))
	for _, p := range r.Handles {
		fmt.Fprintf(&b, "  %s\n", p)
	}
	fmt.Fprintf(&b, "Found %d handle counts that do not match the blocks.\n", len(r.Handles))
	fmt.Fprintf(&b, "Check complete; found %d problems.\n", r.Problems())
	return b.String()
}

// Check compares blocks, handles and pools, and asks inUse (if not nil)
// whether each allocation still has an owner. Blocks and handles are read
// one after the other, so allocations in flight can show up as handle
// problems: check a quiet cluster, or check twice.
func (m *IPAM) Check(ctx context.Context, pools []Pool, inUse func(Allocation) bool) (CheckReport, error) {
	blocks, err := m.listBlocks(ctx)
	if err != nil {
		return CheckReport{}, err
	}
	handles, err := m.Handles(ctx)
	if err != nil {
		return CheckReport{}, err
	}
	var r CheckReport
	type key struct {
		id    string
		block netip.Prefix
	}
	found := map[key]int{}
	for _, b := range blocks {
		r.Blocks++
		inPool := slices.ContainsFunc(pools, func(p Pool) bool { return p.holds(b.prefix) })
		if !inPool {
			r.OrphanBlocks = append(r.OrphanBlocks, OrphanBlock{Block: b.prefix, Node: b.owner(), InUse: b.inUse()})
		}
		for o, a := range b.Allocations {
			if a == nil {
				continue
			}
			al := b.allocation(o)
			r.Allocations++
			found[key{al.HandleID, b.prefix}]++
			if !inPool {
				r.NotInPool = append(r.NotInPool, al)
			}
			if inUse != nil && !inUse(al) {
				r.Leaked = append(r.Leaked, al)
			}
		}
	}
	counted := map[key]int{}
	for _, h := range handles {
		for blk, n := range h.Blocks {
			counted[key{h.ID, blk}] = n
		}
	}
	keys := slices.Collect(maps.Keys(counted))
	for k := range found {
		if _, ok := counted[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b key) int {
		if c := strings.Compare(a.id, b.id); c != 0 {
			return c
		}
		return a.block.Addr().Compare(b.block.Addr())
	})
	for _, k := range keys {
		if counted[k] != found[k] {
			r.Handles = append(r.Handles, HandleProblem{ID: k.id, Block: k.block, Counted: counted[k], Found: found[k]})
		}
	}
	return r, nil
}
