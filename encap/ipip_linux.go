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

// IPIPConfig configures ListenIPIP. The zero value is usable.
type IPIPConfig struct {
	// Local, if valid, binds the socket to this underlay IPv4 address: it
	// becomes the outer source of every packet sent, and only IP-in-IP
	// packets addressed to it are received. The zero Addr lets routing pick
	// the outer source per destination and receives IP-in-IP addressed to
	// any address of the namespace.
	Local netip.Addr

	// BatchSize is the most packets one ReadBatch returns and one sendmmsg
	// call carries. Zero means DefaultBatchSize.
	BatchSize int

	// SocketBuffer is the size asked for the socket's receive and send
	// buffers, in bytes. Zero means DefaultSocketBuffer. The FORCE options
	// are tried first (they need CAP_NET_ADMIN and ignore
	// net.core.rmem_max/wmem_max); without the capability the plain options
	// are used and the kernel caps them at the sysctl limits.
	SocketBuffer int
}

// IPIPConn sends inner IPv4 packets to other nodes inside IP-in-IP and
// receives IP-in-IP packets from them, in batches, on one raw
// IPPROTO_IPIP socket.
//
// The socket does not use IP_HDRINCL: on send the kernel builds the outer
// header from the destination and its routing table (protocol 4, TTL from
// net.ipv4.ip_default_ttl, TOS 0, outer source from Local or the route), so
// the caller passes the inner packet alone. On receive the raw socket
// delivers the outer header too; take it apart with DecapIPIP and check
// the outer source against the node set.
//
// Outer DF: the socket sets IP_MTU_DISCOVER to IP_PMTUDISC_DONT, so outer
// packets leave with DF clear and the kernel fragments those larger than
// the route's MTU (the receiving kernel reassembles them before the raw
// socket sees them). Path MTU is enforced one level up instead: the switch
// answers an inner packet that has DF set and is larger than underlay MTU
// − IPIPOverhead with ICMP fragmentation-needed (packet.BuildICMPError), as
// a kernel tunnel would. The price is that a path MTU smaller than the
// local link's is never learned; the underlay fragments instead of
// dropping. The simpler alternative, copying the inner DF into the outer
// header, would need IP_HDRINCL and our own outer header.
//
// Coexistence with the kernel's ipip module: when it is loaded, every
// namespace has a fallback device tunl0. If tunl0 (or another ipip device
// matching the peer) is up in the same namespace, the kernel decapsulates
// the same packets and delivers the inner ones itself as well; if nothing
// matches, it answers each packet with ICMP port unreachable. podnet's node
// namespace should have no up kernel ipip device.
//
// ReadBatch may be called from one goroutine at a time (calls are
// serialised), WriteBatch likewise; a read and a write may run at the same
// time. Close may be called from any goroutine.
type IPIPConn struct {
	file  *os.File
	raw   syscall.RawConn
	batch int
	local netip.Addr

	closeOnce sync.Once
	closed    atomic.Bool
	closeErr  error

	// readMu serialises ReadBatch and guards rhdrs, riovs, rcount, rn and
	// rerr, which readFn shares with it.
	readMu sync.Mutex
	rhdrs  []unix.Mmsghdr
	riovs  []unix.Iovec
	rcount int   // entries of rhdrs offered to recvmmsg
	rn     int   // entries filled by recvmmsg
	rerr   error // error from inside readFn
	// readFn is c.recvBatch bound once: a method value made per call
	// would allocate a closure on every ReadBatch.
	readFn func(fd uintptr) bool

	// writeMu serialises WriteBatch and guards the w* fields below, which
	// writeFn shares with it.
	writeMu sync.Mutex
	whdrs   []unix.Mmsghdr
	wiovs   []unix.Iovec
	wnames  []unix.RawSockaddrInet4
	windex  []int // windex[j] is the index in pkts of whdrs[j], for errors
	wpkts   [][]byte
	wdsts   []netip.Addr
	wcount  int // entries of whdrs filled for this chunk
	wdone   int // entries sent or refused so far
	wsent   int // packets the kernel accepted, over the whole WriteBatch
	werrs   []error
	wfatal  error // error that ends the WriteBatch (closed socket)
	writeFn func(fd uintptr) bool
}

