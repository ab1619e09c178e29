package ipam

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"

	"podnet/datastore"
)

// listBlocks reads and decodes every block, sorted by address.
func (m *IPAM) listBlocks(ctx context.Context) ([]*block, error) {
	kvs, _, err := m.blocks.List(ctx, "")
	if err != nil {
		return nil, fmt.Errorf("list IPAM blocks: %w", err)
	}
	out := make([]*block, 0, len(kvs))
	for _, kv := range kvs {
		b, err := decodeBlock(kv.Value)
		if err != nil {
			return nil, fmt.Errorf("IPAM block %s: %w", kv.Name, err)
		}
		out = append(out, b)
	}
	slices.SortFunc(out, func(a, b *block) int { return a.prefix.Addr().Compare(b.prefix.Addr()) })
	return out, nil
}

// blockSet is the set of existing blocks.
func (m *IPAM) blockSet(ctx context.Context) (map[netip.Prefix]bool, error) {
	kvs, _, err := m.blocks.List(ctx, "")
	if err != nil {
		return nil, fmt.Errorf("list IPAM blocks: %w", err)
	}
	set := make(map[netip.Prefix]bool, len(kvs))
	for _, kv := range kvs {
		if p, err := netip.ParsePrefix(kv.Name); err == nil {
			set[p] = true
		}
	}
	return set, nil
}

// findBlock finds the existing block that holds ip. known caches blocks
// found before in the same call. Blocks are named by CIDR and a pool's
// block size is not known here, so the default /26 is tried with one read
// and anything else with a listing.
func (m *IPAM) findBlock(ctx context.Context, ip netip.Addr, known map[netip.Prefix]bool) (netip.Prefix, bool, error) {
	if !ip.Is4() {
		return netip.Prefix{}, false, nil
	}
	for p := range known {
		if p.Contains(ip) {
			return p, true, nil
		}
	}
	guess := netip.PrefixFrom(ip, DefaultBlockSize).Masked()
	_, err := m.blocks.Get(ctx, guess.String())
	if err == nil {
		known[guess] = true
		return guess, true, nil
	}
	if !errors.Is(err, datastore.ErrNotFound) {
		return netip.Prefix{}, false, fmt.Errorf("find block of %s: %w", ip, err)
	}
	set, err := m.blockSet(ctx)
	if err != nil {
		return netip.Prefix{}, false, err
	}
	for p := range set {
		if p.Contains(ip) {
			known[p] = true
			return p, true, nil
		}
	}
	return netip.Prefix{}, false, nil
}

// Allocation is one allocated address.
type Allocation struct {
	IP    netip.Addr
	Block netip.Prefix
	// BlockOwner is the node the block is affine to, "" if none.
	BlockOwner string
	HandleID   string
	Attrs      map[string]string
	// Borrowed: the address is for another node than the block's owner
	// (Attrs["node"] != BlockOwner). Other nodes route it with a /32.
	Borrowed bool
	// Seq is the block's sequence number when the address was assigned:
	// with HandleID it tells this allocation from a later one of the
	// same address (ReleaseAllocations).
	Seq uint64
}

func (b *block) allocation(o int) Allocation {
	attrs := maps.Clone(b.attrsOf(o))
	owner := b.owner()
	return Allocation{
		IP: b.addr(o), Block: b.prefix, BlockOwner: owner,
		HandleID: b.handleOf(o), Attrs: attrs,
		Borrowed: attrs["node"] != owner,
		Seq:      b.seqOf(o),
	}
}

// Lookup returns the allocation of ip; ok is false if it is free.
func (m *IPAM) Lookup(ctx context.Context, ip netip.Addr) (Allocation, bool, error) {
	cidr, ok, err := m.findBlock(ctx, ip, map[netip.Prefix]bool{})
	if err != nil || !ok {
		return Allocation{}, false, err
	}
	kv, err := m.blocks.Get(ctx, cidr.String())
	if errors.Is(err, datastore.ErrNotFound) {
		return Allocation{}, false, nil
	}
	if err != nil {
		return Allocation{}, false, fmt.Errorf("look up %s: %w", ip, err)
	}
	b, err := decodeBlock(kv.Value)
	if err != nil {
		return Allocation{}, false, err
	}
	o, _ := b.ordinal(ip)
	if b.Allocations[o] == nil {
		return Allocation{}, false, nil
	}
	return b.allocation(o), true, nil
}

