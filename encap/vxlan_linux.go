package encap

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Implementation constants for VXLANConn's offloads.
const (
	// maxGSOSegments is the most datagrams one UDP_SEGMENT send carries:
	// UDP_MAX_SEGMENTS, "a hard limit imposed by the kernel" (wireguard-go
	// conn/bind_std.go). Kernels since 6.9 allow 128; 64 works on all.
	maxGSOSegments = 64

	// maxGSOBytes bounds the payload of one UDP_SEGMENT send, in bytes.
	// The kernel's limit is the largest UDP datagram, 65535 − 20 − 8;
	// 65000 leaves room for IP options and keeps clear of the edge.
	maxGSOBytes = 65000

	// groSlotSize is the scratch space per recvmmsg slot when UDP_GRO is
	// on, in bytes: one coalesced datagram is at most a 64 KiB skb.
	groSlotSize = 1 << 16
)

// AnyPort, as VXLANConfig.Port, binds a kernel-chosen port.
const AnyPort = -1

// VXLANConfig configures ListenVXLAN. The zero value is usable.
type VXLANConfig struct {
	// Local, if valid, binds the socket to this underlay IPv4 address: it
	// becomes the outer source of every datagram sent, and only datagrams
	// addressed to it are received. The zero Addr lets routing pick the
	// outer source per destination and receives on every address.
	Local netip.Addr

	// Port is the UDP port bound and the one peers send to. Zero means
	// VXLANPort (4789); AnyPort lets the kernel pick one (a socket that
	// only sends, from its own source port). The outer source port of
	// each datagram is this port too: a socket has one. See VXLANConn
	// about FlowSourcePort.
	Port int

	// BatchSize is the most datagrams one ReadBatch returns and the most
	// packets one sendmmsg call carries. Zero means DefaultBatchSize.
	BatchSize int

	// SocketBuffer is the size asked for the socket's receive and send
	// buffers, in bytes. Zero means DefaultSocketBuffer. The FORCE options
	// are tried first (they need CAP_NET_ADMIN and ignore the rmem_max /
	// wmem_max sysctls); without the capability the plain ones are used
	// and the kernel caps them.
	SocketBuffer int

	// DisableGSO turns off UDP_SEGMENT sends even where the kernel has
	// them. False means use them when the kernel does.
	DisableGSO bool

	// DisableGRO leaves UDP_GRO off on the socket. False means turn it on
	// when the kernel has it.
	DisableGRO bool
}

// VXLANConn sends VXLAN datagrams to other nodes and receives them, in
// batches, on one UDP socket. Datagram payloads are VXLAN header + inner
// Ethernet frame (build them with EncapVXLAN, take them apart with
// DecapVXLAN); the kernel adds and strips the outer IPv4 and UDP headers
// and computes and verifies the UDP checksum (it is never zero, so
// receivers' NICs and GRO can validate it).
//
// Outer source port: a UDP socket sends from its bound port, so every
// datagram leaves from Port, not from a per-flow FlowSourcePort as the
// kernel's vxlan device does. Receivers, Linux included, accept any
// source port (RFC 7348 §5); what is lost is underlay ECMP and RSS
// spreading by flow. FlowSourcePort is there for a future raw-socket
// transport.
//
// Outer DF: like IPIPConn the socket uses IP_PMTUDISC_DONT, so datagrams
// leave with DF clear and the kernel fragments one larger than the route
// MTU; the switch keeps inner frames within underlay MTU − VXLANOverhead
// and answers larger DF packets with ICMP fragmentation-needed.
//
// Offloads (perf.md §2c): with GSO, WriteBatch hands the kernel runs of
// equal-sized datagrams to one destination as one message with a
// UDP_SEGMENT control message, and the kernel (or the NIC) cuts it up.
// With GRO, the kernel may deliver several datagrams of one flow as one
// coalesced datagram plus a UDP_GRO control message giving the segment
// size; ReadBatch splits them again, so callers always see one VXLAN
// datagram per buffer.
//
// ReadBatch may be called from one goroutine at a time (calls are
// serialised), WriteBatch likewise; a read and a write may run at the same
// time. Close may be called from any goroutine.
type VXLANConn struct {
	file  *os.File
	raw   syscall.RawConn
	batch int
	local netip.AddrPort
	gro   bool
	// gso is cleared for good when the kernel refuses a UDP_SEGMENT send
	// with EIO or EINVAL (e.g. an egress device without checksum
	// offload), as wireguard-go does.
	gso atomic.Bool

	closeOnce sync.Once
	closed    atomic.Bool
	closeErr  error

	// readMu serialises ReadBatch and guards every r* and p* field and
	// srcs, sports and nsrc; readFn shares them with it.
	readMu sync.Mutex
	rhdrs  []unix.Mmsghdr
	riovs  []unix.Iovec
	rnames []unix.RawSockaddrInet4
	rctrl  [][8]uint64 // per slot, for the UDP_GRO cmsg; 8-byte aligned
	rcount int         // entries of rhdrs offered to recvmmsg
	rn     int         // entries filled by recvmmsg
	rerr   error       // error from inside readFn
	readFn func(fd uintptr) bool

	// GRO only: recvmmsg reads into scratch (groSlotSize per slot), and
	// ReadBatch copies segments out into the caller's buffers. Segments
	// that did not fit stay pending for the next ReadBatch, which returns
	// them without a syscall.
	scratch []byte
	rsize   []int // per slot: bytes received
	rseg    []int // per slot: segment size (rsize when not coalesced)
	rsrc    []netip.AddrPort
	pend    int // slots holding data from the last recvmmsg
	pslot   int // next slot to split
	poff    int // offset of the next segment in that slot

	srcs   []netip.Addr // source of each datagram of the last ReadBatch
	sports []uint16
	nsrc   int

	// writeMu serialises WriteBatch and guards every w* field, which
	// writeFn shares with it.
	writeMu     sync.Mutex
	whdrs       []unix.Mmsghdr
	wiovs       []unix.Iovec // one per packet; a message uses a run of them
	wnames      []unix.RawSockaddrInet4
	wctrl       []gsoCmsg
	wfirst      []int // wfirst[j] is the index in wpkts of message j's first packet
	wsegs       []int // packets in message j
	wpkts       [][]byte
	wdsts       []netip.AddrPort
	wcount      int // messages filled for this chunk
	wdone       int // messages sent or refused so far
	wsent       int // packets the kernel accepted, over the whole WriteBatch
	wretry      int // ≥ 0: refill from this packet (GSO refused), else -1
	wplainUntil int // packets before this index are sent without GSO
	werrs       []error
	wfatal      error
	writeFn     func(fd uintptr) bool
}