// ListenIPIP opens a raw IP-in-IP socket in the calling thread's network
// namespace (use netnsutil.Do to open it elsewhere). It needs CAP_NET_RAW.
func ListenIPIP(cfg IPIPConfig) (*IPIPConn, error) {
	batch := cfg.BatchSize
	if batch == 0 {
		batch = DefaultBatchSize
	}
	if batch < 0 || batch > 1024 { // UIO_MAXIOV: the kernel's limit on vlen
		return nil, fmt.Errorf("encap: ipip: BatchSize %d outside [1, 1024]", batch)
	}
	if cfg.Local.IsValid() && !cfg.Local.Is4() {
		return nil, fmt.Errorf("encap: ipip: Local %s is not an IPv4 address", cfg.Local)
	}
	sockBuf := cfg.SocketBuffer
	if sockBuf == 0 {
		sockBuf = DefaultSocketBuffer
	}

	fd, err := underlaySocket("ipip", unix.SOCK_RAW, unix.IPPROTO_IPIP, sockBuf)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()
	if cfg.Local.IsValid() {
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: cfg.Local.As4()}); err != nil {
			return nil, fmt.Errorf("encap: ipip: bind %s: %w", cfg.Local, err)
		}
	}

	name := "ipip"
	if cfg.Local.IsValid() {
		name = "ipip:" + cfg.Local.String()
	}
	// fd is non-blocking, so os.NewFile registers it with the netpoller and
	// RawConn.Read/Write park the goroutine instead of a thread.
	f := os.NewFile(uintptr(fd), name)
	raw, err := f.SyscallConn()
	if err != nil {
		f.Close()
		ok = true // f owns fd now
		return nil, fmt.Errorf("encap: ipip: %w", err)
	}
	ok = true

	c := &IPIPConn{
		file:   f,
		raw:    raw,
		batch:  batch,
		local:  cfg.Local,
		rhdrs:  make([]unix.Mmsghdr, batch),
		riovs:  make([]unix.Iovec, batch),
		whdrs:  make([]unix.Mmsghdr, batch),
		wiovs:  make([]unix.Iovec, batch),
		wnames: make([]unix.RawSockaddrInet4, batch),
		windex: make([]int, batch),
	}
	// Each header points at its own iovec (and, for sends, its own
	// address) for the life of the conn; per call only the iovec's base
	// and length and the address change.
	for i := range batch {
		c.rhdrs[i].Hdr.Iov = &c.riovs[i]
		c.rhdrs[i].Hdr.SetIovlen(1)
		c.whdrs[i].Hdr.Iov = &c.wiovs[i]
		c.whdrs[i].Hdr.SetIovlen(1)
		c.whdrs[i].Hdr.Name = (*byte)(unsafe.Pointer(&c.wnames[i]))
		c.whdrs[i].Hdr.Namelen = unix.SizeofSockaddrInet4
		c.wnames[i].Family = unix.AF_INET
	}
	c.readFn = c.recvBatch
	c.writeFn = c.sendBatch
	return c, nil
}

// BatchSize is the most packets one ReadBatch returns; size the caller's
// vectors to it.
func (c *IPIPConn) BatchSize() int { return c.batch }

// Local returns the address the socket is bound to, or the zero Addr.
func (c *IPIPConn) Local() netip.Addr { return c.local }

// SetReadDeadline makes a blocked or future ReadBatch return an error
// wrapping os.ErrDeadlineExceeded after t; the zero time means none.
func (c *IPIPConn) SetReadDeadline(t time.Time) error { return c.file.SetReadDeadline(t) }

