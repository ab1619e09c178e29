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

// ReleaseIPs frees addresses. Addresses that are not allocated are
// named in the error (ErrNotAssigned) and the others are released all the
// same; released lists those that were. A block left empty and affine to
// no node is deleted; handle counts go down, and a handle that counts
// nothing is deleted.
func (m *IPAM) ReleaseIPs(ctx context.Context, ips ...netip.Addr) (released []netip.Addr, err error) {
	var errs []error
	known := map[netip.Prefix]bool{}
	byBlock := map[netip.Prefix][]netip.Addr{}
	var order []netip.Prefix
	for _, ip := range ips {
		cidr, ok, err := m.findBlock(ctx, ip, known)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !ok {
			errs = append(errs, fmt.Errorf("IP address %s is %w", ip, ErrNotAssigned))
			continue
		}
		if _, seen := byBlock[cidr]; !seen {
			order = append(order, cidr)
		}
		byBlock[cidr] = append(byBlock[cidr], ip)
	}
	return m.releaseByBlock(ctx, order, byBlock, nil, errs)
}

// releaseByBlock frees the addresses of each block in order (byBlock),
// checked against want when it is not nil (releaseFromBlock), and adds
// its errors to errs.
func (m *IPAM) releaseByBlock(ctx context.Context, order []netip.Prefix, byBlock map[netip.Prefix][]netip.Addr, want map[netip.Addr]Allocation, errs []error) (released []netip.Addr, err error) {
	for _, cidr := range order {
		r, err := m.releaseFromBlock(ctx, cidr, byBlock[cidr], want)
		released = append(released, r...)
		if err != nil {
			errs = append(errs, err)
		}
	}
	slices.SortFunc(released, netip.Addr.Compare)
	return released, errors.Join(errs...)
}

// ErrChanged: an address ReleaseAllocations was to free is no longer the
// allocation it was given (freed, or assigned again since).
var ErrChanged = errors.New("allocation changed")

// ReleaseAllocations frees each allocation only if it is still what the
// caller saw: the same handle and sequence number at the same address.
// One freed and assigned again since (to a new pod) is left alone and
// named in the error (ErrChanged); so is one freed already. It is how a
// leak check's findings are released without racing the allocators.
func (m *IPAM) ReleaseAllocations(ctx context.Context, allocs []Allocation) (released []netip.Addr, err error) {
	byBlock := map[netip.Prefix][]netip.Addr{}
	want := map[netip.Addr]Allocation{}
	var order []netip.Prefix
	for _, a := range allocs {
		if _, seen := byBlock[a.Block]; !seen {
			order = append(order, a.Block)
		}
		byBlock[a.Block] = append(byBlock[a.Block], a.IP)
		want[a.IP] = a
	}
	return m.releaseByBlock(ctx, order, byBlock, want, nil)
}

// releaseFromBlock frees ips, all inside block cidr, then uncounts their
// handles. With want, an address is freed only while its allocation has
// want's handle and sequence number.
func (m *IPAM) releaseFromBlock(ctx context.Context, cidr netip.Prefix, ips []netip.Addr, want map[netip.Addr]Allocation) ([]netip.Addr, error) {
	var (
		released []netip.Addr
		missing  []error
		handles  map[string]int
	)
	err := retry("release from block "+cidr.String(), func() error {
		released, missing, handles = nil, nil, map[string]int{}
		kv, err := m.blocks.Get(ctx, cidr.String())
		if errors.Is(err, datastore.ErrNotFound) {
			for _, ip := range ips {
				missing = append(missing, fmt.Errorf("IP address %s is %w", ip, ErrNotAssigned))
			}
			return nil
		}
		if err != nil {
			return err
		}
		b, err := decodeBlock(kv.Value)
		if err != nil {
			return err
		}
		for _, ip := range ips {
			o, ok := b.ordinal(ip)
			if w, check := want[ip]; check && ok && b.Allocations[o] != nil && !b.allocatedTo(o, w.HandleID, w.Seq) {
				missing = append(missing, fmt.Errorf("IP address %s: %w (handle %s now)", ip, ErrChanged, b.handleOf(o)))
				continue
			}
			h, ok := b.release(o)
			if !ok {
				missing = append(missing, fmt.Errorf("IP address %s is %w", ip, ErrNotAssigned))
				continue
			}
			handles[h]++
			released = append(released, ip)
		}
		if len(released) == 0 {
			return nil
		}
		return m.writeReleased(ctx, kv, b)
	})
	if err != nil {
		return nil, err
	}
	errs := missing
	for _, h := range slices.Sorted(maps.Keys(handles)) {
		if h == "" {
			continue
		}
		if err := m.changeHandle(ctx, h, cidr, -handles[h]); err != nil {
			errs = append(errs, err)
		}
	}
	return released, errors.Join(errs...)
}