// gsoCmsg is a control message carrying UDP_SEGMENT, laid out as the
// kernel reads it: cmsghdr, then a u16 segment size, padded to
// CMSG_SPACE(2) = 24 bytes.
type gsoCmsg struct {
	hdr  unix.Cmsghdr
	size uint16
	_    [6]byte
}

// ListenVXLAN opens a UDP socket for VXLAN in the calling thread's network
// namespace (use netnsutil.Do to open it elsewhere) and binds it to
// Local:Port. Opening one where the kernel's own vxlan device already
// uses the port fails with EADDRINUSE.
func ListenVXLAN(cfg VXLANConfig) (*VXLANConn, error) {
	batch := cfg.BatchSize
	if batch == 0 {
		batch = DefaultBatchSize
	}
	if batch < 0 || batch > 1024 { // UIO_MAXIOV: the kernel's limit on vlen
		return nil, fmt.Errorf("encap: vxlan: BatchSize %d outside [1, 1024]", batch)
	}
	if cfg.Local.IsValid() && !cfg.Local.Is4() {
		return nil, fmt.Errorf("encap: vxlan: Local %s is not an IPv4 address", cfg.Local)
	}
	port := cfg.Port
	switch port {
	case 0:
		port = VXLANPort
	case AnyPort:
		port = 0
	}
	if port < 0 || port > 65535 {
		return nil, fmt.Errorf("encap: vxlan: Port %d outside [1, 65535]", port)
	}
	sockBuf := cfg.SocketBuffer
	if sockBuf == 0 {
		sockBuf = DefaultSocketBuffer
	}
	local := cfg.Local
	if !local.IsValid() {
		local = netip.IPv4Unspecified()
	}
	bind := netip.AddrPortFrom(local, uint16(port))

	fd, err := underlaySocket("vxlan", unix.SOCK_DGRAM, unix.IPPROTO_UDP, sockBuf)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: local.As4(), Port: port}); err != nil {
		return nil, fmt.Errorf("encap: vxlan: bind %s: %w", bind, err)
	}
	// GSO: getsockopt(UDP_SEGMENT) succeeds on kernels that can send
	// with it (4.18+). Whether the egress device can is only learnt from
	// the first send; see sendBatch.
	gso := false
	if !cfg.DisableGSO {
		_, err := unix.GetsockoptInt(fd, unix.SOL_UDP, unix.UDP_SEGMENT)
		gso = err == nil
	}
	// GRO: setsockopt fails on kernels without it (< 5.0); then the
	// socket simply receives one datagram per slot.
	gro := false
	if !cfg.DisableGRO {
		gro = unix.SetsockoptInt(fd, unix.SOL_UDP, unix.UDP_GRO, 1) == nil
	}

	// fd is non-blocking, so os.NewFile registers it with the netpoller and
	// RawConn.Read/Write park the goroutine instead of a thread.
	f := os.NewFile(uintptr(fd), "vxlan:"+bind.String())
	ok = true // f owns fd now
	raw, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("encap: vxlan: %w", err)
	}

	c := &VXLANConn{
		file:   f,
		raw:    raw,
		batch:  batch,
		local:  bind,
		gro:    gro,
		rhdrs:  make([]unix.Mmsghdr, batch),
		riovs:  make([]unix.Iovec, batch),
		rnames: make([]unix.RawSockaddrInet4, batch),
		srcs:   make([]netip.Addr, batch),
		sports: make([]uint16, batch),
		whdrs:  make([]unix.Mmsghdr, batch),
		wiovs:  make([]unix.Iovec, batch),
		wnames: make([]unix.RawSockaddrInet4, batch),
		wctrl:  make([]gsoCmsg, batch),
		wfirst: make([]int, batch),
		wsegs:  make([]int, batch),
	}
	c.gso.Store(gso)
	if gro {
		c.rctrl = make([][8]uint64, batch)
		c.scratch = make([]byte, batch*groSlotSize)
		c.rsize = make([]int, batch)
		c.rseg = make([]int, batch)
		c.rsrc = make([]netip.AddrPort, batch)
	}
	// Each header points at its own address, control buffer and (for
	// reads, and for GRO's scratch) iovec for the life of the conn; per
	// call only lengths, bases and addresses change.
	for i := range batch {
		h := &c.rhdrs[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&c.rnames[i]))
		h.Iov = &c.riovs[i]
		h.SetIovlen(1)
		if gro {
			h.Control = (*byte)(unsafe.Pointer(&c.rctrl[i]))
			c.riovs[i].Base = &c.scratch[i*groSlotSize]
			c.riovs[i].SetLen(groSlotSize)
		}
		w := &c.whdrs[i].Hdr
		w.Name = (*byte)(unsafe.Pointer(&c.wnames[i]))
		w.Namelen = unix.SizeofSockaddrInet4
		c.wnames[i].Family = unix.AF_INET
		c.wctrl[i].hdr.Level = unix.SOL_UDP
		c.wctrl[i].hdr.Type = unix.UDP_SEGMENT
		c.wctrl[i].hdr.SetLen(unix.CmsgLen(2))
	}
	c.readFn = c.recvBatch
	c.writeFn = c.sendBatch
	return c, nil
}

