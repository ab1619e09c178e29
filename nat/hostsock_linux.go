package nat

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"podnet/internal/netnsutil"
)

// errPortsExhausted means every port of the configured range was taken.
var errPortsExhausted = errors.New("no free local port in the NAT port range")

// sockets opens host sockets in the node's network namespace.
//
// setns(2) switches one thread, and a socket belongs to the namespace of
// the thread that created it, whatever thread uses it later. So one
// goroutine locked to a thread inside the namespace runs only the socket(2)
// calls (and the few /proc/sys accesses that are per namespace); bind,
// connect and I/O happen on ordinary goroutines. That costs one channel
// round trip per flow instead of two setns calls and a locked thread per
// dial, and dials that wait on the network never pin a thread.
type sockets struct {
	reqs chan func()
	done chan struct{}
	wg   sync.WaitGroup
}

// newSockets starts the namespace thread for nsPath ("" = the caller's
// namespace, where functions run on the calling goroutine).
func newSockets(nsPath string) (*sockets, error) {
	s := &sockets{done: make(chan struct{})}
	if nsPath == "" {
		return s, nil
	}
	s.reqs = make(chan func())
	ready := make(chan error, 1)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		err := netnsutil.Do(nsPath, func() error {
			ready <- nil
			s.routineNamespaceThread()
			return nil
		})
		select {
		case ready <- err:
		default:
		}
	}()
	if err := <-ready; err != nil {
		s.wg.Wait()
		return nil, fmt.Errorf("start socket thread in %s: %w", nsPath, err)
	}
	return s, nil
}

// routineNamespaceThread runs requests on the namespace thread. It is
// started by newSockets and exits when close closes s.done.
func (s *sockets) routineNamespaceThread() {
	for {
		select {
		case fn := <-s.reqs:
			fn()
		case <-s.done:
			return
		}
	}
}

// do runs fn in the namespace and waits for it.
func (s *sockets) do(fn func()) error {
	if s.reqs == nil {
		fn()
		return nil
	}
	ran := make(chan struct{})
	select {
	case s.reqs <- func() { fn(); close(ran) }:
		<-ran
		return nil
	case <-s.done:
		return net.ErrClosed
	}
}

// socket returns a non-blocking close-on-exec IPv4 socket of typ and proto
// created in the namespace.
func (s *sockets) socket(typ, proto int) (int, error) {
	fd, err := -1, error(nil)
	if derr := s.do(func() {
		fd, err = unix.Socket(unix.AF_INET, typ|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, proto)
	}); derr != nil {
		return -1, derr
	}
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	return fd, nil
}

// readSysctl reads a file under /proc/sys from the namespace.
func (s *sockets) readSysctl(name string) (string, error) {
	var b []byte
	var err error
	if derr := s.do(func() { b, err = os.ReadFile("/proc/sys/" + name) }); derr != nil {
		return "", derr
	}
	return strings.TrimSpace(string(b)), err
}

// writeSysctl writes a file under /proc/sys in the namespace.
func (s *sockets) writeSysctl(name, val string) error {
	var err error
	if derr := s.do(func() { err = os.WriteFile("/proc/sys/"+name, []byte(val), 0o644) }); derr != nil {
		return derr
	}
	return err
}

func (s *sockets) close() {
	close(s.done)
	s.wg.Wait()
}

// ephemeralRange returns the namespace's ip_local_port_range.
func (s *sockets) ephemeralRange() (lo, hi uint16, err error) {
	v, err := s.readSysctl("net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, 0, err
	}
	f := strings.Fields(v)
	if len(f) != 2 {
		return 0, 0, fmt.Errorf("parse ip_local_port_range %q", v)
	}
	a, err1 := strconv.ParseUint(f[0], 10, 16)
	b, err2 := strconv.ParseUint(f[1], 10, 16)
	if err1 != nil || err2 != nil || a > b {
		return 0, 0, fmt.Errorf("parse ip_local_port_range %q", v)
	}
	return uint16(a), uint16(b), nil
}

// allowPing makes sure ICMP datagram ("ping") sockets may be opened by
// this process's group in the namespace: net.ipv4.ping_group_range
// defaults to "1 0", which allows nobody, not even root.
func (s *sockets) allowPing() error {
	return s.writeSysctl("net/ipv4/ping_group_range", "0 2147483647")
}

// portRange hands out local ports from PortMin..PortMax (Calico's
// natPortRange). Each host socket holds its port exclusively until it is
// closed. The zero value (and min == 0) means the kernel chooses.
type portRange struct {
	min, max uint16

	mu sync.Mutex
	// used, next and inUse are guarded by mu. used is a bitmap over
	// [min, max]; next is where the search for a free port starts, so
	// recently freed ports are not reused first (a remote may still hold
	// the old connection's state).
	used  []uint64
	next  int
	inUse int
}

func newPortRange(lo, hi uint16) *portRange {
	p := &portRange{min: lo, max: hi}
	if lo != 0 {
		p.used = make([]uint64, (int(hi)-int(lo)+64)/64)
	}
	return p
}

