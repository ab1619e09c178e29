package ipam

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"

	"podnet/datastore"
)

// AssignArgs says what AutoAssign allocates for.
type AssignArgs struct {
	// Node is the node the address is for. Required.
	Node string
	// HandleID names the allocation, e.g. "pod.<node>.<pod>" or
	// "ipip-tunnel-addr-<node>"; ReleaseByHandle releases by it. Required.
	HandleID string
	// Attrs describe the owner, e.g. {"node": n, "pod": p, "type": "pod"}.
	// "node" is set to Node when missing, so that borrowed addresses can be
	// told apart.
	Attrs map[string]string
	// Pools are the candidate pools in order of preference. AutoAssign
	// uses those that are enabled, allow Use and (unless Requested)
	// select the node and are not Manual; with none left it fails naming
	// each pool and why it was left out.
	Pools []Pool
	// NodeLabels are the node's labels, matched by the pools' node
	// selectors.
	NodeLabels map[string]string
	// Use is what the address is for; "" means UseWorkload (a pod).
	Use Use
	// Requested says the caller named Pools itself (podnet pod add
	// --pool). As in Calico, node selectors and assignment mode are then
	// not applied: naming a pool is the way to use one for a node it
	// does not select. Disabled pools and allowed uses still count.
	Requested bool
}

func (a AssignArgs) use() Use {
	if a.Use == "" {
		return UseWorkload
	}
	return a.Use
}

// AssignIPArgs says which address AssignIP allocates, and for what.
type AssignIPArgs struct {
	// IP is the address wanted. Required.
	IP netip.Addr
	// Node, HandleID and Attrs are as in AssignArgs.
	Node, HandleID string
	Attrs          map[string]string
	// Pools are all pools, to find the one that holds IP.
	Pools []Pool
	// Use, when set, must be among the pool's allowed uses.
	Use Use
	// Restore: the address is one the caller had before (a pod's address
	// IPAM lost), so a disabled pool gives it too: old pods keep working.
	Restore bool
}

// ownerAttrs copies attrs and sets "node".
func ownerAttrs(node string, attrs map[string]string) map[string]string {
	a := maps.Clone(attrs)
	if a == nil {
		a = map[string]string{}
	}
	if _, ok := a["node"]; !ok {
		a["node"] = node
	}
	return a
}

// candidatePools checks the pools of a and keeps those AutoAssign may
// use (see AssignArgs.Pools). With none left, the error says, pool by
// pool, why: disabled, not for this use, manual only, or its node
// selector does not select the node.
func candidatePools(a AssignArgs) ([]Pool, error) {
	use := a.use()
	var out []Pool
	var why []string
	disabled := 0
	for _, p := range a.Pools {
		// A disabled pool gives nothing out, so its shape does not
		// matter: the API accepts a disabled pool smaller than its
		// block (as Calico does), and it must not stop the others.
		if p.Disabled {
			disabled++
			why = append(why, fmt.Sprintf("%s (%s) is disabled", p, p.CIDR))
			continue
		}
		if err := p.check(); err != nil {
			return nil, err
		}
		switch {
		case !p.allows(use):
			why = append(why, fmt.Sprintf("%s (%s) allows %s, not %s", p, p.CIDR, usesString(p), use))
		case a.Requested:
			out = append(out, p)
		case p.Manual:
			why = append(why, fmt.Sprintf("%s (%s) is for manual assignment only (assignmentMode Manual; name it to use it)", p, p.CIDR))
		case !p.selects(a.NodeLabels):
			why = append(why, fmt.Sprintf("%s (%s) has nodeSelector %s, which does not select the node", p, p.CIDR, p.NodeSelector))
		default:
			out = append(out, p)
		}
	}
	switch {
	case len(out) > 0:
		return out, nil
	case len(a.Pools) == 0:
		return nil, ErrNoPools
	case disabled == 1 && len(a.Pools) == 1:
		return nil, fmt.Errorf("%w: IP pool %s (%s) is disabled", ErrNoPools, a.Pools[0], a.Pools[0].CIDR)
	case disabled == len(a.Pools):
		return nil, fmt.Errorf("%w: IP pools %s are all disabled", ErrNoPools, poolNames(a.Pools))
	}
	return nil, fmt.Errorf("%w: none serves %s addresses on node %s (labels: %s): %s",
		ErrNoPools, use, a.Node, labelsString(a.NodeLabels), strings.Join(why, "; "))
}

