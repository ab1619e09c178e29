package ipam

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// block is one allocation block as stored in etcd, with Calico's
// AllocationBlock field names (cidr, affinity, allocations, unallocated,
// attributes, sequenceNumber, deleted) so that the JSON reads the
// same as Calico's under /calico/ipam/v2/assignment.
//
// Invariants (checked by decodeBlock, kept by the methods):
//   - len(Allocations) == number of addresses in CIDR;
//   - Unallocated holds exactly the ordinals whose Allocations entry is nil,
//     sorted ascending, so that the lowest free address is handed out first
//     (Calico appends released ordinals at the end; we keep them sorted so
//     that allocation is predictable);
//   - every non-nil Allocations entry indexes Attributes, and every
//     attribute is referenced (unreferenced ones are dropped on release).
type block struct {
	CIDR string `json:"cidr"`
	// Affinity is "host:<node>" for a block claimed by a node, nil for a
	// block whose node let it go while it still had allocations.
	Affinity          *string    `json:"affinity"`
	AffinityClaimTime *time.Time `json:"affinity_claim_time,omitempty"`
	// Allocations has one entry per address: nil is free, otherwise an
	// index into Attributes.
	Allocations []*int           `json:"allocations"`
	Unallocated []int            `json:"unallocated"`
	Attributes  []allocAttribute `json:"attributes"`
	// SequenceNumber is bumped on every write; SequenceNumberForAllocation
	// records it per allocated ordinal, as Calico does, so that a release
	// can tell a re-allocated address from the one it meant.
	SequenceNumber              uint64            `json:"sequenceNumber"`
	SequenceNumberForAllocation map[string]uint64 `json:"sequenceNumberForAllocation,omitempty"`
	Deleted                     bool              `json:"deleted"`

	prefix netip.Prefix // parsed CIDR, not stored
}

// allocAttribute is what an allocation is for: its handle and its owner's
// attributes (Calico's "secondary", ActiveOwnerAttrs).
type allocAttribute struct {
	HandleID  *string           `json:"handle_id"`
	Secondary map[string]string `json:"secondary"`
}

// hostAffinity is the block affinity string for node.
func hostAffinity(node string) string { return "host:" + node }

// newBlock returns an empty block for cidr, affine to node ("" for none).
func newBlock(cidr netip.Prefix, node string, now time.Time) *block {
	n := blockSize(cidr)
	b := &block{
		CIDR:           cidr.String(),
		Allocations:    make([]*int, n),
		Unallocated:    make([]int, n),
		Attributes:     []allocAttribute{},
		SequenceNumber: uint64(now.UnixNano()),
		prefix:         cidr,
	}
	for i := range b.Unallocated {
		b.Unallocated[i] = i
	}
	if node != "" {
		a := hostAffinity(node)
		t := now.UTC().Truncate(time.Second)
		b.Affinity, b.AffinityClaimTime = &a, &t
	}
	return b
}

// blockSize is the number of addresses in an IPv4 prefix.
func blockSize(p netip.Prefix) int { return 1 << (32 - p.Bits()) }

