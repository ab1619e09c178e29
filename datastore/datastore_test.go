package datastore

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"
)

// StartTest starts an embedded etcd for a test and returns a Store on it;
// both are closed when the test ends.
func startTest(t *testing.T) *Store {
	t.Helper()
	e, err := StartEmbedded(EmbedConfig{Dir: t.TempDir(), UnsafeNoFsync: true})
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(context.Background(), Config{Endpoints: e.Endpoints()})
	if err != nil {
		e.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(); e.Close() })
	return s
}

func TestCollectionCAS(t *testing.T) {
	s := startTest(t)
	ctx := context.Background()
	c := s.IPAMBlocks()
	rev, err := c.Create(ctx, "10.0.0.0/26", []byte(`{"a":1}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Create(ctx, "10.0.0.0/26", []byte(`{}`)); !errors.Is(err, ErrExists) {
		t.Fatalf("second create: got %v, want ErrExists", err)
	}
	kv, err := c.Get(ctx, "10.0.0.0/26")
	if err != nil || kv.Revision != rev || string(kv.Value) != `{"a":1}` || kv.Name != "10.0.0.0/26" {
		t.Fatalf("get: got %+v %v, want rev %d", kv, err, rev)
	}
	rev2, err := c.Update(ctx, kv.Name, []byte(`{"a":2}`), rev)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Update(ctx, kv.Name, []byte(`{"a":3}`), rev); !errors.Is(err, ErrConflict) {
		t.Fatalf("stale update: got %v, want ErrConflict", err)
	}
	if err := c.Delete(ctx, kv.Name, rev); !errors.Is(err, ErrConflict) {
		t.Fatalf("stale delete: got %v, want ErrConflict", err)
	}
	if err := c.Delete(ctx, kv.Name, rev2); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(ctx, kv.Name); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get after delete: got %v, want ErrNotFound", err)
	}
	if _, err := c.Update(ctx, kv.Name, []byte(`{}`), rev2); !errors.Is(err, ErrNotFound) {
		t.Fatalf("update after delete: got %v, want ErrNotFound", err)
	}
}

// CreateIf creates only while no object of the collection changed after
// the given revision; other collections do not count.
func TestCreateIf(t *testing.T) {
	s := startTest(t)
	ctx := context.Background()
	pools, other := s.Resources("ippools"), s.Resources("ippoolsx")
	if _, err := pools.Create(ctx, "a", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	_, since, err := pools.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	// A key beside the collection's prefix ("ippoolsx/") is not one of it.
	if _, err := other.Create(ctx, "z", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	unchanged := func(since int64) Unchanged { return Unchanged{C: pools, Since: since} }
	if _, err := pools.CreateIf(ctx, "a", []byte(`{}`), unchanged(since)); !errors.Is(err, ErrExists) {
		t.Fatalf("create of a taken name: got %v, want ErrExists", err)
	}
	rev, err := pools.CreateIf(ctx, "b", []byte(`{}`), unchanged(since))
	if err != nil {
		t.Fatal(err)
	}
	// b changed the collection after since: a create checked against
	// since fails, one against b's revision succeeds.
	if _, err := pools.CreateIf(ctx, "c", []byte(`{}`), unchanged(since)); !errors.Is(err, ErrStale) {
		t.Fatalf("create after another one since the read: got %v, want ErrStale", err)
	}
	if _, err := pools.Get(ctx, "c"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the refused create wrote c: %v", err)
	}
	if _, err := pools.CreateIf(ctx, "c", []byte(`{}`), unchanged(rev)); err != nil {
		t.Fatal(err)
	}
}

// DeleteIf deletes only while the condition holds, and tells a stale
// condition (ErrStale) from a changed object (ErrConflict).
func TestDeleteIf(t *testing.T) {
	s := startTest(t)
	ctx := context.Background()
	pools, blocks := s.Resources("ippools"), s.IPAMBlocks()
	rev, err := pools.Create(ctx, "p", []byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	since, err := s.Revision(ctx)
	if err != nil || since < rev {
		t.Fatalf("Revision: %d, %v; want at least %d", since, err, rev)
	}
	inPool := Unchanged{C: blocks, NamePrefix: BlockNamePrefix(netip.MustParsePrefix("10.1.0.0/16")), Since: since}
	// A block elsewhere is no objection; one in the pool is.
	if _, err := blocks.Create(ctx, "10.10.0.0/26", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := blocks.Create(ctx, "10.1.0.0/26", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if err := pools.DeleteIf(ctx, "p", rev, inPool); !errors.Is(err, ErrStale) {
		t.Fatalf("delete with a block created since: got %v, want ErrStale", err)
	}
	if err := pools.DeleteIf(ctx, "p", rev+100, inPool); !errors.Is(err, ErrConflict) {
		t.Fatalf("delete of another revision: got %v, want ErrConflict", err)
	}
	now, _ := s.Revision(ctx)
	inPool.Since = now
	if err := pools.DeleteIf(ctx, "p", rev, inPool); err != nil {
		t.Fatal(err)
	}
	if err := pools.DeleteIf(ctx, "p", 0, inPool); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: got %v, want ErrNotFound", err)
	}
}

func TestBlockNamePrefix(t *testing.T) {
	for cidr, want := range map[string]string{
		"10.0.0.0/16": "10.0.", "10.0.0.0/17": "10.0.", "192.168.0.0/12": "192.", "192.168.5.0/24": "192.168.5.",
		"192.168.5.64/26": "192.168.5.", "10.0.0.0/8": "10.", "0.0.0.0/4": "",
	} {
		if got := BlockNamePrefix(netip.MustParsePrefix(cidr)); got != want {
			t.Errorf("BlockNamePrefix(%s) = %q, want %q", cidr, got, want)
		}
	}
}

func TestAffinityNamesAndWatch(t *testing.T) {
	s := startTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a := s.IPAMAffinities()
	ch := a.Watch(ctx, 0)
	for _, n := range []string{"n1/10.0.0.0/26", "n1/10.0.0.64/26", "n2/10.0.0.128/26"} {
		if _, err := a.Create(ctx, n, []byte(`{"state":"confirmed"}`)); err != nil {
			t.Fatal(err)
		}
	}
	kvs, _, err := a.List(ctx, "n1/")
	if err != nil {
		t.Fatal(err)
	}
	if len(kvs) != 2 || kvs[0].Name != "n1/10.0.0.0/26" || kvs[1].Name != "n1/10.0.0.64/26" {
		t.Fatalf("list n1: got %+v", kvs)
	}
	seen := 0
	for seen < 3 {
		select {
		case evs := <-ch:
			seen += len(evs)
		case <-ctx.Done():
			t.Fatalf("saw %d watch events, want 3", seen)
		}
	}
}

func TestOpenUnreachable(t *testing.T) {
	_, err := Open(context.Background(), Config{Endpoints: []string{"unix:///nonexistent/etcd.sock"}, DialTimeout: 500 * time.Millisecond})
	if err == nil {
		t.Fatal("Open on a missing socket succeeded")
	}
}