func usesString(p Pool) string {
	if p.AllowedUses == nil {
		return "[Workload Tunnel]"
	}
	return fmt.Sprint(p.AllowedUses)
}

// labelsString prints labels as k=v, sorted.
func labelsString(labels map[string]string) string {
	if len(labels) == 0 {
		return "none"
	}
	kv := make([]string, 0, len(labels))
	for k, v := range labels {
		kv = append(kv, k+"="+v)
	}
	slices.Sort(kv)
	return strings.Join(kv, ",")
}

func poolNames(pools []Pool) string {
	names := make([]string, len(pools))
	for i, p := range pools {
		names[i] = p.String()
	}
	return "[" + strings.Join(names, " ") + "]"
}

// AutoAssign allocates one address for a.Node from a.Pools with Calico's
// algorithm (docs/calico-conventions.md §2.3):
//
//  1. the lowest free address of the first block affine to the node (in
//     pool preference order, then block order) that has one;
//  2. else claim a new block in the first pool that has an unclaimed
//     block (not beyond MaxBlocksPerHost, when set) and take its first
//     address;
//  3. else, unless StrictAffinity is set, borrow from any block of the
//     pools with free space, tried in random order so that borrowers do
//     not all fight over the same block.
func (m *IPAM) AutoAssign(ctx context.Context, a AssignArgs) (netip.Addr, error) {
	if a.Node == "" || a.HandleID == "" {
		return netip.Addr{}, errors.New("auto-assign: node and handle ID are required")
	}
	pools, err := candidatePools(a)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("auto-assign for node %s: %w", a.Node, err)
	}
	cfg, err := m.GetConfig(ctx)
	if err != nil {
		return netip.Addr{}, err
	}
	attrs := ownerAttrs(a.Node, a.Attrs)

	// 1. Blocks affine to the node.
	affs, err := m.listAffinities(ctx, a.Node)
	if err != nil {
		return netip.Addr{}, err
	}
	for _, p := range pools {
		for i, af := range affs {
			if !p.holds(af.cidr) {
				continue
			}
			if af.state == statePending {
				// A claim that died before confirming (a crash, a lost
				// answer) left it, or another allocator of this node is
				// claiming: finish the claim, which either can do. Left
				// pending, the block would never be used or advertised.
				ok, err := m.claim(ctx, a.Node, af.cidr)
				if err != nil {
					return netip.Addr{}, err
				}
				if !ok {
					continue // another node's block: the affinity is gone
				}
				af.state, affs[i].state = stateConfirmed, stateConfirmed
			}
			if af.state != stateConfirmed {
				continue
			}
			ip, err := m.assignFromBlock(ctx, af.cidr, a.Node, a.HandleID, attrs, true)
			if err == nil {
				return ip, nil
			}
			if !isSkippable(err) {
				return netip.Addr{}, err
			}
		}
	}

	// 2. Claim a new block.
	if cfg.AutoAllocateBlocks {
		if cfg.MaxBlocksPerHost > 0 && len(affs) >= cfg.MaxBlocksPerHost {
			return netip.Addr{}, fmt.Errorf("auto-assign for node %s: %w (%d)", a.Node, ErrBlockLimit, cfg.MaxBlocksPerHost)
		}
		exists, err := m.blockSet(ctx)
		if err != nil {
			return netip.Addr{}, err
		}
		for _, p := range pools {
			// A claimed block can fill up before we use it, when another
			// allocator for the same node gets there first; then claim again.
			for {
				cidr, err := m.claimBlock(ctx, a.Node, p, exists)
				if errors.Is(err, errNoFreeBlock) {
					break
				}
				if err != nil {
					return netip.Addr{}, err
				}
				ip, err := m.assignFromBlock(ctx, cidr, a.Node, a.HandleID, attrs, true)
				if err == nil {
					return ip, nil
				}
				if !isSkippable(err) {
					return netip.Addr{}, err
				}
			}
		}
	}

	// 3. Borrow.
	if cfg.StrictAffinity {
		return netip.Addr{}, fmt.Errorf("auto-assign for node %s: %w", a.Node, ErrStrictAffinity)
	}
	blocks, err := m.listBlocks(ctx)
	if err != nil {
		return netip.Addr{}, err
	}
	for _, p := range pools {
		var cand []netip.Prefix
		for _, b := range blocks {
			if p.holds(b.prefix) && b.free() > 0 {
				cand = append(cand, b.prefix)
			}
		}
		rand.Shuffle(len(cand), func(i, j int) { cand[i], cand[j] = cand[j], cand[i] })
		for _, cidr := range cand {
			ip, err := m.assignFromBlock(ctx, cidr, a.Node, a.HandleID, attrs, false)
			if err == nil {
				return ip, nil
			}
			if !isSkippable(err) {
				return netip.Addr{}, err
			}
		}
	}
	return netip.Addr{}, m.exhausted(ctx, pools)
}

