package ipam

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"slices"
	"strings"

	"podnet/datastore"
)

// Affinity states, as Calico names them. A claim writes pending, creates the
// block, then confirms; a release marks pendingDeletion, deletes the
// block if it is empty, then deletes the affinity. Only confirmed
// affinities count as the node's blocks.
const (
	statePending         = "pending"
	stateConfirmed       = "confirmed"
	statePendingDeletion = "pendingDeletion"
)

// affinity is the stored block affinity.
type affinity struct {
	State   string `json:"state"`
	Deleted bool   `json:"deleted"`
}

func affinityName(node string, cidr netip.Prefix) string { return node + "/" + cidr.String() }

// parseAffinityName splits "<node>/<cidr>".
func parseAffinityName(name string) (node string, cidr netip.Prefix, err error) {
	node, c, ok := strings.Cut(name, "/")
	if !ok {
		return "", netip.Prefix{}, fmt.Errorf("bad affinity name %q", name)
	}
	cidr, err = netip.ParsePrefix(c)
	if err != nil {
		return "", netip.Prefix{}, fmt.Errorf("bad affinity name %q: %w", name, err)
	}
	return node, cidr, nil
}

func encodeAffinity(state string) []byte {
	data, _ := json.Marshal(affinity{State: state})
	return data
}

// nodeAffinity is one of a node's affinities as listed.
type nodeAffinity struct {
	cidr  netip.Prefix
	state string
	rev   int64
}

// listAffinities returns node's affinities, sorted by block address.
func (m *IPAM) listAffinities(ctx context.Context, node string) ([]nodeAffinity, error) {
	kvs, _, err := m.affinities.List(ctx, node+"/")
	if err != nil {
		return nil, fmt.Errorf("list block affinities of node %s: %w", node, err)
	}
	out := make([]nodeAffinity, 0, len(kvs))
	for _, kv := range kvs {
		n, cidr, err := parseAffinityName(kv.Name)
		if err != nil || n != node {
			// A node whose name has node as a prefix followed by "/"
			// cannot exist (names have no "/"), so this is junk.
			continue
		}
		var a affinity
		if err := json.Unmarshal(kv.Value, &a); err != nil {
			return nil, fmt.Errorf("decode block affinity %s: %w", kv.Name, err)
		}
		out = append(out, nodeAffinity{cidr: cidr, state: a.State, rev: kv.Revision})
	}
	slices.SortFunc(out, func(a, b nodeAffinity) int { return a.cidr.Addr().Compare(b.cidr.Addr()) })
	return out, nil
}

// NodeBlocks returns the blocks confirmed affine to node, sorted: the
// prefixes the node advertises over BGP.
func (m *IPAM) NodeBlocks(ctx context.Context, node string) ([]netip.Prefix, error) {
	affs, err := m.listAffinities(ctx, node)
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for _, a := range affs {
		if a.state == stateConfirmed {
			out = append(out, a.cidr)
		}
	}
	return out, nil
}

// setAffinityState moves an affinity to state with a CAS on its revision.
func (m *IPAM) setAffinityState(ctx context.Context, name, state string) error {
	return retry("update block affinity "+name, func() error {
		kv, err := m.affinities.Get(ctx, name)
		if err != nil {
			return err
		}
		var a affinity
		if err := json.Unmarshal(kv.Value, &a); err == nil && a.State == state {
			return nil
		}
		_, err = m.affinities.Update(ctx, name, encodeAffinity(state), kv.Revision)
		return err
	})
}

// deleteAffinity removes an affinity with a CAS on the revision read;
// gone already is fine.
func (m *IPAM) deleteAffinity(ctx context.Context, name string) error {
	return m.deleteAffinityIn(ctx, name, "")
}

