package resources

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"podnet/api"
	"podnet/datastore"
)

// startStore starts an embedded etcd for a test and returns a Store on
// it; both are closed when the test ends.
func startStore(t *testing.T) *datastore.Store {
	t.Helper()
	e, err := datastore.StartEmbedded(datastore.EmbedConfig{Dir: t.TempDir(), UnsafeNoFsync: true})
	if err != nil {
		t.Fatal(err)
	}
	s, err := datastore.Open(context.Background(), datastore.Config{Endpoints: e.Endpoints()})
	if err != nil {
		e.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(); e.Close() })
	return s
}

func newPool(name, cidr string) *api.IPPool {
	p := api.NewIPPool(name)
	p.Spec.CIDR = cidr
	return p
}

func wantErr(t *testing.T, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %q", want)
	}
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("got error %q, want it to contain %q", err, want)
	}
}

func TestPoolLifecycle(t *testing.T) {
	ctx := context.Background()
	c := New(startStore(t), Options{})
	created, err := c.Create(ctx, api.DefaultIPPool())
	if err != nil {
		t.Fatal(err)
	}
	m := created.GetObjectMeta()
	if m.ResourceVersion == "" || m.UID == "" || m.CreationTimestamp.IsZero() {
		t.Fatalf("created metadata: got %+v", m)
	}
	if _, err := c.Create(ctx, api.DefaultIPPool()); !errors.Is(err, datastore.ErrExists) {
		t.Fatalf("second create: got %v, want ErrExists", err)
	} else {
		wantErr(t, err, "resource already exists: IPPool(default-ipv4-ippool)")
	}

	// Defaults and validation before writing.
	p, err := c.Create(ctx, newPool("new-pool", "10.10.0.0/16"))
	if err != nil {
		t.Fatal(err)
	}
	if s := p.(*api.IPPool).Spec; s.BlockSize != 26 || s.IPIPMode != "Never" || s.NodeSelector != "all()" || s.NATOutgoing {
		t.Fatalf("defaults: got %+v", s)
	}
	_, err = c.Create(ctx, newPool("bad", "10.0.0.1/16"))
	wantErr(t, err, "error with field IPPool.Spec.CIDR = '10.0.0.1/16' (IPPool CIDR is not strictly masked)")

	// Overlap refused on create and on apply-create, not on update.
	_, err = c.Create(ctx, newPool("overlap", "10.10.128.0/17"))
	wantErr(t, err, "error with field IPPool.Spec.CIDR = '10.10.128.0/17' (IPPool(overlap) CIDR overlaps with IPPool(new-pool) CIDR 10.10.0.0/16)")
	_, err = c.Apply(ctx, newPool("overlap", "192.168.5.0/24"))
	wantErr(t, err, "IPPool(overlap) CIDR overlaps with IPPool(default-ipv4-ippool) CIDR 192.168.0.0/16")

	// Update: immutables, resourceVersion, uid and timestamp kept.
	upd := newPool("new-pool", "10.10.0.0/16")
	upd.Spec.Disabled = true
	out, err := c.Apply(ctx, upd)
	if err != nil {
		t.Fatal(err)
	}
	om := out.GetObjectMeta()
	if om.UID != p.GetObjectMeta().UID || !om.CreationTimestamp.Equal(p.GetObjectMeta().CreationTimestamp.Time) || om.ResourceVersion == p.GetObjectMeta().ResourceVersion {
		t.Fatalf("update metadata: got %+v, created %+v", om, p.GetObjectMeta())
	}
	if upd.ResourceVersion != "" || upd.Spec.BlockSize != 0 {
		t.Fatal("Apply changed the caller's resource")
	}
	stale := newPool("new-pool", "10.10.0.0/16")
	stale.ResourceVersion = p.GetObjectMeta().ResourceVersion
	_, err = c.Replace(ctx, stale)
	if !errors.Is(err, datastore.ErrConflict) {
		t.Fatalf("stale replace: got %v, want ErrConflict", err)
	}
	wantErr(t, err, "update conflict: IPPool(new-pool)")
	moved := newPool("new-pool", "10.11.0.0/16")
	_, err = c.Replace(ctx, moved)
	wantErr(t, err, "error with field IPPool.Spec.CIDR = '10.11.0.0/16' (IPPool CIDR cannot be modified)")
	bs := newPool("new-pool", "10.10.0.0/16")
	bs.Spec.BlockSize = 28
	_, err = c.Replace(ctx, bs)
	wantErr(t, err, "(IPPool BlockSize cannot be modified)")
	_, err = c.Replace(ctx, newPool("missing", "10.12.0.0/16"))
	if !errors.Is(err, datastore.ErrNotFound) {
		t.Fatalf("replace missing: got %v", err)
	}
	wantErr(t, err, "resource does not exist: IPPool(missing)")

	// Get, List.
	g, err := c.Get(ctx, "pools", "new-pool")
	if err != nil || !g.(*api.IPPool).Spec.Disabled || g.GetObjectMeta().ResourceVersion != om.ResourceVersion {
		t.Fatalf("get: got %+v, %v", g, err)
	}
	_, err = c.Get(ctx, "ippool", "nope")
	wantErr(t, err, "resource does not exist: IPPool(nope)")
	rs, rev, err := c.List(ctx, "IPPool")
	if err != nil || len(rs) != 2 || rs[0].GetObjectMeta().Name != "default-ipv4-ippool" || rev == "" {
		t.Fatalf("list: got %d %q %v", len(rs), rev, err)
	}

	// Delete with a stale resourceVersion, then for real.
	_, err = c.Delete(ctx, "ippool", "new-pool", DeleteOptions{ResourceVersion: p.GetObjectMeta().ResourceVersion})
	if !errors.Is(err, datastore.ErrConflict) {
		t.Fatalf("stale delete: got %v", err)
	}
	if _, err := c.Delete(ctx, "ippool", "new-pool", DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err = c.Delete(ctx, "ippool", "new-pool", DeleteOptions{})
	wantErr(t, err, "resource does not exist: IPPool(new-pool)")
}

func TestPoolInUse(t *testing.T) {
	ctx := context.Background()
	var asked []string
	c := New(startStore(t), Options{PoolInUse: func(ctx context.Context, p api.IPPool) (int, string, error) {
		asked = append(asked, p.Name+" "+p.Spec.CIDR)
		if p.Name == "default-ipv4-ippool" {
			return 5, "worker1: 3, worker2: 2", nil
		}
		return 0, "", nil
	}})
	if _, err := c.CreateAll(ctx, []api.Resource{api.DefaultIPPool(), newPool("spare", "10.20.0.0/16")}); err != nil {
		t.Fatal(err)
	}
	_, err := c.Delete(ctx, "ippool", "default-ipv4-ippool", DeleteOptions{})
	wantErr(t, err, "IPPool default-ipv4-ippool still has 5 allocated addresses (worker1: 3, worker2: 2); release them or delete with --force")
	var pe *PoolInUseError
	if !errors.As(err, &pe) || pe.Count != 5 {
		t.Fatalf("got %T %v", err, err)
	}
	// A batch with one pool in use deletes nothing.
	_, err = c.DeleteAll(ctx, []api.Resource{newPool("spare", ""), newPool("default-ipv4-ippool", "")}, false)
	wantErr(t, err, "failed to delete any 'IPPool' resources: [IPPool(default-ipv4-ippool): IPPool default-ipv4-ippool still has 5")
	if _, err := c.Get(ctx, "ippool", "spare"); err != nil {
		t.Fatalf("spare was deleted: %v", err)
	}
	if _, err := c.Delete(ctx, "ippool", "default-ipv4-ippool", DeleteOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	if want := "default-ipv4-ippool 192.168.0.0/16"; len(asked) != 3 || asked[0] != want {
		t.Fatalf("hook calls: got %v", asked)
	}
}

func TestBatchAllOrNothing(t *testing.T) {
	ctx := context.Background()
	s := startStore(t)
	c := New(s, Options{})
	bad := newPool("bad", "10.30.0.0/33")
	_, err := c.ApplyAll(ctx, []api.Resource{newPool("a", "10.31.0.0/16"), bad, newPool("b", "10.32.0.0/16")})
	var be *BatchError
	if !errors.As(err, &be) || len(be.Done) != 0 {
		t.Fatalf("got %v", err)
	}
	wantErr(t, err, "failed to apply any 'IPPool' resources: [IPPool(bad): error with field IPPool.Spec.CIDR = '10.30.0.0/33' (IPPool CIDR must be a valid subnet)]")
	if rs, _, _ := c.List(ctx, "ippool"); len(rs) != 0 {
		t.Fatalf("wrote %d pools", len(rs))
	}
	// Two new pools of one request may not overlap each other.
	_, err = c.CreateAll(ctx, []api.Resource{newPool("a", "10.31.0.0/16"), newPool("b", "10.31.0.0/24")})
	wantErr(t, err, "IPPool(b) CIDR overlaps with IPPool(a) CIDR 10.31.0.0/16")
	_, err = c.CreateAll(ctx, []api.Resource{newPool("a", "10.31.0.0/16"), newPool("a", "10.32.0.0/16")})
	wantErr(t, err, "IPPool(a) is given more than once")

	// A datastore failure part-way: the first write succeeds, the second
	// conflicts because someone else created it between plan and write.
	// Simulate with a store-level create right before the writes by
	// using a Node whose name another writer takes.
	col, _ := Collection(s, api.KindNode)
	n1, n2 := api.NewNode("n1"), api.NewNode("n2")
	calls := 0
	c2 := New(s, Options{Now: func() time.Time {
		// The clock is read while planning each create, after its Get:
		// on n2's, create n2 behind the client's back.
		if calls++; calls == 2 {
			col.Create(ctx, "n2", []byte(`{}`))
		}
		return time.Now()
	}})
	_, err = c2.CreateAll(ctx, []api.Resource{n1, n2})
	if !errors.As(err, &be) || len(be.Done) != 1 || be.Done[0].GetObjectMeta().Name != "n1" {
		t.Fatalf("got %v", err)
	}
	wantErr(t, err, "Partial success: created the first 1 out of 2 'Node' resources:\nHit error: Node(n2): resource already exists: Node(n2)")
}

func TestPatchAndLabel(t *testing.T) {
	ctx := context.Background()
	c := New(startStore(t), Options{})
	if _, err := c.Create(ctx, api.DefaultIPPool()); err != nil {
		t.Fatal(err)
	}
	r, err := c.Patch(ctx, "ippool", "default-ipv4-ippool", []byte(`{"spec":{"disabled":true}}`))
	if err != nil {
		t.Fatal(err)
	}
	if p := r.(*api.IPPool); !p.Spec.Disabled || !p.Spec.NATOutgoing || p.Spec.CIDR != "192.168.0.0/16" {
		t.Fatalf("patched: got %+v", p.Spec)
	}
	tests := []struct{ name, patch, want string }{
		{"unknown field", `{"spec":{"disable":true}}`, "field in document is not recognized or is in the wrong location: spec.disable"},
		{"immutable", `{"spec":{"cidr":"10.0.0.0/16"}}`, "IPPool CIDR cannot be modified"},
		{"invalid", `{"spec":{"ipipMode":"always"}}`, "IPPool.Spec.IPIPMode = 'always' (must be one of Never, Always, CrossSubnet)"},
		{"rename", `{"metadata":{"name":"x"}}`, "metadata.name cannot be patched"},
		{"stale", `{"metadata":{"resourceVersion":"1"},"spec":{"natOutgoing":false}}`, "update conflict: IPPool(default-ipv4-ippool)"},
		{"not json", `{spec`, "patch is not valid JSON"},
		{"not object", `[1]`, "patch must be a JSON object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.Patch(ctx, "ippool", "default-ipv4-ippool", []byte(tt.patch))
			wantErr(t, err, tt.want)
		})
	}
	_, err = c.Patch(ctx, "ippool", "missing", []byte(`{}`))
	wantErr(t, err, "resource does not exist: IPPool(missing)")

	if _, err := c.Label(ctx, "pool", "default-ipv4-ippool", "zone", "a", LabelOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err = c.Label(ctx, "pool", "default-ipv4-ippool", "zone", "b", LabelOptions{})
	wantErr(t, err, "key zone is already present. Please use '--overwrite' to set a new value")
	r, err = c.Label(ctx, "pool", "default-ipv4-ippool", "zone", "b", LabelOptions{Overwrite: true})
	if err != nil || r.GetObjectMeta().Labels["zone"] != "b" {
		t.Fatalf("overwrite: got %v %v", r, err)
	}
	r, err = c.Label(ctx, "pool", "default-ipv4-ippool", "zone", "", LabelOptions{Remove: true})
	if err != nil || len(r.GetObjectMeta().Labels) != 0 {
		t.Fatalf("remove: got %v %v", r, err)
	}
	_, err = c.Label(ctx, "pool", "default-ipv4-ippool", "zone", "", LabelOptions{Remove: true})
	wantErr(t, err, "label key zone is not found")
	_, err = c.Label(ctx, "pool", "default-ipv4-ippool", "bad key", "x", LabelOptions{})
	wantErr(t, err, `invalid label key "bad key"`)
}

func TestNodeStatusKept(t *testing.T) {
	ctx := context.Background()
	c := New(startStore(t), Options{})
	n := api.NewNode("worker1")
	n.Spec.BGP = &api.NodeBGPSpec{IPv4Address: "10.0.0.11/24"}
	n.Status = &api.NodeStatus{PodMTU: 1480}
	if _, err := c.Create(ctx, n); err != nil {
		t.Fatal(err)
	}
	r, err := c.Patch(ctx, "node", "worker1", []byte(`{"spec":{"bgp":{"routeReflectorClusterID":"244.0.0.1"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	got := r.(*api.Node)
	if got.Spec.BGP.RouteReflectorClusterID != "244.0.0.1" || got.Spec.BGP.IPv4Address != "10.0.0.11/24" || got.Status == nil || got.Status.PodMTU != 1480 {
		t.Fatalf("got %+v %+v", got.Spec.BGP, got.Status)
	}
	edited := api.NewNode("worker1")
	edited.Spec.BGP = &api.NodeBGPSpec{IPv4Address: "10.0.0.11/24"}
	r, err = c.Apply(ctx, edited)
	if err != nil || r.(*api.Node).Status == nil || r.(*api.Node).Status.PodMTU != 1480 {
		t.Fatalf("apply without status: got %+v, %v", r, err)
	}
}

func TestIPAMConfigurationKey(t *testing.T) {
	ctx := context.Background()
	s := startStore(t)
	c := New(s, Options{})
	cfg := api.NewIPAMConfiguration("default")
	cfg.Spec.StrictAffinity = true
	if _, err := c.Create(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	kv, err := s.IPAMConfig().Get(ctx, "default")
	if err != nil {
		t.Fatal(err)
	}
	r, err := FromKV(api.KindIPAMConfiguration, kv)
	if err != nil || !r.(*api.IPAMConfiguration).Spec.StrictAffinity || !r.(*api.IPAMConfiguration).AutoAllocate() {
		t.Fatalf("got %+v %v", r, err)
	}
	if !strings.Contains(string(kv.Value), `"strict_affinity":true,"auto_allocate_blocks":true,"maxBlocksPerHost":0`) {
		t.Fatalf("stored form: got %s", kv.Value)
	}
	if m := r.GetObjectMeta(); m.UID == "" || m.CreationTimestamp.IsZero() {
		t.Fatalf("stored metadata: got %+v", m)
	}
	// As the ipam package writes it.
	if _, err := s.IPAMConfig().Update(ctx, "default", []byte(`{"strict_affinity":true,"auto_allocate_blocks":false,"maxBlocksPerHost":4}`), kv.Revision); err != nil {
		t.Fatal(err)
	}
	r, err = c.Get(ctx, "ipamconfig", "default")
	if got := r.(*api.IPAMConfiguration); err != nil || !got.Spec.StrictAffinity || got.AutoAllocate() || got.Spec.MaxBlocksPerHost != 4 || got.Name != "default" {
		t.Fatalf("ipam-written config: got %+v %v", r, err)
	}
	_, err = c.Create(ctx, api.NewIPAMConfiguration("other"))
	wantErr(t, err, `with a name other than "default"`)
}

// TestCalicoDocuments: what was written as projectcalico.org/v3 is read
// back as such (get -o yaml goes back to calicoctl unchanged), patching
// keeps it, and Calico's IPAMConfiguration sample is accepted.
func TestCalicoDocuments(t *testing.T) {
	ctx := context.Background()
	c := New(startStore(t), Options{})
	docs := `apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: west}
spec: {cidr: 10.20.0.0/16, nodeSelector: "zone == 'west' || !has(zone)"}
---
apiVersion: projectcalico.org/v3
kind: IPAMConfiguration
metadata: {name: default}
spec: {strictAffinity: false, maxBlocksPerHost: 4}
---
apiVersion: podnet.io/v1
kind: BGPPeer
metadata: {name: rr}
spec: {nodeSelector: "!has(routeReflector)", peerSelector: has(routeReflector)}
`
	rs, err := api.Decode(strings.NewReader(docs))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ApplyAll(ctx, rs); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ kind, name, api string }{
		{api.KindIPPool, "west", api.CalicoAPIVersion},
		{api.KindIPAMConfiguration, "default", api.CalicoAPIVersion},
		{api.KindBGPPeer, "rr", api.APIVersion},
	} {
		r, err := c.Get(ctx, tt.kind, tt.name)
		if err != nil {
			t.Fatal(err)
		}
		if got := r.GetTypeMeta().APIVersion; got != tt.api {
			t.Errorf("%s(%s): apiVersion %s, want %s", tt.kind, tt.name, got, tt.api)
		}
	}
	cfg, _ := c.Get(ctx, api.KindIPAMConfiguration, "default")
	if s := cfg.(*api.IPAMConfiguration).Spec; s.StrictAffinity || s.MaxBlocksPerHost != 4 {
		t.Fatalf("IPAMConfiguration: got %+v", s)
	}
	r, err := c.Patch(ctx, "ippool", "west", []byte(`{"spec":{"disabled":true}}`))
	if err != nil {
		t.Fatal(err)
	}
	if got := r.GetTypeMeta().APIVersion; got != api.CalicoAPIVersion {
		t.Fatalf("patched: apiVersion %s", got)
	}
	_, err = c.Patch(ctx, "ippool", "west", []byte(`{"apiVersion":"podnet.io/v1"}`))
	wantErr(t, err, "apiVersion and kind cannot be patched")
	var b strings.Builder
	if err := api.Encode(&b, []api.Resource{r}, api.FormatYAML); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(b.String(), "apiVersion: projectcalico.org/v3\nkind: IPPool\n") {
		t.Fatalf("get -o yaml: got\n%s", b.String())
	}
}

// TestDefaultBGPConfigurationDelete: as in Calico, the global BGP
// configuration cannot be deleted; a per-node one can.
func TestDefaultBGPConfigurationDelete(t *testing.T) {
	ctx := context.Background()
	c := New(startStore(t), Options{})
	for _, name := range []string{"default", "node.worker1"} {
		if _, err := c.Create(ctx, api.NewBGPConfiguration(name)); err != nil {
			t.Fatal(err)
		}
	}
	_, err := c.Delete(ctx, "bgpconfig", "default", DeleteOptions{Force: true})
	wantErr(t, err, "operation Delete is not supported on BGPConfiguration(default): the global BGP configuration cannot be deleted; change it with apply, replace or patch")
	var ons *OperationNotSupportedError
	if !errors.As(err, &ons) {
		t.Fatalf("got %T, want *OperationNotSupportedError", err)
	}
	if _, err := c.Get(ctx, "bgpconfig", "default"); err != nil {
		t.Fatalf("default is gone: %v", err)
	}
	if _, err := c.Delete(ctx, "bgpconfig", "node.worker1", DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
}

// Clients creating overlapping pools at the same moment: each create
// checks the others when it plans and again in its write, and the write
// is conditional on no pool having changed in between, so exactly one
// of each round succeeds and the others are refused with the overlap.
func TestConcurrentOverlappingPools(t *testing.T) {
	ctx := context.Background()
	store := startStore(t)
	const racers = 6
	clients := make([]*Client, racers)
	for i := range clients {
		clients[i] = New(store, Options{})
	}
	for round := range 10 {
		start := make(chan struct{})
		errs := make(chan error, racers)
		for i, c := range clients {
			// 10.<round>.0.0/16 twice and parts of it: all hold 10.<round>.0.0.
			cidr := []string{"10.%d.0.0/16", "10.%d.0.0/17", "10.%d.0.0/18", "10.%d.0.0/19", "10.%d.0.0/20", "10.%d.0.0/16"}[i]
			p := newPool(fmt.Sprintf("r%d-%d", round, i), fmt.Sprintf(cidr, round))
			go func() {
				<-start
				_, err := c.Create(ctx, p)
				errs <- err
			}()
		}
		close(start)
		created := 0
		for range racers {
			switch err := <-errs; {
			case err == nil:
				created++
			case !strings.Contains(err.Error(), "overlaps with IPPool"):
				t.Errorf("round %d: a losing create failed with %v, want the overlap", round, err)
			}
		}
		if created != 1 {
			rs, _, _ := clients[0].List(ctx, api.KindIPPool)
			var got []string
			for _, r := range rs {
				got = append(got, r.GetObjectMeta().Name+" "+r.(*api.IPPool).Spec.CIDR)
			}
			t.Fatalf("round %d: %d of %d overlapping creates succeeded, want 1; pools %v", round, created, racers, got)
		}
	}
}

// A pool deleted whose blocks could not be released is deleted: a batch
// that stops there counts it as done, so the message is a partial
// success, not "failed to delete any".
func TestBatchDeleteCountsDeletedPool(t *testing.T) {
	ctx := context.Background()
	c := New(startStore(t), Options{PoolDeleted: func(context.Context, api.IPPool) error { return errors.New("etcd went away") }})
	for _, p := range []*api.IPPool{newPool("a", "10.1.0.0/16"), newPool("b", "10.2.0.0/16")} {
		if _, err := c.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	_, err := c.DeleteAll(ctx, []api.Resource{newPool("a", ""), newPool("b", "")}, false)
	var be *BatchError
	if !errors.As(err, &be) || len(be.Done) != 1 || be.Done[0].GetObjectMeta().Name != "a" {
		t.Fatalf("got %v (%+v), want a BatchError with pool a done", err, be)
	}
	wantErr(t, err, "Partial success")
}