// SetWriteDeadline bounds how long WriteBatch waits for send buffer space.
func (c *IPIPConn) SetWriteDeadline(t time.Time) error { return c.file.SetWriteDeadline(t) }

// Close closes the socket. A ReadBatch or WriteBatch blocked in it returns
// os.ErrClosed, and so does every later call. Close is idempotent: later
// calls return what the first one did.
func (c *IPIPConn) Close() error {
	c.closeOnce.Do(func() {
		c.closed.Store(true)
		if err := c.file.Close(); err != nil {
			c.closeErr = fmt.Errorf("encap: ipip: close: %w", err)
		}
	})
	return c.closeErr
}

// ReadBatch reads up to min(len(bufs), len(sizes), BatchSize()) IP-in-IP
// packets, each (outer header and inner packet) into bufs[i][offset:], and
// sets sizes[i] to its length. It blocks until at least one packet is
// there, then takes everything queued up to the batch size in one
// recvmmsg. A packet longer than its buffer is cut short (the rest is
// lost); DecapIPIP reports it as truncated-outer, so size the buffers for
// 64 KiB (packet.BufferSize) since GRO on the underlay NIC can deliver
// merged packets far larger than the MTU.
//
// It allocates nothing in steady state. Every bufs[i] used must have room
// after offset.
func (c *IPIPConn) ReadBatch(bufs [][]byte, sizes []int, offset int) (int, error) {
	c.readMu.Lock()
	defer c.readMu.Unlock()
	n := min(len(bufs), len(sizes), c.batch)
	if n == 0 {
		return 0, nil
	}
	for i := range n {
		b := bufs[i]
		if offset < 0 || offset >= len(b) {
			c.clearReadIovs(i)
			return 0, fmt.Errorf("encap: ipip read: buffer %d (len %d) has no room after offset %d", i, len(b), offset)
		}
		c.riovs[i].Base = &b[offset]
		c.riovs[i].SetLen(len(b) - offset)
	}
	c.rcount, c.rn, c.rerr = n, 0, nil
	err := c.raw.Read(c.readFn)
	got, rerr := c.rn, c.rerr
	for i := range got {
		sizes[i] = int(c.rhdrs[i].Len)
	}
	c.clearReadIovs(n)
	c.rerr = nil
	if got > 0 {
		return got, nil
	}
	if rerr != nil {
		return 0, rerr
	}
	if err != nil {
		return 0, c.mapErr("read", err)
	}
	return 0, nil
}

// clearReadIovs drops the references to the caller's buffers, so the conn
// does not keep them alive or point into them after the call (the
// use-after-free hygiene wireguard-go's clearPointers is for).
func (c *IPIPConn) clearReadIovs(n int) {
	for i := range n {
		c.riovs[i].Base = nil
	}
}

// recvBatch is the RawConn read callback: false means "wait for
// readability and call again", true means done.
func (c *IPIPConn) recvBatch(fd uintptr) bool {
	for {
		// No msg_name: the outer header in the data carries the source.
		// Flags 0: the socket is non-blocking, so recvmmsg stops at the
		// first empty read and returns what it has.
		r, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, fd,
			uintptr(unsafe.Pointer(&c.rhdrs[0])), uintptr(c.rcount), 0, 0, 0)
		switch errno {
		case 0:
			c.rn = int(r)
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		default:
			c.rerr = c.mapErr("read", errno)
			return true
		}
	}
}

