package resources

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"podnet/api"
	"podnet/datastore"
)

type verb string

const (
	verbCreate  verb = "create"
	verbApply   verb = "apply"
	verbReplace verb = "replace"
	verbDelete  verb = "delete"
)

// DeleteOptions modify Delete.
type DeleteOptions struct {
	// ResourceVersion, when set, makes the delete conditional on it.
	ResourceVersion string
	// Force deletes an IPPool even if Options.PoolInUse reports
	// allocated addresses.
	Force bool
}

// step is one planned write.
type step struct {
	r      api.Resource // what to write (defaulted, validated), or the stored one for a delete
	kind   string
	name   string
	create bool
	rev    int64 // the revision an update or delete is conditional on
	value  []byte
	// unused, for a pool delete that checked the pool's addresses: the
	// delete is conditional on none of its blocks having changed since.
	unused *datastore.Unchanged
}

// Create stores a new resource; it fails if one by that name exists. It
// returns the stored resource with its resourceVersion, uid and
// creationTimestamp.
func (c *Client) Create(ctx context.Context, r api.Resource) (api.Resource, error) {
	return one(c.CreateAll(ctx, []api.Resource{r}))
}

// Apply creates the resource or, if it exists, updates it (as Replace).
func (c *Client) Apply(ctx context.Context, r api.Resource) (api.Resource, error) {
	return one(c.ApplyAll(ctx, []api.Resource{r}))
}

// Replace updates an existing resource. A resourceVersion in r must be
// the stored one (else an update conflict); without one the current
// revision is used, as calicoctl does. uid and creationTimestamp are
// kept; a Node's status is kept when r has none.
func (c *Client) Replace(ctx context.Context, r api.Resource) (api.Resource, error) {
	return one(c.ReplaceAll(ctx, []api.Resource{r}))
}

// CreateAll creates every resource, or none if any is invalid or already
// exists; see BatchError for a datastore failure part-way. A pool that
// another client made overlapping after the check (see createPool) is
// such a failure: the resources before it are written.
func (c *Client) CreateAll(ctx context.Context, rs []api.Resource) ([]api.Resource, error) {
	return c.writeAll(ctx, verbCreate, rs, false)
}

// ApplyAll applies every resource, or none if any is invalid.
func (c *Client) ApplyAll(ctx context.Context, rs []api.Resource) ([]api.Resource, error) {
	return c.writeAll(ctx, verbApply, rs, false)
}

// ReplaceAll replaces every resource, or none if any is invalid or
// missing.
func (c *Client) ReplaceAll(ctx context.Context, rs []api.Resource) ([]api.Resource, error) {
	return c.writeAll(ctx, verbReplace, rs, false)
}

// DeleteAll deletes the resources named by rs (kind and name; a
// resourceVersion makes the delete conditional), or none if any is
// missing or an IPPool still in use (unless force).
func (c *Client) DeleteAll(ctx context.Context, rs []api.Resource, force bool) ([]api.Resource, error) {
	return c.writeAll(ctx, verbDelete, rs, force)
}

// Delete deletes one resource by kind (a command-line name such as
// "ippool" or "pools" is fine) and name, and returns what was deleted.
func (c *Client) Delete(ctx context.Context, kind, name string, opts DeleteOptions) (api.Resource, error) {
	k, err := kindOf(kind)
	if err != nil {
		return nil, err
	}
	r, _ := api.New(k)
	r.GetObjectMeta().Name = name
	r.GetObjectMeta().ResourceVersion = opts.ResourceVersion
	return one(c.DeleteAll(ctx, []api.Resource{r}, opts.Force))
}

// one unwraps a single-resource batch: its error is the resource's own.
func one(rs []api.Resource, err error) (api.Resource, error) {
	var be *BatchError
	if errors.As(err, &be) && len(be.Errs) == 1 {
		return nil, be.Errs[0]
	}
	if err != nil {
		return nil, err
	}
	return rs[0], nil
}

// Get reads one resource by kind (any command-line name) and name.
func (c *Client) Get(ctx context.Context, kind, name string) (api.Resource, error) {
	k, err := kindOf(kind)
	if err != nil {
		return nil, err
	}
	col, _ := Collection(c.store, k)
	kv, err := col.Get(ctx, name)
	if err != nil {
		return nil, storeErr(err, k, name, 0)
	}
	return FromKV(k, kv)
}

// List reads every resource of kind, sorted by name, and the datastore
// revision of the read (the list's resourceVersion).
func (c *Client) List(ctx context.Context, kind string) ([]api.Resource, string, error) {
	k, err := kindOf(kind)
	if err != nil {
		return nil, "", err
	}
	col, _ := Collection(c.store, k)
	kvs, rev, err := col.List(ctx, "")
	if err != nil {
		return nil, "", err
	}
	out := make([]api.Resource, 0, len(kvs))
	for _, kv := range kvs {
		r, err := FromKV(k, kv)
		if err != nil {
			return nil, "", err
		}
		out = append(out, r)
	}
	return out, strconv.FormatInt(rev, 10), nil
}