// isSkippable reports whether assignFromBlock failed for a reason that
// sends the caller on to the next block.
func isSkippable(err error) bool {
	return errors.Is(err, errBlockFull) || errors.Is(err, errNotAffine) || errors.Is(err, datastore.ErrNotFound)
}

// errNotAffine: a block thought to be the node's is not (any more).
var errNotAffine = errors.New("block is not affine to the node")

// exhausted builds the error for full pools, with how full each is.
func (m *IPAM) exhausted(ctx context.Context, pools []Pool) error {
	var detail []string
	if us, err := m.Usage(ctx, pools); err == nil {
		for _, u := range us {
			if u.Name == "" && !u.CIDR.IsValid() {
				continue
			}
			claimed := 0
			for _, b := range u.Blocks {
				claimed += b.Total
			}
			detail = append(detail, fmt.Sprintf("%s %s: %d of %d addresses in use, %d of %d in blocks",
				u.Name, u.CIDR, u.InUse, u.Total, claimed, u.Total))
		}
	}
	return fmt.Errorf("%w: %s (%s)", ErrPoolsExhausted, poolNames(pools), strings.Join(detail, "; "))
}

// assignFromBlock allocates the lowest free address of block cidr. With
// affine set it only uses the block if it is still node's. The handle is
// counted first and uncounted if the block write fails (Calico's order,
// see handle).
func (m *IPAM) assignFromBlock(ctx context.Context, cidr netip.Prefix, node, handleID string, attrs map[string]string, affine bool) (netip.Addr, error) {
	return m.updateBlockAssign(ctx, cidr, handleID, func(b *block) (netip.Addr, error) {
		if affine && !b.affineTo(node) {
			return netip.Addr{}, errNotAffine
		}
		return b.assignNext(handleID, attrs)
	})
}

// updateBlockAssign runs one allocation f against block cidr in a CAS
// loop. f changes the block it is given and returns the address it
// allocated; the handle is counted before the first write.
func (m *IPAM) updateBlockAssign(ctx context.Context, cidr netip.Prefix, handleID string, f func(*block) (netip.Addr, error)) (netip.Addr, error) {
	counted := false
	fail := func(err error) (netip.Addr, error) {
		if counted {
			err = errors.Join(err, m.changeHandle(ctx, handleID, cidr, -1))
		}
		return netip.Addr{}, err
	}
	for try := range maxRetries {
		backoff(try)
		kv, err := m.blocks.Get(ctx, cidr.String())
		if err != nil {
			return fail(err)
		}
		b, err := decodeBlock(kv.Value)
		if err != nil {
			return fail(err)
		}
		b.SequenceNumber++
		seq := b.SequenceNumber
		ip, err := f(b)
		if err != nil {
			return fail(err)
		}
		if !counted {
			if err := m.changeHandle(ctx, handleID, cidr, 1); err != nil {
				return netip.Addr{}, err
			}
			counted = true
		}
		_, err = m.updateBlock(ctx, cidr.String(), b.encode(), kv.Revision)
		if err == nil {
			return ip, nil
		}
		if !errors.Is(err, datastore.ErrConflict) {
			applied, rerr := m.lostWrite(ctx, cidr, ip, handleID, seq)
			switch {
			case rerr != nil:
				return netip.Addr{}, fmt.Errorf("assign %s from block %s: outcome unknown (release handle %s to settle it): %w", ip, cidr, handleID, errors.Join(err, rerr))
			case applied:
				return ip, nil
			default:
				return fail(err)
			}
		}
	}
	return fail(fmt.Errorf("assign from block %s: %w", cidr, ErrTooManyRetries))
}

