// Package ipam is podnet's IP address management, on Calico's model:
// IP pools are cut into blocks (the pool's blockSize,
// default /26) that nodes claim through block affinities, and addresses
// are handed out from blocks under handles that carry owner attributes.
// Everything lives in etcd through package datastore, and every write is
// a compare-and-swap on the revision that was read, so any number of
// processes on any number of machines may allocate at once.
//
// The algorithm is Calico's: a node allocates from blocks affine to it,
// claims a new block when those are full, and borrows from other nodes'
// blocks when strict affinity is off. Where Calico's users suffer, podnet
// does better: errors say which pools are full and how full, a pool with
// allocations can be found before it is deleted (PoolAllocations), and
// leaks can be found and released without Kubernetes (Allocations,
// ReleaseIPs, ReleaseByHandle).
//
// IPv4 only.
package ipam

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"time"

	"podnet/datastore"
	"podnet/selector"
)

// Errors callers can test with errors.Is. Each is wrapped with the
// address, pool or handle it is about.
var (
	// ErrPoolsExhausted: every candidate pool is full. Add a pool or
	// release addresses.
	ErrPoolsExhausted = errors.New("no IPs available in pools")
	// ErrNotInPool: the address is outside every pool given.
	ErrNotInPool = errors.New("not in any IP pool")
	// ErrAlreadyAssigned: the address is allocated already; the message
	// names its handle.
	ErrAlreadyAssigned = errors.New("already assigned")
	// ErrNotAssigned: release or lookup of an address (or handle) that is
	// not allocated. Releasing it again is harmless.
	ErrNotAssigned = errors.New("not assigned")
	// ErrStrictAffinity: the node's blocks are full, no new block can be
	// claimed, and strict affinity forbids borrowing. Add a pool, or turn
	// strict affinity off.
	ErrStrictAffinity = errors.New("no more free affine blocks and strict affinity enabled")
	// ErrNoPools: no enabled pool to allocate from, or none that selects
	// the node and allows the use; the message names each pool and why
	// it was left out.
	ErrNoPools = errors.New("no enabled IP pools to assign from")
	// ErrBlockLimit: the node holds MaxBlocksPerHost blocks already. As in
	// Calico, this is returned at once, without borrowing.
	ErrBlockLimit = errors.New("cannot allocate new block due to per host block limit")
	// ErrTooManyRetries: the compare-and-swap lost maxRetries times in a
	// row. Retry later.
	ErrTooManyRetries = errors.New("max retries hit - excessive concurrent IPAM requests")
	// ErrPoolUse: AssignIP of an address in a pool whose allowedUses
	// leave out AssignIPArgs.Use.
	ErrPoolUse = errors.New("pool does not allow this use")
	// ErrPoolDisabled: AssignIP of an address in a disabled pool.
	ErrPoolDisabled = errors.New("IP pool is disabled")
)

// Implementation constants.
const (
	// maxRetries bounds each compare-and-swap loop (Calico's
	// datastoreRetries).
	maxRetries = 100
	// backoffAfter is the number of attempts made without pausing.
	backoffAfter = 3
	// DefaultBlockSize is the pool block size (prefix length) used when a
	// Pool's BlockSize is 0, as in Calico.
	DefaultBlockSize = 26
	// minBlockBits and maxBlockBits bound an IPv4 block size (Calico's
	// validation: 20..32).
	minBlockBits, maxBlockBits = 20, 32
)

// Pool is what IPAM needs to know of an IP pool resource.
type Pool struct {
	// Name identifies the pool in errors and usage reports.
	Name string
	// CIDR is the pool's IPv4 range, masked. Required.
	CIDR netip.Prefix
	// BlockSize is the prefix length of the pool's blocks, 20..32 and not
	// shorter than CIDR's; 0 means DefaultBlockSize (26).
	BlockSize int
	// Disabled pools get no new allocations; existing ones keep working.
	Disabled bool
	// NodeSelector is the pool's nodeSelector: AutoAssign gives its
	// addresses only to nodes whose labels (AssignArgs.NodeLabels) it
	// matches. nil selects every node, as all() does.
	NodeSelector selector.Selector
	// AllowedUses are the uses the pool's addresses may serve; nil means
	// Workload and Tunnel, Calico's default.
	AllowedUses []Use
	// Manual pools (assignmentMode Manual) are left out of automatic
	// assignment unless the caller names them (AssignArgs.Requested).
	Manual bool
}