// Allocations returns every allocated address, sorted by IP: the input
// of a leak check (addresses whose owner no longer exists) and of
// `ipam show --show-borrowed`.
func (m *IPAM) Allocations(ctx context.Context) ([]Allocation, error) {
	_, allocs, err := m.BlockOwners(ctx)
	return allocs, err
}

// BlockOwners returns the node each block is affine to, for the blocks
// that have one, and every allocated address as Allocations does, from
// one read of the blocks: what a node checks routes to other nodes'
// pods against.
func (m *IPAM) BlockOwners(ctx context.Context) (map[netip.Prefix]string, []Allocation, error) {
	blocks, err := m.listBlocks(ctx)
	if err != nil {
		return nil, nil, err
	}
	owners := map[netip.Prefix]string{}
	var out []Allocation
	for _, b := range blocks {
		if o := b.owner(); o != "" {
			owners[b.prefix] = o
		}
		for o, a := range b.Allocations {
			if a != nil {
				out = append(out, b.allocation(o))
			}
		}
	}
	return owners, out, nil
}

// BlockUsage is one block's use.
type BlockUsage struct {
	CIDR netip.Prefix
	// Pool is the name of the pool the block is in ("" for none).
	Pool string
	// Node is the block's affine node ("" for none).
	Node         string
	Total, InUse int
}

// PoolUsage is one pool's use, as `ipam show` prints it.
type PoolUsage struct {
	Name string
	CIDR netip.Prefix
	// Total is the number of addresses in the pool; InUse the number
	// allocated in it.
	Total, InUse int
	// Blocks are the pool's existing blocks, by address.
	Blocks []BlockUsage
}

// Usage reports how much of each pool is in use, in the order given.
// Blocks outside every pool (left by a pool deleted with force) are
// reported last under a PoolUsage with Name "" and no CIDR, whose Total
// is the size of those blocks, so that nothing is hidden.
func (m *IPAM) Usage(ctx context.Context, pools []Pool) ([]PoolUsage, error) {
	blocks, err := m.listBlocks(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]PoolUsage, len(pools))
	for i, p := range pools {
		out[i] = PoolUsage{Name: p.Name, CIDR: p.CIDR, Total: 1 << (32 - p.CIDR.Bits())}
	}
	var orphans PoolUsage
	for _, b := range blocks {
		bu := BlockUsage{CIDR: b.prefix, Node: b.owner(), Total: len(b.Allocations), InUse: b.inUse()}
		i := slices.IndexFunc(pools, func(p Pool) bool { return p.holds(b.prefix) })
		if i < 0 {
			orphans.Total += bu.Total
			orphans.InUse += bu.InUse
			orphans.Blocks = append(orphans.Blocks, bu)
			continue
		}
		bu.Pool = pools[i].Name
		out[i].InUse += bu.InUse
		out[i].Blocks = append(out[i].Blocks, bu)
	}
	if len(orphans.Blocks) > 0 {
		out = append(out, orphans)
	}
	return out, nil
}

// PoolAllocations counts the addresses allocated inside cidr, in total
// and by the node they are for (the "node" attribute, else the block's
// owner, else ""): a pool that still has some should not be deleted.
func (m *IPAM) PoolAllocations(ctx context.Context, cidr netip.Prefix) (count int, byNode map[string]int, err error) {
	blocks, err := m.listBlocks(ctx)
	if err != nil {
		return 0, nil, err
	}
	byNode = map[string]int{}
	p := Pool{CIDR: cidr}
	for _, b := range blocks {
		if !p.holds(b.prefix) {
			continue
		}
		for o, a := range b.Allocations {
			if a == nil {
				continue
			}
			node := b.attrsOf(o)["node"]
			if node == "" {
				node = b.owner()
			}
			byNode[node]++
			count++
		}
	}
	return count, byNode, nil
}
