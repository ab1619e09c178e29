package nat

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"

	"podnet/internal/netnsutil"
	"podnet/internal/nettest"
	"podnet/internal/packet"
)

// Test topology:
//
//	test process: the "pod side" (a gVisor stack with 192.168.1.2, or
//	hand-built packets) --Handle--> NAT --Deliver--> back to the pod side
//	                                 |
//	                                 | host sockets opened in netns N
//	  netns N: vn0 10.252.0.1/24 <--veth--> vr0 10.252.0.2/24 :netns R
//
//	R runs an HTTP server on :80 (records client addresses, GET / says
//	"hello", GET /bytes?n=N streams N pseudo-random bytes, POST /upload
//	answers with the body's length and SHA-256), a TCP echo server on :9,
//	a TCP server on :12 that resets every connection, a UDP echo server
//	on :7, and nothing on :81.
//	10.253.0.0/16 has no route in N.
var (
	podAddr    = netip.MustParseAddr("192.168.1.2")
	nodeAddr   = netip.MustParseAddr("10.252.0.1")
	nodeAddr2  = netip.MustParseAddr("10.252.0.3")
	remoteAddr = netip.MustParseAddr("10.252.0.2")
	noRoute    = netip.MustParseAddr("10.253.0.9")
)

type topo struct {
	n, r string // netns paths

	mu      sync.Mutex
	clients []netip.AddrPort // HTTP client addresses R saw, guarded by mu
}

func run(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %v: %v\n%s", args, err, out)
	}
}

// newTopo builds N and R with their servers; everything is removed when
// the test ends, also on failure.
func newTopo(t testing.TB) *topo {
	t.Helper()
	nn, rn := nettest.UniqueName("natn"), nettest.UniqueName("natr")
	tp := &topo{n: nettest.Netns(t, nn), r: nettest.Netns(t, rn)}
	run(t, "-n", nn, "link", "add", "vn0", "type", "veth", "peer", "name", "vr0", "netns", rn)
	run(t, "-n", nn, "addr", "add", "10.252.0.1/24", "dev", "vn0")
	run(t, "-n", nn, "addr", "add", "10.252.0.3/24", "dev", "vn0")
	run(t, "-n", rn, "addr", "add", "10.252.0.2/24", "dev", "vr0")
	run(t, "-n", nn, "link", "set", "vn0", "up")
	run(t, "-n", rn, "link", "set", "vr0", "up")
	tp.serveHTTP(t)
	tp.serveTCPEcho(t)
	tp.serveTCPReset(t)
	tp.serveUDPEcho(t)
	return tp
}

func (tp *topo) listen(t testing.TB, network, addr string) (ln net.Listener, pc net.PacketConn) {
	t.Helper()
	err := netnsutil.Do(tp.r, func() (err error) {
		if network == "udp4" {
			pc, err = net.ListenPacket(network, addr)
		} else {
			ln, err = net.Listen(network, addr)
		}
		return err
	})
	if err != nil {
		t.Fatalf("listen %s %s in R: %v", network, addr, err)
	}
	return ln, pc
}

// testData returns the deterministic pseudo-random stream /bytes serves.
func testData() io.Reader { return randReader{rand.NewChaCha8([32]byte{7})} }

type randReader struct{ r *rand.ChaCha8 }

func (r randReader) Read(p []byte) (int, error) { return r.r.Read(p) }

func (tp *topo) serveHTTP(t testing.TB) {
	ln, _ := tp.listen(t, "tcp4", "10.252.0.2:80")
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		ap, _ := netip.ParseAddrPort(r.RemoteAddr)
		tp.mu.Lock()
		tp.clients = append(tp.clients, ap)
		tp.mu.Unlock()
		io.WriteString(w, "hello")
	})
	mux.HandleFunc("/bytes", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		io.Copy(w, io.LimitReader(testData(), n))
	})
	mux.HandleFunc("/upload", func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%d %x", n, h.Sum(nil))
	})
	srv := &http.Server{Handler: mux}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
}

func (tp *topo) serveTCPEcho(t testing.TB) {
	ln, _ := tp.listen(t, "tcp4", "10.252.0.2:9")
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
}

// serveTCPReset accepts on :12 and resets every connection at once.
func (tp *topo) serveTCPReset(t testing.TB) {
	ln, _ := tp.listen(t, "tcp4", "10.252.0.2:12")
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
}

func (tp *topo) serveUDPEcho(t testing.TB) {
	_, pc := tp.listen(t, "udp4", "10.252.0.2:7")
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			n, a, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], a)
		}
	}()
	t.Cleanup(func() { pc.Close(); <-done })
}

func (tp *topo) httpClients() []netip.AddrPort {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return append([]netip.AddrPort(nil), tp.clients...)
}

