// Package tap opens Linux TAP devices for pod ports: with IFF_VNET_HDR and
// TUNSETOFFLOAD so the kernel hands us (and accepts from us) TSO
// superframes with partial checksums, or in a plain mode through
// github.com/songgao/water with one MTU-sized frame per read. The same
// offload mode opens the host port's TUN (Config.L3): IPv4 packets
// behind the virtio-net header instead of Ethernet frames.
//
// Reads and writes use the batch shape of wireguard-go's tun.Device: the
// caller owns the buffers and passes the headroom as offset.
package tap

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"github.com/songgao/water"
	"golang.org/x/sys/unix"

	"podnet/internal/queuedrops"
	"podnet/internal/turn"
)

// Config says how to open a TAP.
type Config struct {
	// Name is the interface name; required.
	Name string
	// Offload opens the device with a virtio-net header in front of every
	// frame and TSO/checksum offloads on. false selects the plain mode.
	Offload bool
	// Persist keeps the device when the fd closes, so a restarted daemon
	// can attach again. Attach leaves the persist flag as it finds it.
	Persist bool
	// L3 opens a TUN (IP packets, no link header) instead of a TAP. It
	// needs Offload.
	L3 bool
	// ReadUDPSuperframes lets the kernel hand the reader UDP superframes
	// (GSO_UDP_L4) too, where it has USO (UDPSegmentation): a burst of a
	// flow's datagrams is then read once instead of once per datagram. The
	// reader must cut them for every consumer that cannot take them; the
	// host TUN's reader does (the switch's shape).
	ReadUDPSuperframes bool
}

// Device is an open TAP fd.
type Device struct {
	name    string
	offload bool
	uso     bool // the kernel takes GSO_UDP_L4 superframes we write
	readUSO bool // and hands us those its side sends (ReadUDPSuperframes)
	file    *os.File
	raw     syscall.RawConn

	// Read state, owned by the single reader goroutine. readFn is built once
	// so that Read does not allocate a closure per call.
	rbufs  [][]byte
	rsizes []int
	roff   int
	rn     int
	rerr   error
	readFn func(fd uintptr) bool
	// turn, when set (SetTurn), is taken by every read that returns frames
	// and held by the caller until it has forwarded them; TryRead needs it.
	turn    *turn.Turn
	hasTurn bool // Read's callback holds turn

	// fd is file's descriptor, used directly by writers. closeMu guards
	// closed; writers hold it shared so Close cannot release the number
	// while a write is using it.
	fd      int
	closeMu sync.RWMutex
	closed  bool
}

// offloadFlags are what we can take from the kernel: partial checksums and
// TCP segmentation offload for IPv4 and IPv6. UDP segmentation (USO) is left
// off for reads unless Config.ReadUDPSuperframes asks for it, because every
// consumer of a UDP superframe would have to split it; see probeUSO for
// writes.
const offloadFlags = unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6

// usoFlags turn on UDP segmentation offload (Linux 6.2; the kernel
// takes TUN_F_USO4 only with TUN_F_USO6).
const usoFlags = unix.TUN_F_USO4 | unix.TUN_F_USO6

// probeUSO reports whether the kernel knows UDP segmentation offload for
// TUN/TAP devices. The same kernels accept a GSO_UDP_L4 virtio header on
// write (virtio_net_hdr_to_skb learnt it with TUN_F_USO4), so a writer may
// hand one superframe of datagrams to the device. The probe turns USO on,
// which the kernel refuses with EINVAL if it does not know it; Open then
// sets the flags back to offloadFlags.
func probeUSO(fd int) bool {
	return unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, offloadFlags|usoFlags) == nil
}

// Open creates the TAP named cfg.Name in the calling thread's network
// namespace, or attaches to it when a persistent one already exists there.
func Open(cfg Config) (*Device, error) {
	if cfg.Name == "" {
		return nil, errors.New("tap: Config.Name is required")
	}
	if !cfg.Offload {
		if cfg.L3 {
			return nil, fmt.Errorf("tun %q: a TUN is opened only with offloads", cfg.Name)
		}
		return openPlain(cfg)
	}
	kind := uint16(unix.IFF_TAP)
	if cfg.L3 {
		kind = unix.IFF_TUN
	}
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()
	ifr, err := unix.NewIfreq(cfg.Name)
	if err != nil {
		return nil, fmt.Errorf("tap %q: %w", cfg.Name, err)
	}
	ifr.SetUint16(kind | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		return nil, fmt.Errorf("tap %q: TUNSETIFF: %w", cfg.Name, err)
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, vnetHdrLen); err != nil {
		return nil, fmt.Errorf("tap %q: TUNSETVNETHDRSZ: %w", cfg.Name, err)
	}
	uso := probeUSO(fd)
	flags := offloadFlags
	if uso && cfg.ReadUDPSuperframes {
		flags |= usoFlags
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, flags); err != nil {
		return nil, fmt.Errorf("tap %q: TUNSETOFFLOAD: %w", cfg.Name, err)
	}
	if cfg.Persist {
		if err := unix.IoctlSetInt(fd, unix.TUNSETPERSIST, 1); err != nil {
			return nil, fmt.Errorf("tap %q: TUNSETPERSIST: %w", cfg.Name, err)
		}
	}
	d, err := newDevice(cfg.Name, true, os.NewFile(uintptr(fd), cfg.Name))
	if err != nil {
		return nil, err
	}
	d.uso = uso
	d.readUSO = uso && cfg.ReadUDPSuperframes
	ok = true
	return d, nil
}

