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

	"podnet/internal/udpoffload"
)

// Implementation constants of the batched datagram core.
const (
	// maxBatch is UIO_MAXIOV, the kernel's limit on recvmmsg and
	// sendmmsg's vlen (and on one message's iovecs).
	maxBatch = 1024

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

// socketSpec is what a transport asks of the core: the socket kind, and
// the address, batch and buffer settings from the transport's config
// (zero values mean the defaults, as in the configs).
type socketSpec struct {
	name  string // transport name, first word of every error: "ipip", "vxlan"
	typ   int    // unix.SOCK_RAW or unix.SOCK_DGRAM
	proto int    // unix.IPPROTO_IPIP, unix.IPPROTO_UDP, …

	// local, if valid, is bound: the outer source of what is sent and the
	// only destination received on.
	local netip.Addr

	// UDP only: port is the config's Port (0 means defaultPort, AnyPort a
	// kernel-chosen one), and gso and gro ask for the offloads where the
	// kernel has them.
	port        int
	defaultPort int
	gso, gro    bool
	// reusePort sets SO_REUSEPORT before binding: sockets of one user
	// bound to the same address and port share what arrives, by flow.
	reusePort bool

	batch  int // 0 means DefaultBatchSize
	buffer int // 0 means DefaultSocketBuffer

	// sender: writes go through a second socket of the same kind, kept
	// off the netpoller (see sendTimeout), with a filter that drops
	// whatever it receives (a raw socket gets a copy of every packet of
	// its protocol); the first socket only receives.
	sender bool

	// Raw only, with sender: header is the length of the outer IPv4
	// header the transport builds for each packet (IP_HDRINCL on the
	// sending socket), 0 to let the kernel build it. The kernel never
	// fragments a packet under a header from the message, so one too big
	// for the device is sent on the receiving socket with the kernel's
	// header instead (sendPlain). The transport sets
	// batchConn.buildHeader after open.
	header int

	// sendOnly: the conn never reads. Its socket drops whatever arrives.
	sendOnly bool

	// outerECN returns the ECN bits of the outer header for a packet as
	// the transport's caller writes it (packet.TunnelECN of its inner
	// IPv4 header's TOS; 0 where it has none). A UDP socket learns each
	// datagram's outer TOS on reads (IP_RECVTOS), a raw one finds it in
	// the outer header it reads: OuterTOS.
	outerECN func(pkt []byte) uint8
}

// writeCmsg is a message's control data on a write: UDP_SEGMENT when the
// message carries several packets, IP_TOS when the outer header is to
// carry ECN bits, both back to back when it needs both.
type writeCmsg struct {
	seg udpoffload.SegmentCmsg
	tos udpoffload.TOSCmsg
}

// Sending sockets are kept off Go's netpoller. The poller registers every
// socket for EPOLLOUT, edge-triggered, and the kernel signals write space
// each time a packet the socket sent is freed, which for a datagram
// socket is once per datagram (or per GSO message): each such signal
// wakes a thread parked in epoll_wait, for nothing, since no goroutine
// waits to write. With IP-in-IP, which sends one datagram per segment,
// that was about a fifth of the machine's wake-ups during a transfer
// (docs/performance.md). A blocking socket off the poller is never woken
// for: sendmmsg blocks in the rare case the send buffer is full.
//
// sendTimeout bounds each such wait (SO_SNDTIMEO): a write whose buffer
// stays full that long refuses the rest of its packets. Close shuts the
// socket down for writing first, which wakes a writer blocked there at
// once.
const sendTimeout = time.Second

// batchConn is the batched datagram core that every transport embeds: an
// IPv4 socket, non-blocking on the netpoller for reads, moved with recvmmsg
// and sendmmsg in batches the caller owns (sends off the poller where they
// can be: see sendTimeout), with UDP GSO and GRO where the
// socket is UDP and the kernel has them, and every error from a closed
// socket turned into os.ErrClosed. A transport adds only its socket kind
// (socketSpec), its destination type and its documentation; headers are
// built and taken apart outside, by pure functions (EncapVXLAN,
// DecapIPIP, DecapVXLAN).
//
// ReadBatch may be called from one goroutine at a time (calls are
// serialised), WriteBatch likewise; a read and a write may run at the same
// time. Close may be called from any goroutine.
type batchConn struct {
	name  string
	file  *os.File
	raw   syscall.RawConn
	batch int
	local netip.AddrPort // as getsockname reports it
	udp   bool           // destinations carry ports; GSO and GRO are possible
	gro   bool

	// send is the socket writes go through: file itself, or with
	// socketSpec.sender a second one (see sendBlocks).
	send     *os.File
	sendRaw  syscall.RawConn
	sendOnly bool

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
	rctrl  [][8]uint64 // per slot (UDP), for the UDP_GRO and IP_TOS cmsgs; 8-byte aligned
	rtos   []uint8     // per slot: the outer TOS byte
	rcount int         // entries of rhdrs offered to recvmmsg
	rn     int         // entries filled by recvmmsg
	rerr   error       // error from inside readFn
	// readFn is c.recvBatch bound once: a method value made per call
	// would allocate a closure on every ReadBatch.
	readFn func(fd uintptr) bool

	// GRO only: recvmmsg reads into scratch (groSlotSize per slot), and
	// ReadBatch copies segments out into the caller's buffers, unless
	// datagrams come one per slot (readGRO). Segments that did not fit
	// stay pending for the next ReadBatch, which returns them without a
	// syscall.
	scratch []byte
	rsize   []int // per slot: bytes received
	rseg    []int // per slot: segment size (rsize when not coalesced)
	rsrc    []netip.AddrPort
	pend    int // slots holding data from the last recvmmsg
	pslot   int // next slot to split
	poff    int // offset of the next segment in that slot
	// direct: the next batch is read straight into the caller's buffers
	// (readDirect); plain counts scratch batches in a row that held no
	// coalesced datagrams.
	direct bool
	plain  int

	srcs   []netip.Addr // source of each datagram of the last ReadBatch
	sports []uint16
	toss   []uint8 // outer TOS byte of each
	nsrc   int

	// writeMu serialises writes and guards every w* field, which writeFn
	// shares with it.
	writeMu sync.Mutex
	whdrs   []unix.Mmsghdr
	wiovs   []unix.Iovec // one per packet (and header); a message uses a run of them
	wnames  []unix.RawSockaddrInet4
	wctrl   []writeCmsg
	wecn    []uint8 // outer ECN bits of message j
	wfirst  []int   // wfirst[j] is the index in wpkts of message j's first packet
	wsegs   []int   // packets in message j
	wpkts   [][]byte
	// The caller's destinations: waddrs for raw IP sockets (no port),
	// wports for UDP. dst reads whichever is set.
	waddrs      []netip.Addr
	wports      []netip.AddrPort
	wcount      int // messages filled for this chunk
	wdone       int // messages sent or refused so far
	wsent       int // packets the kernel accepted, over the whole write
	wretry      int // ≥ 0: refill from this packet (GSO refused), else -1
	wplainUntil int // packets before this index are sent without GSO
	werrs       []error
	wfatal      error // error that ends the write (closed socket)
	writeFn     func(fd uintptr) bool

	// With socketSpec.header, each message is two iovecs: the outer
	// header buildHeader wrote into the message's slice of wouter, then
	// the caller's packet.
	header      int
	wouter      []byte
	buildHeader func(outer, pkt []byte, dst netip.Addr)
	outerECN    func(pkt []byte) uint8 // socketSpec.outerECN

	// A packet too big for the device goes out on file with the kernel's
	// header (sendPlain): wplain is its message, wplainErr the result,
	// plainFn the write callback, bound once.
	wplain    unix.Msghdr
	wplainErr unix.Errno
	plainFn   func(fd uintptr) bool
}

// open opens the socket s describes in the calling thread's network
// namespace and sets c up around it. c must be the zero value and must
// not move afterwards (the headers point into it).
func (c *batchConn) open(s socketSpec) error {
	batch := s.batch
	if batch == 0 {
		batch = DefaultBatchSize
	}
	if batch < 0 || batch > maxBatch {
		return fmt.Errorf("encap: %s: BatchSize %d outside [1, %d]", s.name, batch, maxBatch)
	}
	if s.local.IsValid() && !s.local.Is4() {
		return fmt.Errorf("encap: %s: Local %s is not an IPv4 address", s.name, s.local)
	}
	udp := s.typ == unix.SOCK_DGRAM
	port := 0
	if s.header != 0 && (udp || !s.sender || s.header < 20 || s.header > 60 || s.header%4 != 0) {
		return fmt.Errorf("encap: %s: own outer header of %d bytes: needs a raw socket with a separate sender and 20 to 60 bytes in steps of 4", s.name, s.header)
	}
	if s.sendOnly && s.sender {
		return fmt.Errorf("encap: %s: a send-only conn with a separate sender", s.name)
	}
	if udp {
		switch port = s.port; port {
		case 0:
			port = s.defaultPort
		case AnyPort:
			port = 0
		}
		if port < 0 || port > 65535 {
			return fmt.Errorf("encap: %s: Port %d outside [1, 65535]", s.name, s.port)
		}
	}
	buffer := s.buffer
	if buffer == 0 {
		buffer = DefaultSocketBuffer
	}

	fd, err := underlaySocket(s.name, s.typ, s.proto, buffer, !s.sendOnly)
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()
	if s.sendOnly {
		if err := dropAll(fd); err != nil {
			return fmt.Errorf("encap: %s: %w", s.name, err)
		}
	}
	if s.reusePort {
		if !udp {
			return fmt.Errorf("encap: %s: SO_REUSEPORT on a raw socket: each would receive every packet", s.name)
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
			return fmt.Errorf("encap: %s: SO_REUSEPORT: %w", s.name, err)
		}
	}
	// A raw socket left unbound receives on every address; a UDP socket
	// is always bound, to its port.
	if s.local.IsValid() || udp {
		local := s.local
		if !local.IsValid() {
			local = netip.IPv4Unspecified()
		}
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: local.As4(), Port: port}); err != nil {
			where := local.String()
			if udp {
				where = netip.AddrPortFrom(local, uint16(port)).String()
			}
			return fmt.Errorf("encap: %s: bind %s: %w", s.name, where, err)
		}
	}
	bound, err := unix.Getsockname(fd)
	if err != nil {
		return fmt.Errorf("encap: %s: getsockname: %w", s.name, err)
	}
	if sa, isV4 := bound.(*unix.SockaddrInet4); isV4 {
		c.local = netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), 0)
		if udp { // a raw socket reports its protocol as the port
			c.local = netip.AddrPortFrom(c.local.Addr(), uint16(sa.Port))
		}
	}
	gso, gro := false, false
	if udp {
		// GSO: getsockopt(UDP_SEGMENT) succeeds on kernels that can
		// send with it (4.18+). Whether the egress device can is only
		// learnt from the first send; see sendBatch.
		if s.gso {
			_, err := unix.GetsockoptInt(fd, unix.SOL_UDP, unix.UDP_SEGMENT)
			gso = err == nil
		}
		// GRO: setsockopt fails on kernels without it (< 5.0); then the
		// socket simply receives one datagram per slot.
		if s.gro && !s.sendOnly {
			gro = unix.SetsockoptInt(fd, unix.SOL_UDP, unix.UDP_GRO, 1) == nil
		}
		// The outer TOS of each datagram, for its ECN bits (RFC 6040).
		if !s.sendOnly {
			if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_RECVTOS, 1); err != nil {
				return fmt.Errorf("encap: %s: IP_RECVTOS: %w", s.name, err)
			}
		}
	}

	name := s.name
	switch {
	case udp:
		name += ":" + c.local.String()
	case s.local.IsValid():
		name += ":" + s.local.String()
	}
	// A non-blocking fd is registered with the netpoller by os.NewFile,
	// and RawConn.Read/Write park the goroutine instead of a thread; a
	// send-only one is blocking and stays off the poller.
	f := os.NewFile(uintptr(fd), name)
	ok = true // f owns fd now
	raw, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return fmt.Errorf("encap: %s: %w", s.name, err)
	}
	c.send, c.sendRaw, c.sendOnly = f, raw, s.sendOnly
	if s.sender {
		if err := c.openSender(s, name, buffer); err != nil {
			f.Close()
			return err
		}
	}

	c.name, c.file, c.raw, c.batch, c.udp, c.gro = s.name, f, raw, batch, udp, gro
	c.outerECN = s.outerECN
	c.gso.Store(gso)
	c.rhdrs = make([]unix.Mmsghdr, batch)
	c.riovs = make([]unix.Iovec, batch)
	c.rnames = make([]unix.RawSockaddrInet4, batch)
	c.srcs = make([]netip.Addr, batch)
	c.sports = make([]uint16, batch)
	c.toss = make([]uint8, batch)
	c.whdrs = make([]unix.Mmsghdr, batch)
	c.wiovs = make([]unix.Iovec, batch)
	if s.header > 0 {
		c.header = s.header
		c.wouter = make([]byte, batch*s.header)
		c.wiovs = make([]unix.Iovec, 2*batch)
	}
	c.wnames = make([]unix.RawSockaddrInet4, batch)
	c.wfirst = make([]int, batch)
	c.wsegs = make([]int, batch)
	c.wctrl = make([]writeCmsg, batch)
	c.wecn = make([]uint8, batch)
	if udp {
		c.rctrl = make([][8]uint64, batch)
		c.rtos = make([]uint8, batch)
	}
	if gro {
		c.scratch = make([]byte, batch*groSlotSize)
		c.rsize = make([]int, batch)
		c.rseg = make([]int, batch)
		c.rsrc = make([]netip.AddrPort, batch)
		c.direct = true
	}
	// Each header points at its own address, control buffer and (for
	// reads, and for GRO's scratch) iovec for the life of the conn; per
	// call only lengths, bases and addresses change.
	for i := range batch {
		h := &c.rhdrs[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&c.rnames[i]))
		h.Iov = &c.riovs[i]
		h.SetIovlen(1)
		if udp {
			h.Control = (*byte)(unsafe.Pointer(&c.rctrl[i]))
		}
		if gro {
			c.riovs[i].Base = &c.scratch[i*groSlotSize]
			c.riovs[i].SetLen(groSlotSize)
		}
		w := &c.whdrs[i].Hdr
		w.Name = (*byte)(unsafe.Pointer(&c.wnames[i]))
		w.Namelen = unix.SizeofSockaddrInet4
		c.wnames[i].Family = unix.AF_INET
		c.wctrl[i].seg.Init()
		c.wctrl[i].tos.Init()
	}
	c.readFn = c.recvBatch
	c.writeFn = c.sendBatch
	c.plainFn = c.sendPlainFn
	return nil
}

