package datastore

import (
	"context"
	"errors"
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

// CreateIfUnchanged creates only while no object of the collection
// changed after the given revision; other collections do not count.
func TestCreateIfUnchanged(t *testing.T) {
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
	if _, err := pools.CreateIfUnchanged(ctx, "a", []byte(`{}`), since); !errors.Is(err, ErrExists) {
		t.Fatalf("create of a taken name: got %v, want ErrExists", err)
	}
	rev, err := pools.CreateIfUnchanged(ctx, "b", []byte(`{}`), since)
	if err != nil {
		t.Fatal(err)
	}
	// b changed the collection after since: a create checked against
	// since fails, one against b's revision succeeds.
	if _, err := pools.CreateIfUnchanged(ctx, "c", []byte(`{}`), since); !errors.Is(err, ErrConflict) {
		t.Fatalf("create after another one since the read: got %v, want ErrConflict", err)
	}
	if _, err := pools.Get(ctx, "c"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the refused create wrote c: %v", err)
	}
	if _, err := pools.CreateIfUnchanged(ctx, "c", []byte(`{}`), rev); err != nil {
		t.Fatal(err)
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
