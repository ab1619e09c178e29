package resources

import (
	"context"
	"errors"
	"testing"

	"podnet/api"
	"podnet/ipam"
)

// TestPoolHooks deletes a pool through the hooks backed by real IPAM: in
// use, it is refused with the nodes holding addresses; empty, it goes and
// takes its blocks' affinities with it.
func TestPoolHooks(t *testing.T) {
	ctx := context.Background()
	s := startStore(t)
	m := ipam.New(s)
	c := New(s, PoolHooks(m))
	p := newPool("spare", "10.20.0.0/16")
	if _, err := c.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	rs, _, err := c.List(ctx, api.KindIPPool)
	if err != nil {
		t.Fatal(err)
	}
	pools, err := ipam.PoolsFromResources(rs)
	if err != nil {
		t.Fatal(err)
	}
	for i, nd := range []string{"worker1", "worker2", "worker1"} {
		if _, err := m.AutoAssign(ctx, ipam.AssignArgs{Node: nd, HandleID: "h" + string(rune('0'+i)), Pools: pools}); err != nil {
			t.Fatal(err)
		}
	}
	_, err = c.Delete(ctx, api.KindIPPool, "spare", DeleteOptions{})
	var pe *PoolInUseError
	if !errors.As(err, &pe) || pe.Count != 3 || pe.Where != "worker1: 2, worker2: 1" {
		t.Fatalf("delete in use: got %v (%+v), want PoolInUseError 3 at worker1: 2, worker2: 1", err, pe)
	}
	for i := range 3 {
		if err := m.ReleaseByHandle(ctx, "h"+string(rune('0'+i))); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Delete(ctx, api.KindIPPool, "spare", DeleteOptions{}); err != nil {
		t.Fatalf("delete empty pool: %v", err)
	}
	for _, nd := range []string{"worker1", "worker2"} {
		if blocks, err := m.NodeBlocks(ctx, nd); err != nil || len(blocks) != 0 {
			t.Errorf("%s keeps blocks %v (%v) after its pool was deleted", nd, blocks, err)
		}
	}
}

func TestFormatByNode(t *testing.T) {
	if got, want := formatByNode(map[string]int{"worker2": 2, "": 1, "worker1": 3}), "(no node): 1, worker1: 3, worker2: 2"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// A node takes an address from a pool just after the delete's check
// found it empty: the delete is conditional on the pool's blocks being
// unchanged since the check, so it checks again and refuses, and the pool
// stays.
func TestPoolDeleteRacesAllocation(t *testing.T) {
	ctx := context.Background()
	s := startStore(t)
	m := ipam.New(s)
	hooks := PoolHooks(m)
	checks := 0
	var pools []ipam.Pool
	inUse := hooks.PoolInUse
	hooks.PoolInUse = func(ctx context.Context, p api.IPPool) (int, string, error) {
		n, where, err := inUse(ctx, p)
		checks++
		if checks == 1 {
			// The node's pod add lands between the check and the delete.
			if _, err := m.AutoAssign(ctx, ipam.AssignArgs{Node: "worker1", HandleID: "late", Pools: pools}); err != nil {
				t.Fatal(err)
			}
		}
		return n, where, err
	}
	c := New(s, hooks)
	if _, err := c.Create(ctx, newPool("spare", "10.20.0.0/16")); err != nil {
		t.Fatal(err)
	}
	rs, _, err := c.List(ctx, api.KindIPPool)
	if err != nil {
		t.Fatal(err)
	}
	if pools, err = ipam.PoolsFromResources(rs); err != nil {
		t.Fatal(err)
	}
	_, err = c.Delete(ctx, api.KindIPPool, "spare", DeleteOptions{})
	var pe *PoolInUseError
	if !errors.As(err, &pe) || pe.Count != 1 || checks != 2 {
		t.Fatalf("delete racing an allocation: got %v after %d checks, want PoolInUseError for 1 address after 2", err, checks)
	}
	if _, err := c.Get(ctx, api.KindIPPool, "spare"); err != nil {
		t.Fatalf("the pool is gone: %v", err)
	}
}

// ipam configure (ipam.SetConfig) changes the settings and keeps what the
// resource was written with: apiVersion, labels, uid, creation time.
func TestIPAMSetConfigKeepsMetadata(t *testing.T) {
	ctx := context.Background()
	s := startStore(t)
	c := New(s, Options{})
	cfg := api.NewIPAMConfiguration("default")
	cfg.APIVersion = api.CalicoAPIVersion
	cfg.Labels = map[string]string{"team": "net"}
	before, err := c.Create(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := ipam.New(s).SetConfig(ctx, ipam.Config{StrictAffinity: true, AutoAllocateBlocks: true, MaxBlocksPerHost: 3}); err != nil {
		t.Fatal(err)
	}
	r, err := c.Get(ctx, api.KindIPAMConfiguration, "default")
	if err != nil {
		t.Fatal(err)
	}
	got, was := r.(*api.IPAMConfiguration), before.GetObjectMeta()
	if !got.Spec.StrictAffinity || got.Spec.MaxBlocksPerHost != 3 {
		t.Errorf("settings: got %+v", got.Spec)
	}
	if got.APIVersion != api.CalicoAPIVersion || got.Labels["team"] != "net" || got.UID != was.UID || !got.CreationTimestamp.Equal(was.CreationTimestamp.Time) {
		t.Errorf("after SetConfig: apiVersion %q, labels %v, uid %q, created %v; want %q, team=net, %q, %v",
			got.APIVersion, got.Labels, got.UID, got.CreationTimestamp, api.CalicoAPIVersion, was.UID, was.CreationTimestamp)
	}
}