// openSender opens the socket a conn with socketSpec.sender writes on: of
// the receiving socket's kind and protocol, blocking and so off the
// netpoller, dropping all it receives, with IP_HDRINCL when the transport
// writes the outer header (the kernel then fills in its checksum and
// total length, and the source and ID where they are zero), and bound to
// s.local as the receiving socket is, so that routing picks the same
// source.
func (c *batchConn) openSender(s socketSpec, name string, buffer int) error {
	fd, err := underlaySocket(s.name, s.typ, s.proto, buffer, false)
	if err != nil {
		return err
	}
	fail := func(what string, err error) error {
		unix.Close(fd)
		return fmt.Errorf("encap: %s: sender: %s: %w", s.name, what, err)
	}
	if err := dropAll(fd); err != nil {
		return fail("drop filter", err)
	}
	if s.header > 0 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_HDRINCL, 1); err != nil {
			return fail("setsockopt IP_HDRINCL", err)
		}
	}
	if s.local.IsValid() {
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: s.local.As4()}); err != nil {
			return fail("bind "+s.local.String(), err)
		}
	}
	f := os.NewFile(uintptr(fd), name+" sender")
	raw, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return fmt.Errorf("encap: %s: sender: %w", s.name, err)
	}
	c.send, c.sendRaw = f, raw
	return nil
}