// vnetHdrLen is sizeof(struct virtio_net_hdr): no mergeable rx buffers.
const vnetHdrLen = 10

func openPlain(cfg Config) (*Device, error) {
	ifce, err := water.New(water.Config{
		DeviceType:             water.TAP,
		PlatformSpecificParams: water.PlatformSpecificParams{Name: cfg.Name, Persist: cfg.Persist},
	})
	if err != nil {
		return nil, fmt.Errorf("tap %q (plain): %w", cfg.Name, err)
	}
	f, isFile := ifce.ReadWriteCloser.(*os.File)
	if !isFile {
		ifce.Close()
		return nil, fmt.Errorf("tap %q (plain): water returned %T, want *os.File", cfg.Name, ifce.ReadWriteCloser)
	}
	return newDevice(cfg.Name, false, f)
}

func newDevice(name string, offload bool, f *os.File) (*Device, error) {
	raw, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("tap %q: %w", name, err)
	}
	d := &Device{name: name, offload: offload, file: f, raw: raw}
	// Not f.Fd(): it would switch the fd to blocking mode and take it off
	// the netpoller.
	raw.Control(func(fd uintptr) { d.fd = int(fd) })
	d.readFn = d.readBatch
	return d, nil
}

// Name is the interface name the device was opened with.
func (d *Device) Name() string { return d.name }

// Offload reports whether every frame carries a virtio-net header.
func (d *Device) Offload() bool { return d.offload }

// UDPSegmentation reports whether frames written may be GSO_UDP_L4
// superframes (an offload device on a kernel with USO).
func (d *Device) UDPSegmentation() bool { return d.uso }

// ReadsUDPSuperframes reports whether frames read may be GSO_UDP_L4
// superframes: Config.ReadUDPSuperframes on a kernel with USO.
func (d *Device) ReadsUDPSuperframes() bool { return d.readUSO }

// SetPersist turns the persist flag on or off; turning it off before Close
// makes the kernel delete the device when the fd closes.
func (d *Device) SetPersist(on bool) error {
	v := 0
	if on {
		v = 1
	}
	var ierr error
	err := d.raw.Control(func(fd uintptr) {
		ierr = unix.IoctlSetInt(int(fd), unix.TUNSETPERSIST, v)
	})
	if err == nil {
		err = ierr
	}
	if err != nil {
		return fmt.Errorf("tap %q: TUNSETPERSIST %d: %w", d.name, v, err)
	}
	return nil
}

// QueueDrops returns how many frames the kernel dropped on their way to
// the device's reader because its queue (txqueuelen frames) was full:
// sent into the device (by the pod behind a TAP, by the node into a TUN)
// faster than the reader took them. That is the device's tx_dropped,
// which the reader never sees otherwise, read wherever the device is now
// (queuedrops.TunLocation).
func (d *Device) QueueDrops() (uint64, error) {
	d.closeMu.RLock()
	if d.closed {
		d.closeMu.RUnlock()
		return 0, os.ErrClosed
	}
	nsfd, name, err := queuedrops.TunLocation(d.fd)
	d.closeMu.RUnlock()
	if err == nil {
		var n uint64
		if n, err = queuedrops.TunTxDropped(nsfd, name); err == nil {
			return n, nil
		}
	}
	return 0, fmt.Errorf("tap %q: queue drops: %w", d.name, err)
}

// Read reads up to len(bufs) frames, each into bufs[i][offset:], and sets
// sizes[i]. It blocks until at least one frame is there, then keeps reading
// until the device has no more (EAGAIN) or the batch is full, so one wake-up
// drains a burst. With offload on each frame starts with its 10-byte
// virtio-net header. Only one goroutine may call Read.
//
// With a turn set (SetTurn), Read takes it before reading, gives it back
// before it parks, and returns holding it when it returns frames: the
// caller calls Done on the turn once they are forwarded.
func (d *Device) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	d.rbufs, d.rsizes, d.roff, d.rn, d.rerr = bufs, sizes, offset, 0, nil
	err := d.raw.Read(d.readFn)
	n, rerr := d.rn, d.rerr
	d.rbufs, d.rsizes = nil, nil
	if d.hasTurn && n == 0 {
		d.hasTurn = false
		d.turn.Done()
	}
	d.hasTurn = false
	if n > 0 {
		return n, nil
	}
	if rerr != nil {
		return 0, rerr
	}
	if err != nil {
		// RawConn reports a closed file with an internal poll error, not
		// os.ErrClosed; our own flag says what happened.
		if d.isClosed() {
			return 0, os.ErrClosed
		}
		return 0, mapClosed(fmt.Errorf("tap %q: read: %w", d.name, err))
	}
	return 0, nil
}