// writeAll validates and plans every resource first (reading the
// datastore), writes nothing if any fails, then writes them in order.
func (c *Client) writeAll(ctx context.Context, v verb, in []api.Resource, force bool) ([]api.Resource, error) {
	be := &BatchError{Verb: string(v), Total: len(in)}
	for i, r := range in {
		if i == 0 {
			be.Kind = r.ResourceKind()
		} else if r.ResourceKind() != be.Kind {
			be.Kind = ""
		}
	}
	name := func(r api.Resource, err error) error {
		if len(in) == 1 {
			return err
		}
		return fmt.Errorf("%s: %w", api.Key(r), err)
	}
	p := planner{c: c, force: force, seen: map[string]bool{}}
	steps := make([]step, 0, len(in))
	for _, r := range in {
		s, err := p.plan(ctx, v, r)
		if err != nil {
			be.Errs = append(be.Errs, name(r, err))
			continue
		}
		steps = append(steps, s)
	}
	if len(be.Errs) > 0 {
		return nil, be
	}
	out := make([]api.Resource, 0, len(steps))
	for _, s := range steps {
		r, err := c.write(ctx, s)
		if err != nil {
			// A resource that comes back with the error was written (a
			// pool deleted whose blocks were not released): it is done.
			if r != nil {
				out = append(out, r)
			}
			be.Done, be.Errs = out, []error{name(s.r, err)}
			return out, be
		}
		out = append(out, r)
	}
	return out, nil
}

// write carries out one step.
func (c *Client) write(ctx context.Context, s step) (api.Resource, error) {
	col, _ := Collection(c.store, s.kind)
	var rev int64
	var err error
	switch {
	case s.value == nil: // delete
		if s.unused != nil {
			err = c.deleteUnusedPool(ctx, col, s)
		} else {
			err = col.Delete(ctx, s.name, s.rev)
		}
		if err != nil {
			return nil, storeErr(err, s.kind, s.name, s.rev)
		}
		if pool, ok := s.r.(*api.IPPool); ok && c.opts.PoolDeleted != nil {
			if err := c.opts.PoolDeleted(ctx, *pool); err != nil {
				return s.r, fmt.Errorf("IPPool %s deleted, but releasing its blocks failed: %w", s.name, err)
			}
		}
		return s.r, nil
	case s.create && s.kind == api.KindIPPool:
		rev, err = c.createPool(ctx, col, s)
	case s.create:
		rev, err = col.Create(ctx, s.name, s.value)
	default:
		rev, err = col.Update(ctx, s.name, s.value, s.rev)
	}
	if err != nil {
		return nil, storeErr(err, s.kind, s.name, s.rev)
	}
	s.r.GetObjectMeta().ResourceVersion = strconv.FormatInt(rev, 10)
	return s.r, nil
}

// poolWriteTries is how many times createPool reads the pools and tries
// its create when other pools keep changing in between, and how many
// times deleteUnusedPool checks a pool's addresses again.
const poolWriteTries = 5

// createPool stores a new IPPool unless it overlaps a stored one. The
// planner checked that already, but two clients creating overlapping
// pools at once would both pass that check: here the pools are read
// again and the create is conditional on none of them having changed
// since (datastore.Unchanged), so of two such creates one
// sees the other's pool.
func (c *Client) createPool(ctx context.Context, col datastore.Collection, s step) (int64, error) {
	pool := s.r.(*api.IPPool)
	for range poolWriteTries {
		kvs, since, err := col.List(ctx, "")
		if err != nil {
			return 0, err
		}
		stored := make([]*api.IPPool, 0, len(kvs))
		for _, kv := range kvs {
			r, err := FromKV(api.KindIPPool, kv)
			if err != nil {
				return 0, err
			}
			stored = append(stored, r.(*api.IPPool))
		}
		if err := overlapError(pool, stored); err != nil {
			return 0, err
		}
		rev, err := col.CreateIf(ctx, s.name, s.value, datastore.Unchanged{C: col, Since: since})
		if !errors.Is(err, datastore.ErrStale) {
			return rev, err
		}
		if err := backOff(ctx); err != nil {
			return 0, err
		}
	}
	return 0, fmt.Errorf("%w: IPPool(%s): other IPPools kept changing while it was being created; try again", datastore.ErrConflict, s.name)
}

