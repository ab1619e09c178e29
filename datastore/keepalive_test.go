package datastore

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"podnet/internal/nettest"
)

// TestKeepAliveSilentCut: when the connection to etcd goes silent, as
// through a partition that drops packets without a reset, a call in
// flight does not wait for TCP to give up (about 15 min): the client's
// pings go unanswered, it gives the connection up and the call goes
// over a new one, within keepAliveTime+keepAliveTimeout.
func TestKeepAliveSilentCut(t *testing.T) {
	port := nettest.FreeLoopbackAddr(t)
	e, err := StartEmbedded(EmbedConfig{Dir: t.TempDir(), UnsafeNoFsync: true, ListenClientURLs: []string{"http://" + port}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	var mu sync.Mutex
	var conns []*silentConn
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		sc := &silentConn{Conn: c, closed: make(chan struct{})}
		mu.Lock()
		conns = append(conns, sc)
		mu.Unlock()
		return sc, nil
	}
	s, err := Dial(Config{Endpoints: []string{"http://" + port}, Dialer: dial})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx := context.Background()
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	for _, c := range conns {
		c.silence()
	}
	mu.Unlock()
	start := time.Now()
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err = s.Ping(pctx)
	if took := time.Since(start); err != nil || took > keepAliveTime+keepAliveTimeout+5*time.Second {
		t.Fatalf("a call over a connection gone silent: %v after %v; want an answer over a new connection within %v",
			err, took.Round(time.Millisecond), keepAliveTime+keepAliveTimeout)
	}
}

// silentConn is a connection that, once silenced, drops what is written
// and delivers nothing, without an error: a partition that drops
// packets.
type silentConn struct {
	net.Conn
	mu       sync.Mutex
	silent   bool
	closed   chan struct{}
	closeOne sync.Once
}

func (c *silentConn) silence() {
	c.mu.Lock()
	c.silent = true
	c.mu.Unlock()
}

func (c *silentConn) isSilent() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.silent
}

func (c *silentConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.isSilent() {
		<-c.closed
		return 0, net.ErrClosed
	}
	return n, err
}

func (c *silentConn) Write(p []byte) (int, error) {
	if c.isSilent() {
		return len(p), nil
	}
	return c.Conn.Write(p)
}

func (c *silentConn) Close() error {
	c.closeOne.Do(func() { close(c.closed) })
	return c.Conn.Close()
}