// lostWrite settles a block write that failed other than by a
// conflict: the request may have reached etcd and been applied, its
// answer lost (a member dying mid-call answers EOF or Unavailable). It
// reads the block again: ip held by handleID since this write (its
// sequence number seq) means the write took effect and the allocation
// stands (applied); not held means it did not, and the caller uncounts
// the handle. When the block cannot be read either, the error says so:
// the handle stays counted and the outcome is unknown, so that the
// caller's release by handle (which frees whatever the handle holds)
// settles it: never an address allocated that nobody will release.
func (m *IPAM) lostWrite(ctx context.Context, cidr netip.Prefix, ip netip.Addr, handleID string, seq uint64) (applied bool, err error) {
	kv, err := m.blocks.Get(ctx, cidr.String())
	if err != nil {
		return false, err
	}
	b, err := decodeBlock(kv.Value)
	if err != nil {
		return false, err
	}
	o, ok := b.ordinal(ip)
	return ok && b.allocatedTo(o, handleID, seq), nil
}

// AssignIP allocates a.IP. If its block does not exist yet it is claimed
// for a.Node; if it exists it is used whoever owns it (an address in
// another node's block is borrowed, and its "node" attribute says so).
func (m *IPAM) AssignIP(ctx context.Context, a AssignIPArgs) error {
	if a.Node == "" || a.HandleID == "" {
		return errors.New("assign IP: node and handle ID are required")
	}
	if !a.IP.Is4() {
		return fmt.Errorf("assign IP %s: not an IPv4 address", a.IP)
	}
	var pool Pool
	found := false
	for _, p := range a.Pools {
		if p.CIDR.Contains(a.IP) {
			pool, found = p, true
			break
		}
	}
	if !found {
		return fmt.Errorf("%s is %w", a.IP, ErrNotInPool)
	}
	if pool.Disabled && !a.Restore {
		return fmt.Errorf("assign IP %s: %w: %s (%s)", a.IP, ErrPoolDisabled, pool, pool.CIDR)
	}
	if a.Use != "" && !pool.allows(a.Use) {
		return fmt.Errorf("assign IP %s: %w: %s (%s) allows %s, not %s", a.IP, ErrPoolUse, pool, pool.CIDR, usesString(pool), a.Use)
	}
	// Only the pool the address is taken from must be usable; another
	// one (disabled and smaller than its block, say) is none of this
	// allocation's business.
	if err := pool.check(); err != nil {
		return err
	}
	attrs := ownerAttrs(a.Node, a.Attrs)
	cidr := pool.blockFor(a.IP)
	for range maxRetries {
		_, err := m.updateBlockAssign(ctx, cidr, a.HandleID, func(b *block) (netip.Addr, error) {
			o, _ := b.ordinal(a.IP)
			return a.IP, b.assign(o, a.HandleID, attrs)
		})
		switch {
		case err == nil || errors.Is(err, ErrAlreadyAssigned):
			return err
		case !errors.Is(err, datastore.ErrNotFound):
			return fmt.Errorf("assign IP %s: %w", a.IP, err)
		}
		// No block yet: claim it for the node. Losing the race to another
		// node is fine, the block exists then.
		if _, err := m.claim(ctx, a.Node, cidr); err != nil {
			return fmt.Errorf("assign IP %s: %w", a.IP, err)
		}
	}
	return fmt.Errorf("assign IP %s: %w", a.IP, ErrTooManyRetries)
}