// writeReleased stores a block after releases: deleted when it is empty
// and no node holds it (a borrowed-into block whose node let it go),
// updated otherwise. Both are CAS on kv's revision.
func (m *IPAM) writeReleased(ctx context.Context, kv datastore.KV, b *block) error {
	b.compact()
	b.SequenceNumber++
	if b.empty() && b.Affinity == nil {
		err := m.blocks.Delete(ctx, kv.Name, kv.Revision)
		if errors.Is(err, datastore.ErrNotFound) {
			return datastore.ErrConflict // re-read: gone already
		}
		return err
	}
	_, err := m.blocks.Update(ctx, kv.Name, b.encode(), kv.Revision)
	if errors.Is(err, datastore.ErrNotFound) {
		return datastore.ErrConflict
	}
	return err
}

// HandleAddrs lists the addresses handle handleID holds, sorted; none
// (and no error) if there is no such handle.
func (m *IPAM) HandleAddrs(ctx context.Context, handleID string) ([]netip.Addr, error) {
	kv, err := m.handles.Get(ctx, handleID)
	if errors.Is(err, datastore.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read handle %s: %w", handleID, err)
	}
	h, err := decodeHandle(handleID, kv.Value)
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, c := range h.sortedBlocks() {
		kv, err := m.blocks.Get(ctx, c)
		if errors.Is(err, datastore.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read block %s: %w", c, err)
		}
		b, err := decodeBlock(kv.Value)
		if err != nil {
			return nil, err
		}
		for _, o := range b.ordinalsOf(handleID) {
			out = append(out, b.addr(o))
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out, nil
}

// ReleaseByHandle frees every address of handle handleID and deletes the
// handle. ErrNotAssigned if there is no such handle.
func (m *IPAM) ReleaseByHandle(ctx context.Context, handleID string) error {
	kv, err := m.handles.Get(ctx, handleID)
	if errors.Is(err, datastore.ErrNotFound) {
		return fmt.Errorf("handle %s is %w", handleID, ErrNotAssigned)
	}
	if err != nil {
		return fmt.Errorf("release handle %s: %w", handleID, err)
	}
	h, err := decodeHandle(handleID, kv.Value)
	if err != nil {
		return err
	}
	var errs []error
	for _, c := range h.sortedBlocks() {
		cidr, err := netip.ParsePrefix(c)
		if err != nil {
			errs = append(errs, fmt.Errorf("handle %s: bad block %q", handleID, c))
			continue
		}
		n := 0
		err = retry("release handle "+handleID+" from block "+c, func() error {
			n = 0
			kv, err := m.blocks.Get(ctx, c)
			if errors.Is(err, datastore.ErrNotFound) {
				return nil
			}
			if err != nil {
				return err
			}
			b, err := decodeBlock(kv.Value)
			if err != nil {
				return err
			}
			if n = b.releaseHandle(handleID); n == 0 {
				return nil
			}
			return m.writeReleased(ctx, kv, b)
		})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		// Uncount what the handle said it had here, or what was found if
		// that is more: a count left by a crashed allocation is dropped,
		// and one added since we read the handle stays.
		if err := m.changeHandle(ctx, handleID, cidr, -max(n, h.Block[c])); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