// WriteBatch sends each inner IPv4 packet pkts[i] to the node dsts[i]
// inside IP-in-IP; the kernel adds the outer header. It sends in sendmmsg
// calls of up to BatchSize() packets, waits for buffer space when the
// socket is full, and returns how many packets the kernel accepted. A
// packet the kernel refuses (no route to its node, too big, an empty
// packet, a non-IPv4 destination) is skipped and its error joined into the
// returned error; the rest are still sent. After Close it returns
// os.ErrClosed.
//
// It allocates nothing unless a packet is refused. len(dsts) must be at
// least len(pkts).
func (c *IPIPConn) WriteBatch(pkts [][]byte, dsts []netip.Addr) (int, error) {
	if len(dsts) < len(pkts) {
		return 0, fmt.Errorf("encap: ipip write: %d destinations for %d packets", len(dsts), len(pkts))
	}
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	c.wpkts, c.wdsts = pkts, dsts
	c.wsent, c.wfatal = 0, nil
	c.werrs = c.werrs[:0]
	for start := 0; start < len(pkts) && c.wfatal == nil; {
		start = c.fillWrite(start)
		if c.wcount == 0 {
			continue
		}
		c.wdone = 0
		if err := c.raw.Write(c.writeFn); err != nil && c.wfatal == nil {
			c.wfatal = c.mapErr("write", err)
		}
		c.clearWriteIovs()
	}
	sent := c.wsent
	var err error
	if c.wfatal != nil {
		err = c.wfatal
	} else if len(c.werrs) > 0 {
		err = errors.Join(c.werrs...)
	}
	clear(c.werrs)
	c.wpkts, c.wdsts, c.wfatal = nil, nil, nil
	return sent, err
}

// fillWrite fills whdrs with the next chunk of up to batch packets from
// wpkts[start:] and returns where the next chunk starts. Packets that can
// not be sent at all are refused here without a syscall.
func (c *IPIPConn) fillWrite(start int) int {
	c.wcount = 0
	i := start
	for ; i < len(c.wpkts) && c.wcount < c.batch; i++ {
		p, dst := c.wpkts[i], c.wdsts[i]
		if len(p) == 0 {
			c.werrs = append(c.werrs, fmt.Errorf("encap: ipip write: packet %d is empty", i))
			continue
		}
		if !dst.Is4() {
			c.werrs = append(c.werrs, fmt.Errorf("encap: ipip write: packet %d: destination %s is not IPv4", i, dst))
			continue
		}
		j := c.wcount
		c.wiovs[j].Base = &p[0]
		c.wiovs[j].SetLen(len(p))
		c.wnames[j].Addr = dst.As4()
		c.windex[j] = i
		c.wcount++
	}
	return i
}

func (c *IPIPConn) clearWriteIovs() {
	for j := range c.wcount {
		c.wiovs[j].Base = nil
	}
}

// sendBatch is the RawConn write callback. sendmmsg reports an error only
// when the first message fails (after that it returns the count sent and
// the error is lost), so each failure is pinned on whdrs[wdone], that
// packet is skipped and the rest are retried.
func (c *IPIPConn) sendBatch(fd uintptr) bool {
	for c.wdone < c.wcount {
		r, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, fd,
			uintptr(unsafe.Pointer(&c.whdrs[c.wdone])), uintptr(c.wcount-c.wdone), 0, 0, 0)
		switch errno {
		case 0:
			c.wdone += int(r)
			c.wsent += int(r)
		case unix.EINTR:
		case unix.EAGAIN:
			return false // socket buffer full: wait for POLLOUT
		case unix.EBADF:
			c.wfatal = os.ErrClosed
			return true
		default:
			i := c.windex[c.wdone]
			c.werrs = append(c.werrs, fmt.Errorf("encap: ipip write: packet %d to %s: %w", i, c.wdsts[i], errno))
			c.wdone++
		}
	}
	return true
}

// mapErr turns errors from a closed or closing file into os.ErrClosed
// (RawConn reports poll's internal "use of closed file" instead), and
// wraps the rest with the operation.
func (c *IPIPConn) mapErr(op string, err error) error {
	if c.closed.Load() || errors.Is(err, os.ErrClosed) || errors.Is(err, unix.EBADF) {
		return os.ErrClosed
	}
	return fmt.Errorf("encap: ipip %s: %w", op, err)
}