// Use is what an address is for; a pool serves the uses in its
// AllowedUses.
type Use string

// Uses of an address (Calico's IPPool allowedUses).
const (
	// UseWorkload is a pod's address.
	UseWorkload Use = "Workload"
	// UseTunnel is a node's IP-in-IP or VXLAN tunnel address.
	UseTunnel Use = "Tunnel"
	// UseLoadBalancer is a service address; podnet assigns none, so a
	// LoadBalancer-only pool never gives out addresses.
	UseLoadBalancer Use = "LoadBalancer"
)

// allows reports whether the pool's addresses may serve use.
func (p Pool) allows(use Use) bool {
	if p.AllowedUses == nil {
		return use == UseWorkload || use == UseTunnel
	}
	return slices.Contains(p.AllowedUses, use)
}

// selects reports whether the pool's node selector matches labels.
func (p Pool) selects(labels map[string]string) bool {
	return p.NodeSelector == nil || p.NodeSelector.Matches(labels)
}

func (p Pool) blockBits() int {
	if p.BlockSize == 0 {
		return DefaultBlockSize
	}
	return p.BlockSize
}

func (p Pool) String() string {
	if p.Name == "" {
		return p.CIDR.String()
	}
	return p.Name
}

// check validates a pool given by a caller.
func (p Pool) check() error {
	if !p.CIDR.IsValid() || !p.CIDR.Addr().Is4() {
		return fmt.Errorf("IP pool %s: cidr %v is not an IPv4 prefix", p.Name, p.CIDR)
	}
	if p.CIDR != p.CIDR.Masked() {
		return fmt.Errorf("IP pool %s: cidr %s is not masked (want %s)", p.Name, p.CIDR, p.CIDR.Masked())
	}
	bs := p.blockBits()
	if bs < minBlockBits || bs > maxBlockBits {
		return fmt.Errorf("IP pool %s: block size %d outside %d..%d", p.Name, bs, minBlockBits, maxBlockBits)
	}
	if bs < p.CIDR.Bits() {
		return fmt.Errorf("IP pool %s: cidr %s is smaller than its block size /%d", p.Name, p.CIDR, bs)
	}
	return nil
}

// blockFor is the pool block that contains ip.
func (p Pool) blockFor(ip netip.Addr) netip.Prefix {
	return netip.PrefixFrom(ip, p.blockBits()).Masked()
}

// holds reports whether block cidr lies inside the pool.
func (p Pool) holds(cidr netip.Prefix) bool {
	return p.CIDR.Bits() <= cidr.Bits() && p.CIDR.Contains(cidr.Addr())
}

// Config is the cluster-wide IPAM configuration (Calico's
// IPAMConfiguration "default").
type Config struct {
	// StrictAffinity forbids borrowing addresses from other nodes' blocks.
	// Default false.
	StrictAffinity bool
	// AutoAllocateBlocks lets nodes claim new blocks. Default true.
	AutoAllocateBlocks bool
	// MaxBlocksPerHost caps the blocks a node may claim; 0 is unlimited.
	// Calico documents 0 as unlimited but its code silently uses 20 when
	// it is 0; podnet does what the documentation says.
	MaxBlocksPerHost int
}

// DefaultConfig is the configuration in force when none is stored.
var DefaultConfig = Config{StrictAffinity: false, AutoAllocateBlocks: true, MaxBlocksPerHost: 0}

// configJSON is the stored form, with Calico's field names.
type configJSON struct {
	StrictAffinity     bool `json:"strict_affinity"`
	AutoAllocateBlocks bool `json:"auto_allocate_blocks"`
	MaxBlocksPerHost   int  `json:"maxBlocksPerHost"`
}

