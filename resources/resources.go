// Package resources is the resource client of podnet: create, apply,
// replace, delete, get, list, patch and label API resources (package api)
// in the datastore, with defaults and validation before any write, the
// per-kind rules (IPPool overlap with other pools and with the nodes'
// underlay subnets, immutable fields, pool-in-use check before delete),
// optimistic concurrency on resourceVersion and all-or-nothing
// validation of multi-resource requests. The CLI's resource verbs and
// the daemon both use it.
package resources

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"podnet/api"
	"podnet/datastore"
)

// Options configures a Client. The zero value is usable.
type Options struct {
	// PoolInUse reports how many addresses are still allocated from a
	// pool and where ("worker1: 3, worker2: 2"); Delete refuses to delete
	// an IPPool while count > 0 unless forced. nil: pools are deleted
	// without asking.
	PoolInUse func(ctx context.Context, pool api.IPPool) (count int, where string, err error)
	// PoolDeleted runs after an IPPool is deleted, e.g. to drop the
	// pool's block affinities (Calico does that on pool delete). Its
	// error is returned but the pool stays deleted. nil: nothing runs.
	PoolDeleted func(ctx context.Context, pool api.IPPool) error
	// Now is the clock for creationTimestamp; nil means time.Now.
	Now func() time.Time
}

// Client reads and writes resources. It holds no state besides its
// store and options and is safe for concurrent use.
type Client struct {
	store *datastore.Store
	opts  Options
}

// New returns a Client on store.
func New(store *datastore.Store, opts Options) *Client {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Client{store: store, opts: opts}
}

// Store returns the client's datastore.
func (c *Client) Store() *datastore.Store { return c.store }

// Collection is where resources of kind (exact, e.g. "IPPool") live:
// /podnet/resources/v3/<plural>/, except IPAMConfiguration, which lives
// at the IPAM configuration key (/podnet/ipam/v2/config/default) that
// the ipam package reads and writes, in its format (see ipamConfigStored).
func Collection(store *datastore.Store, kind string) (datastore.Collection, error) {
	for _, k := range api.Kinds() {
		if k.Kind == kind {
			if kind == api.KindIPAMConfiguration {
				return store.IPAMConfig(), nil
			}
			return store.Resources(k.Plural), nil
		}
	}
	return datastore.Collection{}, fmt.Errorf("unknown kind %q", kind)
}

// FromKV decodes a stored resource of kind, as read by Get, List or a
// watch of Collection(store, kind), and sets its resourceVersion to the
// revision. Stored JSON is read leniently, so that a newer writer's
// fields do not break an older reader.
func FromKV(kind string, kv datastore.KV) (api.Resource, error) {
	r, err := api.New(kind)
	if err != nil {
		return nil, err
	}
	if kind == api.KindIPAMConfiguration {
		var st ipamConfigStored
		if err := json.Unmarshal(kv.Value, &st); err != nil {
			return nil, fmt.Errorf("decode stored %s(%s): %w", kind, kv.Name, err)
		}
		c := r.(*api.IPAMConfiguration)
		if st.Metadata != nil {
			c.ObjectMeta = *st.Metadata
		}
		c.APIVersion = st.APIVersion
		auto := st.AutoAllocateBlocks
		c.Spec = api.IPAMConfigurationSpec{StrictAffinity: st.StrictAffinity, MaxBlocksPerHost: st.MaxBlocksPerHost, AutoAllocateBlocks: &auto}
	} else if err := json.Unmarshal(kv.Value, r); err != nil {
		return nil, fmt.Errorf("decode stored %s(%s): %w", kind, kv.Name, err)
	}
	// The apiVersion it was written with (podnet.io/v1 or, for Calico's
	// kinds, projectcalico.org/v3) is kept, so get prints it back.
	*r.GetTypeMeta() = api.TypeMeta{APIVersion: api.OutputAPIVersion(kind, r.GetTypeMeta().APIVersion), Kind: kind}
	m := r.GetObjectMeta()
	m.Name = kv.Name
	m.ResourceVersion = strconv.FormatInt(kv.Revision, 10)
	return r, nil
}

// ipamConfigStored is how the IPAM configuration is stored: the ipam
// package's fields (Calico's model.IPAMConfig names), which it reads and
// writes, plus the resource's metadata, which it ignores (and drops when
// it writes the configuration itself).
type ipamConfigStored struct {
	APIVersion         string          `json:"apiVersion,omitempty"`
	StrictAffinity     bool            `json:"strict_affinity"`
	AutoAllocateBlocks bool            `json:"auto_allocate_blocks"`
	MaxBlocksPerHost   int             `json:"maxBlocksPerHost"`
	Metadata           *api.ObjectMeta `json:"metadata,omitempty"`
}

// toStored is the stored form of r: everything but resourceVersion.
func toStored(r api.Resource) ([]byte, error) {
	m := r.GetObjectMeta()
	rv := m.ResourceVersion
	m.ResourceVersion = ""
	var v any = r
	if c, ok := r.(*api.IPAMConfiguration); ok {
		meta := c.ObjectMeta
		v = ipamConfigStored{APIVersion: c.APIVersion, StrictAffinity: c.Spec.StrictAffinity, AutoAllocateBlocks: c.AutoAllocate(),
			MaxBlocksPerHost: c.Spec.MaxBlocksPerHost, Metadata: &meta}
	}
	b, err := json.Marshal(v)
	m.ResourceVersion = rv
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", api.Key(r), err)
	}
	return b, nil
}

// clone deep-copies r through JSON, so that the client never changes the
// caller's resources.
func clone(r api.Resource) (api.Resource, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("copy %s: %w", api.Key(r), err)
	}
	out, err := api.New(r.ResourceKind())
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, out); err != nil {
		return nil, fmt.Errorf("copy %s: %w", api.Key(r), err)
	}
	return out, nil
}

// kindOf resolves a command-line kind name ("pools") to the exact kind.
func kindOf(name string) (string, error) {
	k, err := api.LookupKind(name)
	if err != nil {
		return "", err
	}
	return k.Kind, nil
}

// newUID returns a random (version 4) UUID.
func newUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// parseRV parses a resourceVersion; "" is 0 (none given).
func parseRV(r api.Resource) (int64, error) {
	rv := r.GetObjectMeta().ResourceVersion
	if rv == "" {
		return 0, nil
	}
	v, err := strconv.ParseInt(rv, 10, 64)
	if err != nil || v <= 0 {
		return 0, &api.ValidationError{Fields: []api.FieldError{{Field: "Metadata.ResourceVersion", Value: rv, Reason: "must be a positive integer as read from the datastore"}}}
	}
	return v, nil
}
