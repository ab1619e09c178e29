package datastore

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"podnet/internal/nettest"
)

// TestUnreachable: an etcd that stops answering gives errors Unreachable
// recognises, through the wrapping callers add; an etcd that answers
// "no" does not.
func TestUnreachable(t *testing.T) {
	port := nettest.FreeLoopbackAddr(t)
	e, err := StartEmbedded(EmbedConfig{Dir: t.TempDir(), UnsafeNoFsync: true, ListenClientURLs: []string{"http://" + port}})
	if err != nil {
		t.Fatal(err)
	}
	s, err := Dial(Config{Endpoints: []string{"http://" + port}})
	if err != nil {
		e.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx := context.Background()

	_, err = s.Resources("ippools").Get(ctx, "nothing")
	if !errors.Is(err, ErrNotFound) || Unreachable(err) {
		t.Fatalf("a missing key: %v, Unreachable %v; want ErrNotFound, not unreachable", err, Unreachable(err))
	}
	if Unreachable(ErrStale) || Unreachable(nil) || Unreachable(errors.New("refused")) {
		t.Fatal("an answer counted as unreachable")
	}

	e.Close()
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	err = s.Ping(cctx)
	if err == nil {
		t.Fatal("Ping answered with etcd stopped")
	}
	wrapped := fmt.Errorf("pod p: assign address: %w", err)
	if !Unreachable(wrapped) {
		t.Fatalf("etcd stopped: %v; Unreachable says no", wrapped)
	}
}