// BatchSize is the most datagrams one ReadBatch returns; size the
// caller's vectors to it.
func (c *VXLANConn) BatchSize() int { return c.batch }

// LocalAddr returns the address and port the socket is bound to
// (0.0.0.0 when Local was not set).
func (c *VXLANConn) LocalAddr() netip.AddrPort { return c.local }

// GSO reports whether WriteBatch currently coalesces with UDP_SEGMENT. It
// turns false for good if the kernel refuses a segmented send.
func (c *VXLANConn) GSO() bool { return c.gso.Load() }

// GRO reports whether UDP_GRO is on, i.e. whether ReadBatch reads into
// its own scratch buffers and copies datagrams out.
func (c *VXLANConn) GRO() bool { return c.gro }

// SetReadDeadline makes a blocked or future ReadBatch return an error
// wrapping os.ErrDeadlineExceeded after t; the zero time means none.
func (c *VXLANConn) SetReadDeadline(t time.Time) error { return c.file.SetReadDeadline(t) }

// SetWriteDeadline bounds how long WriteBatch waits for send buffer space.
func (c *VXLANConn) SetWriteDeadline(t time.Time) error { return c.file.SetWriteDeadline(t) }

// Close closes the socket. A ReadBatch or WriteBatch blocked in it returns
// os.ErrClosed, and so does every later call. Close is idempotent: later
// calls return what the first one did.
func (c *VXLANConn) Close() error {
	c.closeOnce.Do(func() {
		c.closed.Store(true)
		if err := c.file.Close(); err != nil {
			c.closeErr = fmt.Errorf("encap: vxlan: close: %w", err)
		}
	})
	return c.closeErr
}

// mapErr turns errors from a closed or closing file into os.ErrClosed
// and wraps the rest with the operation.
func (c *VXLANConn) mapErr(op string, err error) error {
	if c.closed.Load() || errors.Is(err, os.ErrClosed) || errors.Is(err, unix.EBADF) {
		return os.ErrClosed
	}
	return fmt.Errorf("encap: vxlan %s: %w", op, err)
}