// backOff waits a few random milliseconds before a conditional write is
// tried again, so that clients racing for one range do not collide again
// in step.
func backOff(ctx context.Context) error {
	select {
	case <-time.After(time.Duration(1+rand.IntN(20)) * time.Millisecond):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// poolUnused checks that no address is allocated from pool (the
// PoolInUse hook) and returns the condition under which that still holds:
// none of the pool's blocks changed since the check began.
func (c *Client) poolUnused(ctx context.Context, pool *api.IPPool) (*datastore.Unchanged, error) {
	cidr, err := pool.Prefix()
	if err != nil {
		return nil, err
	}
	since, err := c.store.Revision(ctx)
	if err != nil {
		return nil, err
	}
	n, where, err := c.opts.PoolInUse(ctx, *pool)
	if err != nil {
		return nil, fmt.Errorf("check addresses allocated from IPPool %s: %w (delete with --force to skip the check)", pool.Name, err)
	}
	if n > 0 {
		return nil, &PoolInUseError{Pool: pool.Name, Count: n, Where: where}
	}
	return &datastore.Unchanged{C: c.store.IPAMBlocks(), NamePrefix: datastore.BlockNamePrefix(cidr), Since: since}, nil
}

// deleteUnusedPool deletes the pool of step s on its condition. A node
// may have taken an address from the pool (or claimed a block in it)
// since the planner checked: then the check runs again, and the delete
// is refused if the pool is in use now.
func (c *Client) deleteUnusedPool(ctx context.Context, col datastore.Collection, s step) error {
	u := s.unused
	for range poolWriteTries {
		err := col.DeleteIf(ctx, s.name, s.rev, *u)
		if !errors.Is(err, datastore.ErrStale) {
			return err
		}
		if err := backOff(ctx); err != nil {
			return err
		}
		if u, err = c.poolUnused(ctx, s.r.(*api.IPPool)); err != nil {
			return err
		}
	}
	return fmt.Errorf("%w: IPPool(%s): its blocks kept changing while it was being deleted; try again", datastore.ErrConflict, s.name)
}

// planner plans the steps of one request; it remembers what earlier
// resources of the request will do, so that two new pools of one request
// cannot overlap and a name cannot appear twice.
type planner struct {
	c     *Client
	force bool
	seen  map[string]bool
	// pools are the stored pools plus the ones this request creates;
	// read on first need.
	pools []*api.IPPool
	read  bool
	// nodes are the stored Nodes, by name, read on first need, with
	// the ones this request writes in their place.
	nodes     map[string]*api.Node
	readNodes bool
}

func (p *planner) plan(ctx context.Context, v verb, in api.Resource) (step, error) {
	key := api.Key(in)
	if p.seen[key] {
		return step{}, fmt.Errorf("%s is given more than once", key)
	}
	p.seen[key] = true
	kind, name := in.ResourceKind(), in.GetObjectMeta().Name
	if v == verbDelete {
		return p.planDelete(ctx, in)
	}
	r, err := clone(in)
	if err != nil {
		return step{}, err
	}
	r.SetDefaults()
	if err := r.Validate(); err != nil {
		return step{}, err
	}
	rv, err := parseRV(r)
	if err != nil {
		return step{}, err
	}
	col, _ := Collection(p.c.store, kind)
	kv, err := col.Get(ctx, name)
	found := err == nil
	if err != nil && !errors.Is(err, datastore.ErrNotFound) {
		return step{}, err
	}
	switch {
	case v == verbCreate && found:
		return step{}, exists(kind, name)
	case v == verbReplace && !found:
		return step{}, notFound(kind, name)
	}
	s := step{r: r, kind: kind, name: name}
	m := r.GetObjectMeta()
	if !found {
		// A create: calicoctl drops the resourceVersion for it, so that
		// a file saved from one cluster applies to another.
		if err := p.checkOverlap(ctx, r); err != nil {
			return step{}, err
		}
		if err := p.checkUnderlay(ctx, r); err != nil {
			return step{}, err
		}
		s.create = true
		m.ResourceVersion = ""
		m.UID = newUID()
		m.CreationTimestamp = api.NewTime(p.c.opts.Now())
	} else {
		old, err := FromKV(kind, kv)
		if err != nil {
			return step{}, err
		}
		if rv != 0 && rv != kv.Revision {
			return step{}, conflict(kind, name, rv, kv.Revision)
		}
		if err := validateUpdate(old, r); err != nil {
			return step{}, err
		}
		s.rev = kv.Revision
		om := old.GetObjectMeta()
		m.UID, m.CreationTimestamp = om.UID, om.CreationTimestamp
		// Status belongs to whoever reports it (the daemon for a Node);
		// an edited spec without one keeps it.
		if n, ok := r.(*api.Node); ok && n.Status == nil {
			n.Status = old.(*api.Node).Status
		}
	}
	if s.value, err = toStored(r); err != nil {
		return step{}, err
	}
	if n, ok := r.(*api.Node); ok {
		if p.nodes == nil {
			p.nodes = map[string]*api.Node{}
		}
		p.nodes[n.Name] = n
	}
	return s, nil
}

func validateUpdate(old, r api.Resource) error {
	if p, ok := r.(*api.IPPool); ok {
		return p.ValidateUpdate(old.(*api.IPPool))
	}
	return nil
}

// checkOverlap refuses a new IPPool whose CIDR overlaps another pool's,
// stored or created earlier in the same request.
func (p *planner) checkOverlap(ctx context.Context, r api.Resource) error {
	pool, ok := r.(*api.IPPool)
	if !ok {
		return nil
	}
	if !p.read {
		rs, _, err := p.c.List(ctx, api.KindIPPool)
		if err != nil {
			return err
		}
		for _, o := range rs {
			p.pools = append(p.pools, o.(*api.IPPool))
		}
		p.read = true
	}
	if err := overlapError(pool, p.pools); err != nil {
		return err
	}
	p.pools = append(p.pools, pool)
	return nil
}

// overlapError refuses pool if it overlaps one of others (itself, by
// name, excepted).
func overlapError(pool *api.IPPool, others []*api.IPPool) error {
	for _, o := range others {
		if o.Name != pool.Name && pool.Overlaps(o) {
			return pool.OverlapError(o)
		}
	}
	return nil
}

// checkUnderlay refuses a new IPPool whose CIDR overlaps a node's
// underlay subnet (its Node's spec.bgp.ipv4Address, stored or written
// earlier in the same request): the node would take pod addresses for
// hosts on its own link, and traffic to those hosts would never be NATed
// or leave the node. A pool's CIDR cannot change, so a create is the only
// write that needs the check.
func (p *planner) checkUnderlay(ctx context.Context, r api.Resource) error {
	pool, ok := r.(*api.IPPool)
	if !ok {
		return nil
	}
	cidr, err := pool.Prefix()
	if err != nil {
		return nil // Validate has refused it already
	}
	if !p.readNodes {
		rs, _, err := p.c.List(ctx, api.KindNode)
		if err != nil {
			return fmt.Errorf("check IPPool %s against the nodes' subnets: %w", pool.Name, err)
		}
		if p.nodes == nil {
			p.nodes = make(map[string]*api.Node, len(rs))
		}
		for _, o := range rs {
			// A Node this request writes replaces the stored one.
			if name := o.GetObjectMeta().Name; p.nodes[name] == nil {
				p.nodes[name] = o.(*api.Node)
			}
		}
		p.readNodes = true
	}
	names := make([]string, 0, len(p.nodes))
	for name := range p.nodes {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		n := p.nodes[name]
		if n.Spec.BGP == nil || n.Spec.BGP.IPv4Address == "" {
			continue
		}
		addr, err := netip.ParsePrefix(n.Spec.BGP.IPv4Address)
		if err != nil {
			continue // an invalid Node is not this pool's problem
		}
		if subnet := addr.Masked(); subnet.Overlaps(cidr) {
			return &api.ValidationError{Fields: []api.FieldError{{
				Field: "IPPool.Spec.CIDR", Value: pool.Spec.CIDR,
				Reason: fmt.Sprintf("IPPool(%s) CIDR overlaps with the underlay subnet %s of Node(%s) (spec.bgp.ipv4Address %s)",
					pool.Name, subnet, name, n.Spec.BGP.IPv4Address),
			}}}
		}
	}
	return nil
}

func (p *planner) planDelete(ctx context.Context, in api.Resource) (step, error) {
	kind, name := in.ResourceKind(), in.GetObjectMeta().Name
	if name == "" {
		return step{}, errors.New("metadata.name: required")
	}
	if kind == api.KindBGPConfiguration && name == api.BGPConfigurationGlobal {
		// As in Calico: every node reads it, and without it the mesh and
		// AS number would silently fall back to their defaults.
		return step{}, &OperationNotSupportedError{Operation: "Delete", Key: kind + "(" + name + ")",
			Reason: "the global BGP configuration cannot be deleted; change it with apply, replace or patch"}
	}
	rv, err := parseRV(in)
	if err != nil {
		return step{}, err
	}
	col, _ := Collection(p.c.store, kind)
	kv, err := col.Get(ctx, name)
	if err != nil {
		return step{}, storeErr(err, kind, name, 0)
	}
	if rv != 0 && rv != kv.Revision {
		return step{}, conflict(kind, name, rv, kv.Revision)
	}
	old, err := FromKV(kind, kv)
	if err != nil {
		return step{}, err
	}
	s := step{r: old, kind: kind, name: name, rev: kv.Revision}
	if pool, ok := old.(*api.IPPool); ok && !p.force && p.c.opts.PoolInUse != nil {
		if s.unused, err = p.c.poolUnused(ctx, pool); err != nil {
			return step{}, err
		}
	}
	return s, nil
}