// sendBlocks says whether writes go through a blocking socket off the
// netpoller (see sendTimeout): a separate sender, or a send-only conn's
// only socket.
func (c *batchConn) sendBlocks() bool { return c.sendOnly || c.send != c.file }

// dropAll attaches a socket filter that drops every packet, so that a
// socket that only sends, which nobody reads, queues nothing.
func dropAll(fd int) error {
	drop := []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: 0}}
	prog := unix.SockFprog{Len: uint16(len(drop)), Filter: &drop[0]}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &prog); err != nil {
		return fmt.Errorf("setsockopt SO_ATTACH_FILTER: %w", err)
	}
	return nil
}

// underlaySocket opens an IPv4 socket a transport sends or receives on
// (name says which transport, for errors): non-blocking for the
// netpoller, or blocking with sendTimeout for a socket that only sends.
// DF stays clear on what it sends: the kernel fragments an outer packet
// that does not fit the underlay, and the switch itself answers DF inner
// packets that would not fit with ICMP fragmentation-needed (see IPIPConn
// and VXLANConn). Buffers are asked for with the FORCE options first.
func underlaySocket(name string, typ, proto, buf int, nonblock bool) (int, error) {
	flags := unix.SOCK_CLOEXEC
	if nonblock {
		flags |= unix.SOCK_NONBLOCK
	}
	fd, err := unix.Socket(unix.AF_INET, typ|flags, proto)
	if err != nil {
		return -1, fmt.Errorf("encap: %s: socket: %w", name, err)
	}
	fail := func(what string, err error) (int, error) {
		unix.Close(fd)
		return -1, fmt.Errorf("encap: %s: %s: %w", name, what, err)
	}
	if !nonblock {
		tv := unix.NsecToTimeval(sendTimeout.Nanoseconds())
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
			return fail("setsockopt SO_SNDTIMEO", err)
		}
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DONT); err != nil {
		return fail("setsockopt IP_MTU_DISCOVER", err)
	}
	if err := setBuffer(fd, unix.SO_RCVBUFFORCE, unix.SO_RCVBUF, buf); err != nil {
		return fail(fmt.Sprintf("receive buffer %d", buf), err)
	}
	if err := setBuffer(fd, unix.SO_SNDBUFFORCE, unix.SO_SNDBUF, buf); err != nil {
		return fail(fmt.Sprintf("send buffer %d", buf), err)
	}
	return fd, nil
}

