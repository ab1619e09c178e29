package ipam

import (
	"context"
	"net/netip"
	"testing"

	"podnet/datastore"
)

// startEtcd starts an embedded etcd for a test, without fsync unless
// fsync is set; it is closed when the test ends (after the stores opened
// on it by openStore, which register their cleanup later).
func startEtcd(tb testing.TB, fsync bool) *datastore.Embedded {
	tb.Helper()
	e, err := datastore.StartEmbedded(datastore.EmbedConfig{Dir: tb.TempDir(), UnsafeNoFsync: !fsync})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(e.Close)
	return e
}

// openStore opens a client of e, closed when the test ends.
func openStore(tb testing.TB, e *datastore.Embedded) *datastore.Store {
	tb.Helper()
	s, err := datastore.Open(context.Background(), datastore.Config{Endpoints: e.Endpoints()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// startTest is one etcd and one IPAM on it.
func startTest(t *testing.T) (*IPAM, *datastore.Embedded) {
	t.Helper()
	e := startEtcd(t, false)
	return New(openStore(t, e)), e
}

func pool(name, cidr string, blockSize int) Pool {
	return Pool{Name: name, CIDR: netip.MustParsePrefix(cidr), BlockSize: blockSize}
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