// SetTurn makes reads take turns with other goroutines on t (see Read and
// TryRead). Call it before the first Read.
func (d *Device) SetTurn(t *turn.Turn) { d.turn = t }

// TryRead reads the frames queued now, without waiting, for a goroutine
// other than the device's reader: it returns 0 when the device is empty or
// no turn is set, and turn.ErrHeld when another goroutine holds the turn.
// When it returns frames it holds the turn, and the caller calls Done on
// it once they are forwarded. It does not allocate.
func (d *Device) TryRead(bufs [][]byte, sizes []int, offset int) (int, error) {
	if d.turn == nil {
		return 0, nil
	}
	if !d.turn.Try() {
		return 0, turn.ErrHeld
	}
	d.closeMu.RLock()
	defer d.closeMu.RUnlock()
	n := 0
	var err error
	for !d.closed && n < len(bufs) {
		m, rerr := rawRead(d.fd, bufs[n][offset:])
		if rerr == unix.EINTR {
			continue
		}
		if rerr != nil {
			if rerr != unix.EAGAIN {
				err = mapClosed(fmt.Errorf("tap %q: read: %w", d.name, rerr))
			}
			break
		}
		if m > 0 {
			sizes[n] = m
			n++
		}
	}
	if n == 0 {
		d.turn.Done()
	}
	return n, err
}

func (d *Device) isClosed() bool {
	d.closeMu.RLock()
	defer d.closeMu.RUnlock()
	return d.closed
}

// readBatch is the RawConn callback: it returns false to wait for
// readability, true when done. With a turn it reads only while holding
// it, and gives it back before returning false (parking).
func (d *Device) readBatch(fd uintptr) bool {
	if d.turn != nil && !d.hasTurn {
		d.turn.Take()
		d.hasTurn = true
	}
	for d.rn < len(d.rbufs) {
		n, err := rawRead(int(fd), d.rbufs[d.rn][d.roff:])
		if err != nil {
			if err == unix.EAGAIN || err == unix.EINTR {
				if d.rn == 0 && d.hasTurn {
					d.hasTurn = false
					d.turn.Done()
				}
				return d.rn > 0
			}
			d.rerr = mapClosed(fmt.Errorf("tap %q: read: %w", d.name, err))
			return true
		}
		if n == 0 {
			continue
		}
		d.rsizes[d.rn] = n
		d.rn++
	}
	return true
}

// Write writes each bufs[i][offset:] as one frame (with its virtio-net
// header first when offload is on) and returns how many were written. A
// frame the kernel refuses is skipped and its error joined into the result.
// Write is safe to call from several goroutines.
func (d *Device) Write(bufs [][]byte, offset int) (int, error) {
	var errs []error
	written := 0
	for _, b := range bufs {
		if err := d.WriteOne(b[offset:]); err != nil {
			if errors.Is(err, os.ErrClosed) {
				return written, err
			}
			errs = append(errs, err)
			continue
		}
		written++
	}
	return written, errors.Join(errs...)
}

// WriteOne writes a single frame b (virtio header first when offload is
// on). It does not allocate and is safe for concurrent use: writes to a TAP
// fd never block (the kernel drops when the pod's backlog is full), so the
// fd is used directly, under a read lock that Close takes exclusively so
// the number cannot be closed and reused under a writer.
func (d *Device) WriteOne(b []byte) error {
	d.closeMu.RLock()
	defer d.closeMu.RUnlock()
	if d.closed {
		return os.ErrClosed
	}
	for {
		err := rawWrite(d.fd, b)
		switch err {
		case nil:
			return nil
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return errQueueFull
		}
		return fmt.Errorf("tap %q: write: %w", d.name, err)
	}
}

var errQueueFull = errors.New("tap queue full")

// Close closes the fd. A persistent device stays in the kernel.
func (d *Device) Close() error {
	d.closeMu.Lock()
	defer d.closeMu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	return d.file.Close()
}

func mapClosed(err error) error {
	if errors.Is(err, os.ErrClosed) || errors.Is(err, unix.EBADFD) || errors.Is(err, unix.EBADF) {
		return os.ErrClosed
	}
	return err
}

// rawRead and rawWrite are read(2) and write(2) on the non-blocking fd,
// issued without telling Go's scheduler (unix.RawSyscall). Entering an
// ordinary system call wakes the runtime's monitor thread (sysmon) when
// it sleeps deeply after an idle spell: a second thread woken for each
// request a pod sends (docs/performance.md, "Wake-ups"). Neither call can block: a read of an empty device returns
// EAGAIN and copies at most one frame. A write runs the receiving side's
// input path for that one frame before it returns, typically tens of
// microseconds for a 64 KiB superframe, and while it runs it keeps its P
// and holds off a garbage collector's stop-the-world; the kernel may also
// run pending softirq work at its end, which is bounded to about 2 ms.
// gVisor's link endpoints write packets to their fds the same way.
func rawRead(fd int, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func rawWrite(fd int, b []byte) error {
	if len(b) == 0 {
		return nil
	}
	_, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if e != 0 {
		return e
	}
	return nil
}