func (p *portRange) enabled() bool { return p.min != 0 }

func (p *portRange) size() int { return int(p.max) - int(p.min) + 1 }

// get reserves a free port.
func (p *portRange) get() (uint16, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := p.size()
	if p.inUse >= n {
		return 0, false
	}
	for range n {
		i := p.next
		p.next++
		if p.next == n {
			p.next = 0
		}
		if p.used[i/64]&(1<<(i%64)) == 0 {
			p.used[i/64] |= 1 << (i % 64)
			p.inUse++
			return p.min + uint16(i), true
		}
	}
	return 0, false
}

// take reserves port if it is in the range and free.
func (p *portRange) take(port uint16) bool {
	if !p.enabled() || port < p.min || port > p.max {
		return false
	}
	i := int(port - p.min)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.used[i/64]&(1<<(i%64)) != 0 {
		return false
	}
	p.used[i/64] |= 1 << (i % 64)
	p.inUse++
	return true
}

// put releases a port taken with get or take.
func (p *portRange) put(port uint16) {
	if !p.enabled() || port < p.min || port > p.max {
		return
	}
	i := int(port - p.min)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.used[i/64]&(1<<(i%64)) != 0 {
		p.used[i/64] &^= 1 << (i % 64)
		p.inUse--
	}
}

func (p *portRange) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.inUse
}

// maxBindTries bounds how many ports of the range one bind tries before
// reporting exhaustion: ports held by other sockets of the node fail with
// EADDRINUSE, and a range shared with busy local services must not turn
// every new flow into a scan of the whole range.
const maxBindTries = 32

// bind binds fd to the source address and, with a port range, a port from
// pr. It returns the port reserved in pr (0 if none).
func bind(fd int, src netip.Addr, pr *portRange, stream bool) (uint16, error) {
	var addr [4]byte
	if src.IsValid() {
		addr = src.As4()
	}
	if !pr.enabled() {
		if !src.IsValid() {
			return 0, nil
		}
		if stream {
			// Let connect pick the port for the full 4-tuple instead of
			// reserving one per source address at bind time.
			_ = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
		}
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: addr}); err != nil {
			return 0, fmt.Errorf("bind %s: %w", src, err)
		}
		return 0, nil
	}
	if stream {
		// Our own closed connections linger in TIME_WAIT on their ports;
		// SO_REUSEADDR lets a new connection bind one (connect still
		// refuses an identical 4-tuple with EADDRNOTAVAIL).
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	}
	return bindFromRange(fd, addr, pr)
}

// bindFromRange binds fd to addr and a free port of pr, trying at most
// maxBindTries ports that other sockets of the node hold.
func bindFromRange(fd int, addr [4]byte, pr *portRange) (uint16, error) {
	for range maxBindTries {
		port, ok := pr.get()
		if !ok {
			return 0, errPortsExhausted
		}
		err := unix.Bind(fd, &unix.SockaddrInet4{Addr: addr, Port: int(port)})
		if err == nil {
			return port, nil
		}
		pr.put(port)
		if !errors.Is(err, unix.EADDRINUSE) {
			return 0, fmt.Errorf("bind port %d: %w", port, err)
		}
	}
	return 0, errPortsExhausted
}

func sockaddr(ap netip.AddrPort) *unix.SockaddrInet4 {
	return &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}
}

// hostConn is a connected host socket with the port it holds.
type hostConn struct {
	conn net.Conn
	port uint16
	// gso: the socket sends with UDP_SEGMENT (Linux 4.18+). An older
	// kernel ignores the control message and sends the burst as one
	// datagram, so it must not be given one.
	gso bool
}

// dialTCP connects a TCP socket in the namespace to remote. It waits at
// most until ctx is done.
func (n *NAT) dialTCP(ctx context.Context, remote netip.AddrPort) (hostConn, error) {
	fd, err := n.socks.socket(unix.SOCK_STREAM, 0)
	if err != nil {
		return hostConn{}, err
	}
	port, err := bind(fd, n.cfg.SourceAddr, n.tcpPorts, true)
	if err != nil {
		unix.Close(fd)
		return hostConn{}, err
	}
	release := func() { n.tcpPorts.put(port) }
	err = unix.Connect(fd, sockaddr(remote))
	if err != nil && !errors.Is(err, unix.EINPROGRESS) {
		unix.Close(fd)
		release()
		return hostConn{}, fmt.Errorf("connect %s: %w", remote, err)
	}
	// os.NewFile registers the non-blocking fd with the runtime poller, so
	// waiting for the connect to finish parks the goroutine, not a thread.
	f := os.NewFile(uintptr(fd), "nat-tcp")
	stop := context.AfterFunc(ctx, func() { f.SetWriteDeadline(time.Unix(1, 0)) })
	defer stop()
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		release()
		return hostConn{}, fmt.Errorf("connect %s: %w", remote, err)
	}
	var cerr error
	werr := rc.Write(func(fd uintptr) bool {
		v, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
		switch {
		case err != nil:
			cerr = err
			return true
		case v != 0:
			e := unix.Errno(v)
			if e == unix.EINPROGRESS || e == unix.EALREADY || e == unix.EINTR {
				return false
			}
			cerr = e
			return true
		}
		// SO_ERROR 0 before the handshake finished too: only a peer
		// name proves the connection is up (net's connect does the same).
		if _, err := unix.Getpeername(int(fd)); err == nil {
			return true
		}
		return false
	})
	if werr != nil && cerr == nil {
		cerr = werr
		if ctx.Err() != nil && errors.Is(werr, os.ErrDeadlineExceeded) {
			cerr = fmt.Errorf("%w (%w)", unix.ETIMEDOUT, context.Cause(ctx))
		}
	}
	if cerr != nil {
		f.Close()
		release()
		return hostConn{}, fmt.Errorf("connect %s: %w", remote, cerr)
	}
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		release()
		return hostConn{}, fmt.Errorf("connect %s: %w", remote, err)
	}
	return hostConn{conn: c, port: port}, nil
}