// decodeBlock parses and checks a stored block. A block that breaks the
// invariants is refused rather than repaired: allocating from it could
// hand out an address twice.
func decodeBlock(data []byte) (*block, error) {
	var b block
	if err := json.Unmarshal(data, &b); err != nil {
		return nil, fmt.Errorf("decode block: %w", err)
	}
	p, err := netip.ParsePrefix(b.CIDR)
	if err != nil || !p.Addr().Is4() || p != p.Masked() || p.Bits() < minBlockBits {
		return nil, fmt.Errorf("decode block: bad cidr %q", b.CIDR)
	}
	b.prefix = p
	n := blockSize(p)
	if len(b.Allocations) != n {
		return nil, fmt.Errorf("block %s: %d allocation entries, want %d", b.CIDR, len(b.Allocations), n)
	}
	free := 0
	for i, a := range b.Allocations {
		if a == nil {
			free++
			continue
		}
		if *a < 0 || *a >= len(b.Attributes) {
			return nil, fmt.Errorf("block %s: ordinal %d has attribute index %d of %d", b.CIDR, i, *a, len(b.Attributes))
		}
	}
	if len(b.Unallocated) != free {
		return nil, fmt.Errorf("block %s: %d unallocated entries for %d free addresses", b.CIDR, len(b.Unallocated), free)
	}
	for _, o := range b.Unallocated {
		if o < 0 || o >= n || b.Allocations[o] != nil {
			return nil, fmt.Errorf("block %s: unallocated ordinal %d is not free", b.CIDR, o)
		}
	}
	// Blocks written by Calico keep released ordinals at the end; sort so
	// that the lowest free address goes first here too.
	slices.Sort(b.Unallocated)
	if len(slices.Compact(slices.Clone(b.Unallocated))) != free {
		return nil, fmt.Errorf("block %s: duplicate unallocated ordinals", b.CIDR)
	}
	if b.Attributes == nil {
		b.Attributes = []allocAttribute{}
	}
	return &b, nil
}

// encode returns the JSON stored in etcd.
func (b *block) encode() []byte {
	data, err := json.Marshal(b)
	if err != nil {
		// Only plain types: Marshal cannot fail.
		panic(fmt.Sprintf("encode block %s: %v", b.CIDR, err))
	}
	return data
}

// owner is the node the block is affine to, or "".
func (b *block) owner() string {
	if b.Affinity == nil {
		return ""
	}
	if n, ok := strings.CutPrefix(*b.Affinity, "host:"); ok {
		return n
	}
	return ""
}

// affineTo reports whether the block is claimed by node.
func (b *block) affineTo(node string) bool {
	return b.Affinity != nil && *b.Affinity == hostAffinity(node)
}

// free is the number of unallocated addresses.
func (b *block) free() int { return len(b.Unallocated) }

// inUse is the number of allocated addresses.
func (b *block) inUse() int { return len(b.Allocations) - len(b.Unallocated) }

// empty reports whether nothing is allocated.
func (b *block) empty() bool { return b.inUse() == 0 }

// ordinal is ip's index in the block.
func (b *block) ordinal(ip netip.Addr) (int, bool) {
	if !b.prefix.Contains(ip) {
		return 0, false
	}
	return int(addrUint(ip) - addrUint(b.prefix.Addr())), true
}

// addr is the address at ordinal o.
func (b *block) addr(o int) netip.Addr { return uintAddr(addrUint(b.prefix.Addr()) + uint32(o)) }

// nextFree is the lowest free ordinal.
func (b *block) nextFree() (int, bool) {
	if len(b.Unallocated) == 0 {
		return 0, false
	}
	return b.Unallocated[0], true
}

// attrIndex finds or adds the attribute entry for handle and attrs; equal
// entries are shared, as Calico does, so a block of pods with one handle
// each has one entry per pod and a node's tunnel address one entry.
func (b *block) attrIndex(handle string, attrs map[string]string) int {
	for i, a := range b.Attributes {
		if a.HandleID != nil && *a.HandleID == handle && maps.Equal(a.Secondary, attrs) {
			return i
		}
	}
	h := handle
	b.Attributes = append(b.Attributes, allocAttribute{HandleID: &h, Secondary: maps.Clone(attrs)})
	return len(b.Attributes) - 1
}

// assign allocates ordinal o to handle with attrs. It fails if o is not
// free; the caller bumps the sequence number once per write.
func (b *block) assign(o int, handle string, attrs map[string]string) error {
	if o < 0 || o >= len(b.Allocations) {
		return fmt.Errorf("ordinal %d outside block %s", o, b.CIDR)
	}
	i, ok := slices.BinarySearch(b.Unallocated, o)
	if !ok {
		return fmt.Errorf("%s is %w (handle %s)", b.addr(o), ErrAlreadyAssigned, b.handleOf(o))
	}
	b.Unallocated = slices.Delete(b.Unallocated, i, i+1)
	idx := b.attrIndex(handle, attrs)
	b.Allocations[o] = &idx
	if b.SequenceNumberForAllocation == nil {
		b.SequenceNumberForAllocation = map[string]uint64{}
	}
	b.SequenceNumberForAllocation[strconv.Itoa(o)] = b.SequenceNumber
	return nil
}