// deleteAffinityIn is deleteAffinity that leaves the affinity alone
// unless it is in state (any state when "").
func (m *IPAM) deleteAffinityIn(ctx context.Context, name, state string) error {
	return retry("delete block affinity "+name, func() error {
		kv, err := m.affinities.Get(ctx, name)
		if errors.Is(err, datastore.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if state != "" {
			var a affinity
			if err := json.Unmarshal(kv.Value, &a); err != nil {
				return fmt.Errorf("decode block affinity %s: %w", name, err)
			}
			if a.State != state {
				return nil
			}
		}
		err = m.affinities.Delete(ctx, name, kv.Revision)
		if errors.Is(err, datastore.ErrNotFound) {
			return nil
		}
		return err
	})
}

// claim tries to make block cidr node's with Calico's protocol: pending
// affinity, CAS-create the block carrying the affinity, confirm. It
// returns false, having dropped the pending affinity, when another node
// holds the block.
func (m *IPAM) claim(ctx context.Context, node string, cidr netip.Prefix) (bool, error) {
	name := affinityName(node, cidr)
	if _, err := m.affinities.Create(ctx, name, encodeAffinity(statePending)); err != nil &&
		!errors.Is(err, datastore.ErrExists) {
		// ErrExists: our own affinity left by a claim that died midway, or
		// by another allocator of the same node; carry on with it.
		return false, fmt.Errorf("claim block %s for node %s: %w", cidr, node, err)
	}
	_, err := m.blocks.Create(ctx, cidr.String(), newBlock(cidr, node, m.now()).encode())
	if errors.Is(err, datastore.ErrExists) {
		kv, gerr := m.blocks.Get(ctx, cidr.String())
		switch {
		case gerr == nil:
			b, derr := decodeBlock(kv.Value)
			if derr != nil {
				return false, derr
			}
			if b.affineTo(node) {
				err = nil // ours already: confirm below
				break
			}
			return false, m.deleteAffinity(ctx, name)
		case errors.Is(gerr, datastore.ErrNotFound):
			// Created and deleted again since: let the caller walk on.
			return false, m.deleteAffinity(ctx, name)
		default:
			return false, fmt.Errorf("claim block %s for node %s: %w", cidr, node, gerr)
		}
	}
	if err != nil {
		return false, errors.Join(fmt.Errorf("claim block %s for node %s: %w", cidr, node, err), m.deleteAffinity(ctx, name))
	}
	if err := m.setAffinityState(ctx, name, stateConfirmed); err != nil {
		return false, fmt.Errorf("claim block %s for node %s: %w", cidr, node, err)
	}
	return true, nil
}

// errNoFreeBlock: every block-sized subnet of the pool exists already.
var errNoFreeBlock = errors.New("no free block in pool")

// claimBlock claims a block of pool for node. The walk over the pool's
// block-sized subnets starts at an offset derived from the node name, so
// that nodes spread across the pool instead of racing for its first
// block, and a node lands where it did before (Calico seeds its
// randomBlockGenerator with the hostname for the same reasons). exists
// holds the blocks known to exist; claimBlock adds the ones it learns of.
func (m *IPAM) claimBlock(ctx context.Context, node string, pool Pool, exists map[netip.Prefix]bool) (netip.Prefix, error) {
	bits := pool.blockBits()
	n := uint64(1) << (bits - pool.CIDR.Bits())
	h := fnv.New64a()
	h.Write([]byte(node))
	start := h.Sum64() % n
	base := addrUint(pool.CIDR.Addr())
	step := uint64(1) << (32 - bits)
	for i := range n {
		if err := ctx.Err(); err != nil {
			return netip.Prefix{}, err
		}
		off := (start + i) % n
		cidr := netip.PrefixFrom(uintAddr(base+uint32(off*step)), bits)
		if exists[cidr] {
			continue
		}
		ok, err := m.claim(ctx, node, cidr)
		if err != nil {
			return netip.Prefix{}, err
		}
		exists[cidr] = true
		if ok {
			return cidr, nil
		}
	}
	return netip.Prefix{}, errNoFreeBlock
}

// ReleaseNodeBlocks gives up node's empty blocks: their affinities are
// dropped and the blocks deleted, so that other nodes can claim them (a
// node being removed). Blocks that still hold addresses stay affine to
// node with their allocations; release those addresses first.
func (m *IPAM) ReleaseNodeBlocks(ctx context.Context, node string) error {
	affs, err := m.listAffinities(ctx, node)
	if err != nil {
		return err
	}
	var errs []error
	for _, a := range affs {
		if _, err := m.releaseAffinity(ctx, node, a.cidr); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// RemoveNode is for a node that is gone for good: every affinity of
// node is dropped. Empty blocks are deleted; blocks that still hold
// addresses lose their affinity and keep the addresses, and are deleted
// when the last one is released (Calico's ReleaseHostAffinities with
// mustBeEmpty false). Release the node's own addresses first, or they
// stay allocated in blocks no node advertises.
func (m *IPAM) RemoveNode(ctx context.Context, node string) error {
	affs, err := m.listAffinities(ctx, node)
	if err != nil {
		return err
	}
	var errs []error
	for _, a := range affs {
		ok, err := m.releaseAffinity(ctx, node, a.cidr)
		if err != nil || ok {
			errs = append(errs, err)
			continue
		}
		err = retry("remove affinity of block "+a.cidr.String(), func() error {
			kv, err := m.blocks.Get(ctx, a.cidr.String())
			if errors.Is(err, datastore.ErrNotFound) {
				return nil
			}
			if err != nil {
				return err
			}
			b, err := decodeBlock(kv.Value)
			if err != nil || !b.affineTo(node) {
				return err
			}
			b.Affinity, b.AffinityClaimTime = nil, nil
			return m.writeReleased(ctx, kv, b)
		})
		if err == nil {
			err = m.deleteAffinity(ctx, affinityName(node, a.cidr))
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// ReleasePoolAffinities is for pool deletion: it drops the affinities of
// the empty blocks inside cidr and deletes those blocks, and deletes
// empty blocks that no node holds. Blocks with allocations are left.
func (m *IPAM) ReleasePoolAffinities(ctx context.Context, cidr netip.Prefix) error {
	kvs, _, err := m.blocks.List(ctx, "")
	if err != nil {
		return fmt.Errorf("list IPAM blocks: %w", err)
	}
	var errs []error
	for _, kv := range kvs {
		b, err := decodeBlock(kv.Value)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !(Pool{CIDR: cidr}).holds(b.prefix) || !b.empty() {
			continue
		}
		if node := b.owner(); node != "" {
			_, err = m.releaseAffinity(ctx, node, b.prefix)
		} else {
			err = m.blocks.Delete(ctx, kv.Name, kv.Revision)
			if errors.Is(err, datastore.ErrNotFound) || errors.Is(err, datastore.ErrConflict) {
				err = nil // gone, or in use again
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("release block %s: %w", b.CIDR, err))
		}
	}
	// Affinities whose claim died before the block was created.
	akvs, _, err := m.affinities.List(ctx, "")
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("list block affinities: %w", err))...)
	}
	for _, kv := range akvs {
		node, c, err := parseAffinityName(kv.Name)
		if err != nil || !(Pool{CIDR: cidr}).holds(c) {
			continue
		}
		if _, err := m.releaseAffinity(ctx, node, c); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ReleaseEmptyBlock drops node's affinity for block cidr and deletes the
// block if it holds no addresses, and reports whether it did. A node
// calls it for its blocks that no pool holds any more (the pool was
// deleted with --force while pods still had addresses in them).
func (m *IPAM) ReleaseEmptyBlock(ctx context.Context, node string, cidr netip.Prefix) (bool, error) {
	// While its pods live the block is not empty, and the node asks on
	// every reconcile: answer without a write. releaseAffinity's two
	// (pendingDeletion, then confirmed again) would each wake every
	// watcher of affinities, this node's reconcile among them, which
	// would ask again: a loop of writes for as long as the pods live.
	if kv, err := m.blocks.Get(ctx, cidr.String()); err == nil {
		if b, err := decodeBlock(kv.Value); err == nil && b.affineTo(node) && !b.empty() {
			return false, nil
		}
	}
	return m.releaseAffinity(ctx, node, cidr)
}

// releaseAffinity drops node's affinity for block cidr if the block is
// empty (deleting the block) or missing. It reports whether it did.
// Calico's order: mark the affinity pendingDeletion so that the node's
// allocators stop using the block, delete the block with a CAS on the
// revision that showed it empty, then delete the affinity; if the block
// is not empty the affinity goes back to confirmed.
func (m *IPAM) releaseAffinity(ctx context.Context, node string, cidr netip.Prefix) (bool, error) {
	name := affinityName(node, cidr)
	if err := m.setAffinityState(ctx, name, statePendingDeletion); err != nil {
		if errors.Is(err, datastore.ErrNotFound) {
			return false, nil
		}
		return false, err
	}
	released := false
	err := retry("release block "+cidr.String(), func() error {
		kv, err := m.blocks.Get(ctx, cidr.String())
		if errors.Is(err, datastore.ErrNotFound) {
			released = true
			return nil
		}
		if err != nil {
			return err
		}
		b, err := decodeBlock(kv.Value)
		if err != nil {
			return err
		}
		if !b.affineTo(node) {
			released = true // not ours: the affinity is stale
			return nil
		}
		if !b.empty() {
			return nil
		}
		if err := m.blocks.Delete(ctx, kv.Name, kv.Revision); err != nil {
			return err
		}
		released = true
		return nil
	})
	if err != nil || !released {
		return false, errors.Join(err, m.setAffinityState(ctx, name, stateConfirmed))
	}
	// Only if still pendingDeletion: a claim of the same block by the
	// same node between the block's delete and now has confirmed it for
	// the block it created again.
	return true, m.deleteAffinityIn(ctx, name, statePendingDeletion)
}