// dialDatagram opens a connected datagram socket in the namespace: UDP
// (proto 0, ports from pr) or ICMP echo (proto IPPROTO_ICMP, a "ping
// socket"; the kernel assigns the echo identifier). IP_RECVERR is on, so
// ICMP errors about what it sent are queued for routineDatagramReader.
func (n *NAT) dialDatagram(proto int, remote netip.AddrPort, pr *portRange) (hostConn, error) {
	fd, err := n.socks.socket(unix.SOCK_DGRAM, proto)
	if proto == unix.IPPROTO_ICMP && errors.Is(err, unix.EACCES) {
		// ping_group_range excludes us; widen it once, in the node's
		// namespace only, and retry.
		n.pingOnce.Do(func() {
			if err := n.socks.allowPing(); err != nil {
				n.log.Warn("cannot allow ping sockets", "err", err)
			} else {
				n.log.Info("set net.ipv4.ping_group_range to allow ICMP echo sockets")
			}
		})
		fd, err = n.socks.socket(unix.SOCK_DGRAM, proto)
	}
	if err != nil {
		return hostConn{}, err
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_RECVERR, 1); err != nil {
		unix.Close(fd)
		return hostConn{}, fmt.Errorf("setsockopt IP_RECVERR: %w", err)
	}
	gso := false
	if proto == 0 {
		// UDP GRO (Linux 5.0+): a burst of replies the kernel has merged
		// (a NIC's GRO, a sender's GSO) is read in one call and reaches
		// the pod as one superframe. Without it, one read per datagram.
		_ = unix.SetsockoptInt(fd, unix.SOL_UDP, unix.UDP_GRO, 1)
		_, err := unix.GetsockoptInt(fd, unix.SOL_UDP, unix.UDP_SEGMENT)
		gso = err == nil
	}
	var port uint16
	if pr != nil {
		port, err = bind(fd, n.cfg.SourceAddr, pr, false)
	} else if n.cfg.SourceAddr.IsValid() {
		err = unix.Bind(fd, &unix.SockaddrInet4{Addr: n.cfg.SourceAddr.As4()})
	}
	if err != nil {
		unix.Close(fd)
		return hostConn{}, err
	}
	release := func() {
		if pr != nil {
			pr.put(port)
		}
	}
	if err := unix.Connect(fd, sockaddr(remote)); err != nil {
		unix.Close(fd)
		release()
		return hostConn{}, fmt.Errorf("connect %s: %w", remote, err)
	}
	f := os.NewFile(uintptr(fd), "nat-dgram")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		release()
		return hostConn{}, fmt.Errorf("wrap socket: %w", err)
	}
	return hostConn{conn: c, port: port, gso: gso}, nil
}

// dialFailure classifies a failed TCP dial: refused (the pod gets a RST),
// unreachable (the pod gets ICMP host unreachable: no route, no ARP
// answer, or no answer before the dial timeout), no free port, or a local
// error.
func dialFailure(err error) DropReason {
	switch {
	case errors.Is(err, unix.ECONNREFUSED):
		return DropDialRefused
	case errors.Is(err, unix.EHOSTUNREACH), errors.Is(err, unix.ENETUNREACH),
		errors.Is(err, unix.ETIMEDOUT), errors.Is(err, unix.EHOSTDOWN),
		errors.Is(err, unix.ENONET), errors.Is(err, os.ErrDeadlineExceeded):
		return DropDialUnreachable
	case errors.Is(err, errPortsExhausted):
		return DropPortsExhausted
	}
	return DropDialError
}

// localAddr returns the address and port a host socket is bound to.
func localAddr(c net.Conn) netip.AddrPort {
	switch a := c.LocalAddr().(type) {
	case *net.TCPAddr:
		return a.AddrPort()
	case *net.UDPAddr:
		return a.AddrPort()
	}
	return netip.AddrPort{}
}

// unmap turns ::ffff:a.b.c.d into a.b.c.d.
func unmap(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