// assignNext allocates the lowest free address.
func (b *block) assignNext(handle string, attrs map[string]string) (netip.Addr, error) {
	o, ok := b.nextFree()
	if !ok {
		return netip.Addr{}, errBlockFull
	}
	if err := b.assign(o, handle, attrs); err != nil {
		return netip.Addr{}, err
	}
	return b.addr(o), nil
}

// seqOf is the block's sequence number when ordinal o was assigned (0
// if free).
func (b *block) seqOf(o int) uint64 { return b.SequenceNumberForAllocation[strconv.Itoa(o)] }

// allocatedTo reports whether ordinal o holds the allocation of handle
// made at sequence number seq, not a later one of the same address.
func (b *block) allocatedTo(o int, handle string, seq uint64) bool {
	return b.Allocations[o] != nil && b.handleOf(o) == handle && b.seqOf(o) == seq
}

// handleOf is the handle of an allocated ordinal ("" if free or none).
func (b *block) handleOf(o int) string {
	a := b.Allocations[o]
	if a == nil || b.Attributes[*a].HandleID == nil {
		return ""
	}
	return *b.Attributes[*a].HandleID
}

// attrsOf is the owner attributes of an allocated ordinal.
func (b *block) attrsOf(o int) map[string]string {
	a := b.Allocations[o]
	if a == nil {
		return nil
	}
	return b.Attributes[*a].Secondary
}

// release frees ordinal o and returns the handle it had. ok is false if
// it was not allocated. Call compact once after a batch of releases.
func (b *block) release(o int) (handle string, ok bool) {
	if o < 0 || o >= len(b.Allocations) || b.Allocations[o] == nil {
		return "", false
	}
	handle = b.handleOf(o)
	b.Allocations[o] = nil
	i, _ := slices.BinarySearch(b.Unallocated, o)
	b.Unallocated = slices.Insert(b.Unallocated, i, o)
	delete(b.SequenceNumberForAllocation, strconv.Itoa(o))
	return handle, true
}

// ordinalsOf lists the ordinals allocated to handle.
func (b *block) ordinalsOf(handle string) []int {
	var out []int
	for o := range b.Allocations {
		if b.Allocations[o] != nil && b.handleOf(o) == handle {
			out = append(out, o)
		}
	}
	return out
}

// releaseHandle frees every address of handle and returns how many.
func (b *block) releaseHandle(handle string) int {
	ords := b.ordinalsOf(handle)
	for _, o := range ords {
		b.release(o)
	}
	return len(ords)
}

// compact drops attribute entries no allocation refers to and renumbers
// the rest, so that released pods leave nothing behind.
func (b *block) compact() {
	used := make([]bool, len(b.Attributes))
	for _, a := range b.Allocations {
		if a != nil {
			used[*a] = true
		}
	}
	remap := make([]int, len(b.Attributes))
	kept := b.Attributes[:0]
	for i, a := range b.Attributes {
		if used[i] {
			remap[i] = len(kept)
			kept = append(kept, a)
		}
	}
	clear(b.Attributes[len(kept):])
	b.Attributes = kept
	for o, a := range b.Allocations {
		if a != nil {
			v := remap[*a]
			b.Allocations[o] = &v
		}
	}
	if len(b.SequenceNumberForAllocation) == 0 {
		b.SequenceNumberForAllocation = nil
	}
}

// errBlockFull: the block has no free address; try another.
var errBlockFull = errors.New("block is full")

func addrUint(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func uintAddr(u uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(u >> 24), byte(u >> 16), byte(u >> 8), byte(u)})
}