// setBuffer asks for n bytes with the FORCE option and falls back to the
// plain one when the process lacks CAP_NET_ADMIN.
func setBuffer(fd, force, plain, n int) error {
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, force, n); err == nil {
		return nil
	}
	return unix.SetsockoptInt(fd, unix.SOL_SOCKET, plain, n)
}

// BatchSize is the most datagrams one ReadBatch returns and one sendmmsg
// carries; size the caller's vectors to it.
func (c *batchConn) BatchSize() int { return c.batch }

// QueueDrops is how many packets the kernel dropped at the receive
// socket before ReadBatch got them, since the socket was opened: its
// receive buffer was full (the reader had not read the ones before them
// yet), or, for UDP, rarely, the checksum was wrong. A batch the kernel
// had merged (UDP_GRO) counts once. It is the socket's drop counter
// (SO_MEMINFO), which wraps at 2^32.
func (c *batchConn) QueueDrops() (uint64, error) {
	var info [unix.SK_MEMINFO_VARS]uint32
	var errno syscall.Errno
	err := c.raw.Control(func(fd uintptr) {
		size := uint32(unsafe.Sizeof(info))
		_, _, errno = unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_SOCKET, unix.SO_MEMINFO,
			uintptr(unsafe.Pointer(&info[0])), uintptr(unsafe.Pointer(&size)), 0)
	})
	if err == nil && errno != 0 {
		err = errno
	}
	if err != nil {
		return 0, fmt.Errorf("encap: %s: SO_MEMINFO: %w", c.name, err)
	}
	return uint64(info[unix.SK_MEMINFO_DROPS]), nil
}