// deliverCheck wraps what NAT delivers: every packet must be a valid IPv4
// packet (a superframe with DeliverRoom before it) with a correct header
// checksum and, unless a fragment, a correct transport checksum,
// addressed to a pod; then it goes to next. A superframe or a partial
// checksum is first made complete packets, as the switch does for a pod
// without offloads.
type deliverCheck struct {
	t     testing.TB
	bad   atomic.Int64
	count atomic.Int64
	// superframes counts the TCP superframes delivered, segments the
	// packets cut from them; udpSuperframes and datagrams the same for
	// UDP.
	superframes, segments     atomic.Int64
	udpSuperframes, datagrams atomic.Int64
	// unreach counts ICMP destination unreachables delivered.
	unreach atomic.Int64
	next    atomic.Pointer[func([]byte)]

	mu  sync.Mutex // guards seg (deliver runs on several NAT goroutines)
	seg [][]byte
}

func (d *deliverCheck) deliver(buf []byte, off int, hdr packet.VirtioNetHdr) {
	pkt := buf[off:]
	if hdr.GSOType != packet.GSONone && off < DeliverRoom {
		// Superframes come from the netstack and from host sockets,
		// which both leave the switch room to send them in place.
		d.bad.Add(1)
		d.t.Logf("superframe delivered with %d bytes of room, want %d", off, DeliverRoom)
	}
	if hdr == (packet.VirtioNetHdr{}) {
		d.deliverComplete(pkt)
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.seg == nil {
		for range 64 {
			d.seg = append(d.seg, make([]byte, 65536))
		}
	}
	if hdr.Flags&packet.VirtioNetHdrFNeedsCsum != 0 {
		// A partial checksum is the pseudo-header sum over the whole
		// transport segment, folded, not inverted: what the pod's kernel
		// (and SegmentTCPv4/UDPv4, which recompute it) build on.
		ip := packet.IPv4(pkt)
		field := int(hdr.CsumStart) + int(hdr.CsumOffset)
		want := packet.Fold(packet.PseudoHeaderSum(ip.Protocol(), ip.SrcBytes(), ip.DstBytes(), uint16(len(ip.Payload()))))
		if field+2 > len(pkt) || binary.BigEndian.Uint16(pkt[field:]) != want {
			d.bad.Add(1)
			d.t.Logf("delivered partial checksum is not the pseudo-header sum %#x (%+v)", want, hdr)
			return
		}
	}
	sizes := make([]int, len(d.seg))
	segment := packet.SegmentTCPv4
	if hdr.GSOType == packet.GSOUDPL4 {
		segment = packet.SegmentUDPv4
	}
	n, err := segment(pkt, hdr, d.seg, sizes, 0)
	if err != nil {
		d.bad.Add(1)
		d.t.Logf("bad delivered superframe %+v: %v", hdr, err)
		return
	}
	switch hdr.GSOType {
	case packet.GSOTCPv4:
		d.superframes.Add(1)
		d.segments.Add(int64(n))
	case packet.GSOUDPL4:
		d.udpSuperframes.Add(1)
		d.datagrams.Add(int64(n))
	}
	for i := range n {
		d.deliverComplete(d.seg[i][:sizes[i]])
	}
}

func (d *deliverCheck) deliverComplete(pkt []byte) {
	d.count.Add(1)
	if ip := packet.IPv4(pkt); len(pkt) > packet.IPv4MinHeaderLen && ip.Protocol() == packet.ProtoICMP && pkt[packet.IPv4MinHeaderLen] == packet.ICMPDestUnreachable {
		d.unreach.Add(1)
	}
	if err := checkDelivered(pkt); err != nil {
		if d.bad.Add(1) <= 5 {
			d.t.Logf("bad delivered packet: %v: % x", err, pkt[:min(len(pkt), 64)])
		}
	}
	if fn := d.next.Load(); fn != nil {
		(*fn)(pkt)
	}
}

func checkDelivered(pkt []byte) error {
	ip := packet.IPv4(pkt)
	if r := ip.Validate(); r != packet.ParseOK {
		return fmt.Errorf("invalid ipv4: %v", r)
	}
	if ip.TotalLen() != len(pkt) {
		return fmt.Errorf("total length %d, packet %d bytes", ip.TotalLen(), len(pkt))
	}
	if !ip.HeaderChecksumValid() {
		return fmt.Errorf("bad ipv4 header checksum")
	}
	if !ip.IsFragment() && packet.ValidateTransport(ip) == packet.ParseOK && !packet.TransportChecksumValid(ip) {
		return fmt.Errorf("bad %d checksum", ip.Protocol())
	}
	return nil
}

// newNAT starts a NAT in N whose deliveries are checked; cfg.Deliver is
// set by the harness. It is closed when the test ends.
func newNAT(t testing.TB, tp *topo, cfg Config) (*NAT, *deliverCheck) {
	t.Helper()
	d := &deliverCheck{t: t}
	cfg.Netns = tp.n
	cfg.Deliver = d.deliver
	cfg.Logger = slog.New(slog.DiscardHandler)
	n, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if cfg.Underlay != "" && n.fast == nil {
		n.Close()
		t.Fatalf("the TCP packet path was not set up: %v", n.fastErr)
	}
	t.Cleanup(func() {
		n.Close()
		if b := d.bad.Load(); b != 0 {
			t.Errorf("%d delivered packets were invalid", b)
		}
	})
	return n, d
}

// tcpPaths runs fn once for each way TCP can cross NAT: "netstack" (the
// pod's connection ends in NAT's netstack, spliced onto a host socket)
// and "packet" (Underlay vn0: packets rewritten and forwarded by N's
// kernel, replies steered back by the tc program). base is the Config
// both start from.
func tcpPaths(t *testing.T, base Config, fn func(t *testing.T, cfg Config, packetPath bool)) {
	for _, packetPath := range []bool{false, true} {
		name, cfg := "netstack", base
		if packetPath {
			name, cfg.Underlay = "packet", "vn0"
		}
		t.Run(name, func(t *testing.T) { fn(t, cfg, packetPath) })
	}
}

// wantPath checks that the n connections NAT admitted took the path
// the test asked for.
func wantPath(t *testing.T, n *NAT, packetPath bool, conns uint64) {
	t.Helper()
	s := n.Stats()
	want := uint64(0)
	if packetPath {
		want = conns
	}
	if s.PacketConnsTotal != want {
		t.Errorf("%d connections took the packet path (TCPPath %q), want %d", s.PacketConnsTotal, s.TCPPath, want)
	}
}

// podStack is a gVisor stack standing in for a pod: what it sends goes to
// NAT.Handle, what NAT delivers is injected into it.
type podStack struct {
	s      *stack.Stack
	ep     *channel.Endpoint
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

func newPodStack(t testing.TB, n *NAT, d *deliverCheck) *podStack {
	t.Helper()
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol},
	})
	sack := tcpip.TCPSACKEnabled(true)
	s.SetTransportProtocolOption(tcp.ProtocolNumber, &sack)
	ep := channel.New(4096, 1500, "")
	if err := s.CreateNIC(1, ep); err != nil {
		t.Fatalf("pod CreateNIC: %v", err)
	}
	if err := s.AddProtocolAddress(1, tcpip.ProtocolAddress{
		Protocol:          ipv4.ProtocolNumber,
		AddressWithPrefix: tcpip.AddrFrom4(podAddr.As4()).WithPrefix(),
	}, stack.AddressProperties{}); err != nil {
		t.Fatalf("pod address: %v", err)
	}
	s.SetRouteTable([]tcpip.Route{{Destination: header.IPv4EmptySubnet, NIC: 1}})
	ctx, cancel := context.WithCancel(context.Background())
	p := &podStack{s: s, ep: ep, cancel: cancel, done: make(chan struct{})}
	in := func(pkt []byte) {
		pkb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(pkt)})
		ep.InjectInbound(ipv4.ProtocolNumber, pkb)
		pkb.DecRef()
	}
	d.next.Store(&in)
	go func() {
		defer close(p.done)
		buf := make([]byte, 0, 65536)
		for {
			pkb := ep.ReadContext(ctx)
			if pkb == nil {
				return
			}
			b := buf[:0]
			for _, v := range pkb.AsSlices() {
				b = append(b, v...)
			}
			pkb.DecRef()
			n.Handle(b, 0)
		}
	}()
	t.Cleanup(p.close)
	return p
}

