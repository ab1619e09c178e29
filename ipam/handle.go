package ipam

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"podnet/datastore"
)

// handle counts a handle's addresses per block, as Calico's
// AllocationHandle: {"block":{"10.0.0.0/26":2},"deleted":false}. It is
// written before the block on allocation and after it on release, so it
// never counts fewer addresses than the blocks hold: a crash leaves a
// handle that over-counts (found and dropped by ReleaseByHandle), never
// an address that no handle knows.
type handle struct {
	Block   map[string]int `json:"block"`
	Deleted bool           `json:"deleted"`
}

func decodeHandle(id string, data []byte) (*handle, error) {
	var h handle
	if err := json.Unmarshal(data, &h); err != nil {
		return nil, fmt.Errorf("decode handle %s: %w", id, err)
	}
	if h.Block == nil {
		h.Block = map[string]int{}
	}
	return &h, nil
}

func (h *handle) encode() []byte {
	data, _ := json.Marshal(h)
	return data
}

// changeHandle adds delta addresses in block cidr to handle id, creating
// the handle on the first address and deleting it when it counts none.
func (m *IPAM) changeHandle(ctx context.Context, id string, cidr netip.Prefix, delta int) error {
	c := cidr.String()
	if delta > 0 {
		// Pod handles are new: try the create first and save a read.
		_, err := m.handles.Create(ctx, id, (&handle{Block: map[string]int{c: delta}}).encode())
		if err == nil {
			return nil
		}
		if !errors.Is(err, datastore.ErrExists) {
			return fmt.Errorf("create handle %s: %w", id, err)
		}
	}
	return retry("update handle "+id, func() error {
		kv, err := m.handles.Get(ctx, id)
		if errors.Is(err, datastore.ErrNotFound) {
			if delta <= 0 {
				return nil
			}
			_, err = m.handles.Create(ctx, id, (&handle{Block: map[string]int{c: delta}}).encode())
			if errors.Is(err, datastore.ErrExists) {
				return datastore.ErrConflict
			}
			return err
		}
		if err != nil {
			return err
		}
		h, err := decodeHandle(id, kv.Value)
		if err != nil {
			return err
		}
		if n := h.Block[c] + delta; n > 0 {
			h.Block[c] = n
		} else {
			delete(h.Block, c)
		}
		if len(h.Block) == 0 {
			err = m.handles.Delete(ctx, id, kv.Revision)
			if errors.Is(err, datastore.ErrNotFound) {
				return datastore.ErrConflict
			}
			return err
		}
		_, err = m.handles.Update(ctx, id, h.encode(), kv.Revision)
		if errors.Is(err, datastore.ErrNotFound) {
			return datastore.ErrConflict
		}
		return err
	})
}

// Handle is a handle and how many addresses it holds in each block.
type Handle struct {
	ID     string
	Blocks map[netip.Prefix]int
}

// Handles lists every handle, sorted by ID: with Allocations, what a leak
// check compares (a handle whose counts match no address is a leftover).
func (m *IPAM) Handles(ctx context.Context) ([]Handle, error) {
	kvs, _, err := m.handles.List(ctx, "")
	if err != nil {
		return nil, fmt.Errorf("list IPAM handles: %w", err)
	}
	out := make([]Handle, 0, len(kvs))
	for _, kv := range kvs {
		h, err := decodeHandle(kv.Name, kv.Value)
		if err != nil {
			return nil, err
		}
		hh := Handle{ID: kv.Name, Blocks: make(map[netip.Prefix]int, len(h.Block))}
		for c, n := range h.Block {
			p, err := netip.ParsePrefix(c)
			if err != nil {
				return nil, fmt.Errorf("handle %s: bad block %q", kv.Name, c)
			}
			hh.Blocks[p] = n
		}
		out = append(out, hh)
	}
	slices.SortFunc(out, func(a, b Handle) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// sortedBlocks returns a handle's block CIDRs in order, so that releases
// walk blocks in the same order everywhere.
func (h *handle) sortedBlocks() []string { return slices.Sorted(maps.Keys(h.Block)) }