// SetReadDeadline makes a blocked or future ReadBatch return an error
// wrapping os.ErrDeadlineExceeded after t; the zero time means none.
func (c *batchConn) SetReadDeadline(t time.Time) error { return c.file.SetReadDeadline(t) }

// SetWriteDeadline bounds how long WriteBatch waits for send buffer space
// on a socket on the netpoller. A conn that sends on a blocking socket
// (send-only conns, IP-in-IP) waits at most sendTimeout and refuses a
// deadline.
func (c *batchConn) SetWriteDeadline(t time.Time) error {
	if c.sendBlocks() {
		return fmt.Errorf("encap: %s: sends on a blocking socket, which waits at most %v: no deadline", c.name, sendTimeout)
	}
	return c.file.SetWriteDeadline(t)
}

// Close closes the sockets. A ReadBatch or WriteBatch blocked in one
// returns os.ErrClosed at once, and so does every later call. Close is idempotent: later
// calls return what the first one did.
func (c *batchConn) Close() error {
	c.closeOnce.Do(func() {
		c.closed.Store(true)
		if c.sendBlocks() {
			// Closing a file does not interrupt a system call blocked
			// on it; shutting the socket down for writing wakes it (an
			// unconnected socket still takes SEND_SHUTDOWN, and reports
			// ENOTCONN, which says nothing here).
			c.sendRaw.Control(func(fd uintptr) { _ = unix.Shutdown(int(fd), unix.SHUT_WR) })
		}
		var errs []error
		if c.send != c.file {
			errs = append(errs, c.send.Close())
		}
		errs = append(errs, c.file.Close())
		if err := errors.Join(errs...); err != nil {
			c.closeErr = fmt.Errorf("encap: %s: close: %w", c.name, err)
		}
	})
	return c.closeErr
}

// mapErr turns errors from a closed or closing file into os.ErrClosed
// (RawConn reports poll's internal "use of closed file", a racing
// syscall EBADF) and wraps the rest with the transport and operation.
func (c *batchConn) mapErr(op string, err error) error {
	if c.closed.Load() || errors.Is(err, os.ErrClosed) || errors.Is(err, unix.EBADF) {
		return os.ErrClosed
	}
	return fmt.Errorf("encap: %s %s: %w", c.name, op, err)
}