// Check validates a configuration with Calico's rules and error texts.
func (c Config) Check() error {
	if c.MaxBlocksPerHost < 0 {
		return fmt.Errorf("MaxBlocksPerHost must not be negative, got %d", c.MaxBlocksPerHost)
	}
	if c.MaxBlocksPerHost > 0 && !c.StrictAffinity {
		return errors.New("MaxBlocksPerHost requires StrictAffinity to be enabled")
	}
	if !c.StrictAffinity && !c.AutoAllocateBlocks {
		return errors.New("Cannot disable 'StrictAffinity' and 'AutoAllocateBlocks' at the same time")
	}
	return nil
}

// IPAM allocates addresses. It keeps no state of its own beyond the
// datastore, so any number of IPAMs (in one process or many) may work on
// the same etcd at once; it is safe for concurrent use.
type IPAM struct {
	blocks, affinities, handles, config datastore.Collection
	// now is the clock for claim times and sequence numbers.
	now func() time.Time
	// updateBlock is blocks.Update; tests replace it to lose the answer
	// of a write that etcd applied, as a member dying mid-call does.
	updateBlock func(ctx context.Context, name string, value []byte, rev int64) (int64, error)
}

// New returns an IPAM on store.
func New(store *datastore.Store) *IPAM {
	m := &IPAM{
		blocks:     store.IPAMBlocks(),
		affinities: store.IPAMAffinities(),
		handles:    store.IPAMHandles(),
		config:     store.IPAMConfig(),
		now:        time.Now,
	}
	m.updateBlock = m.blocks.Update
	return m
}

const configName = "default"

// GetConfig reads the IPAM configuration; DefaultConfig if none is stored.
func (m *IPAM) GetConfig(ctx context.Context) (Config, error) {
	kv, err := m.config.Get(ctx, configName)
	if errors.Is(err, datastore.ErrNotFound) {
		return DefaultConfig, nil
	}
	if err != nil {
		return Config{}, fmt.Errorf("read IPAM config: %w", err)
	}
	var c configJSON
	if err := json.Unmarshal(kv.Value, &c); err != nil {
		return Config{}, fmt.Errorf("decode IPAM config: %w", err)
	}
	return Config(c), nil
}

// SetConfig validates and stores the IPAM configuration. The rest of
// the stored object (the IPAMConfiguration resource's apiVersion and
// metadata: labels, uid, creation time) is kept as it is.
func (m *IPAM) SetConfig(ctx context.Context, c Config) error {
	if err := c.Check(); err != nil {
		return err
	}
	data, _ := json.Marshal(configJSON(c))
	return retry("set IPAM config", func() error {
		kv, err := m.config.Get(ctx, configName)
		if errors.Is(err, datastore.ErrNotFound) {
			_, err = m.config.Create(ctx, configName, data)
			if errors.Is(err, datastore.ErrExists) {
				return datastore.ErrConflict
			}
			return err
		}
		if err != nil {
			return err
		}
		var stored, settings map[string]json.RawMessage
		if err := json.Unmarshal(kv.Value, &stored); err != nil {
			return fmt.Errorf("decode IPAM config: %w", err)
		}
		json.Unmarshal(data, &settings)
		maps.Copy(stored, settings)
		merged, err := json.Marshal(stored)
		if err != nil {
			return err
		}
		_, err = m.config.Update(ctx, configName, merged, kv.Revision)
		return err
	})
}

// retry runs f until it returns anything but datastore.ErrConflict, at
// most maxRetries times.
func retry(op string, f func() error) error {
	for try := range maxRetries {
		backoff(try)
		err := f()
		if !errors.Is(err, datastore.ErrConflict) {
			if err != nil {
				return fmt.Errorf("%s: %w", op, err)
			}
			return nil
		}
	}
	return fmt.Errorf("%s: %w", op, ErrTooManyRetries)
}

// backoff sleeps before retry number try (0 is the first attempt). The
// first few retries go at once: losing a CAS usually means one other
// writer, and re-reading is enough. Past that many writers are fighting
// over one object (borrowers on the last free block, pods started in a
// burst on one node), and a random pause that grows with try spreads
// them out so that the bounded retries are not burnt in a few
// milliseconds.
func backoff(try int) {
	if try < backoffAfter {
		return
	}
	time.Sleep(time.Duration(rand.Int64N(int64(min(try, 50)) * int64(time.Millisecond))))
}