// close stops the pump and destroys the stack; it may be called twice.
func (p *podStack) close() {
	p.once.Do(func() {
		p.cancel()
		<-p.done
		p.ep.Close()
		p.s.Destroy()
	})
}

func fullAddr(ap netip.AddrPort) tcpip.FullAddress {
	return tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom4(ap.Addr().As4()), Port: ap.Port()}
}

func (p *podStack) dial(ctx context.Context, ap netip.AddrPort) (*gonet.TCPConn, error) {
	return gonet.DialContextTCP(ctx, p.s, fullAddr(ap), ipv4.ProtocolNumber)
}

func (p *podStack) httpClient() *http.Client {
	return &http.Client{
		Timeout: 2 * time.Minute,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
				ap, err := netip.ParseAddrPort(addr)
				if err != nil {
					return nil, err
				}
				return p.dial(ctx, ap)
			},
		},
	}
}

func (p *podStack) dialUDP(t testing.TB, ap netip.AddrPort) *gonet.UDPConn {
	t.Helper()
	raddr := fullAddr(ap)
	c, err := gonet.DialUDP(p.s, nil, &raddr, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatalf("pod DialUDP %s: %v", ap, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// sha256Of hashes the first n bytes of testData.
func sha256Of(n int64) []byte {
	h := sha256.New()
	io.Copy(h, io.LimitReader(testData(), n))
	return h.Sum(nil)
}

// waitFor polls cond until it holds or d passes.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// findEntry returns the entry for proto and remote, if any.
func findEntry(n *NAT, proto string, remote netip.AddrPort) (Entry, bool) {
	for _, e := range n.Entries() {
		if e.Proto == proto && e.Remote == remote {
			return e, true
		}
	}
	return Entry{}, false
}
