// Package udpgen is a UDP packet generator and sink for measuring how
// many packets per second a path carries. The sender writes batches with
// sendmmsg from several sockets (several flows, so that nothing on the
// path can serialise them on one hash bucket); the sink reads batches
// with recvmmsg from as many SO_REUSEPORT sockets and counts, exactly,
// the packets of the current run. Search finds the highest offered rate
// that loses under 1 %.
//
// iperf3 has one sender thread that writes one datagram per system call;
// on a small VM that tops out near 100-150 kpps, well below what the
// kernel forwards, so a rate it reports says more about iperf3 than
// about the path.
package udpgen

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"podnet/internal/netnsutil"
)

// Packet layout: every payload starts with magic and the run number; the
// rest is zero. The sink counts only packets of its current run, so that
// stragglers of an earlier trial (still in a queue on the path) never
// count toward the next one.
const (
	magic = 0x706e7567 // "pnug"
	// MinPayload is the smallest payload: magic and run number.
	MinPayload = 8
	// MaxPayload keeps a packet within a 1500-byte MTU with IPv4 and UDP
	// headers and 50 bytes of VXLAN around it.
	MaxPayload = 1400
	// Batch is the number of packets per sendmmsg/recvmmsg call.
	Batch = 64
	// sockBuf is SO_{SND,RCV}BUFFORCE: bursts of a batch per socket must
	// not overflow the socket itself.
	sockBuf = 16 << 20
)

// Sink receives and counts generator packets on one UDP port.
type Sink struct {
	conns []*net.UDPConn
	run   atomic.Uint32
	pkts  atomic.Uint64
	wg    sync.WaitGroup
	// errs counts read errors other than the close at the end.
	errs atomic.Uint64
}

// Listen starts a sink on port in the network namespace at netnsPath
// ("" = this one) with sockets SO_REUSEPORT sockets (0 = 2), each read by
// its own goroutine.
func Listen(netnsPath string, port uint16, sockets int) (*Sink, error) {
	if sockets <= 0 {
		sockets = 2
	}
	s := &Sink{}
	err := netnsutil.Do(netnsPath, func() error {
		lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
				if serr == nil {
					serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, sockBuf)
				}
			})
			return errors.Join(err, serr)
		}}
		for range sockets {
			pc, err := lc.ListenPacket(nil, "udp4", fmt.Sprintf(":%d", port))
			if err != nil {
				return err
			}
			s.conns = append(s.conns, pc.(*net.UDPConn))
		}
		return nil
	})
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("udpgen: listen on port %d in %q: %w", port, netnsPath, err)
	}
	for _, c := range s.conns {
		s.wg.Add(1)
		go s.receive(c)
	}
	return s, nil
}

func (s *Sink) receive(c *net.UDPConn) {
	defer s.wg.Done()
	pc := ipv4.NewPacketConn(c)
	msgs := make([]ipv4.Message, Batch)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{make([]byte, 2048)}
	}
	for {
		n, err := pc.ReadBatch(msgs, 0)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.errs.Add(1)
			continue
		}
		run := s.run.Load()
		var got uint64
		for _, m := range msgs[:n] {
			b := m.Buffers[0][:m.N]
			if len(b) >= MinPayload && binary.BigEndian.Uint32(b) == magic && binary.BigEndian.Uint32(b[4:]) == run {
				got++
			}
		}
		s.pkts.Add(got)
	}
}

// Begin starts counting run from zero; packets of other runs are ignored.
func (s *Sink) Begin(run uint32) error {
	s.run.Store(run)
	s.pkts.Store(0)
	return nil
}

// Count returns the packets of the current run received so far.
func (s *Sink) Count() (uint64, error) { return s.pkts.Load(), nil }

// Received is Count for callers on the same host.
func (s *Sink) Received() uint64 { return s.pkts.Load() }

// Close stops the sink and waits for its goroutines.
func (s *Sink) Close() error {
	var errs []error
	for _, c := range s.conns {
		errs = append(errs, c.Close())
	}
	s.wg.Wait()
	return errors.Join(errs...)
}

// SendConfig is one sender run.
type SendConfig struct {
	// Netns is the sender's network namespace path; "" = this one.
	Netns string
	// Dst is the sink.
	Dst netip.AddrPort
	// Payload is the UDP payload size, MinPayload..MaxPayload.
	Payload int
	// Sockets is the number of sending sockets (flows), each driven by
	// its own goroutine. 0 = 2.
	Sockets int
	// Rate is the offered rate in packets per second over all sockets;
	// 0 sends as fast as the sockets take packets.
	Rate float64
	// Duration bounds the run. 0 = run until Packets are sent.
	Duration time.Duration
	// Packets, when > 0, stops the run after that many packets in all.
	Packets uint64
	// Run is written into every packet, for Sink.Begin.
	Run uint32
}

// SendReport is what a sender run did.
type SendReport struct {
	Sent    uint64
	Elapsed time.Duration
}

// PPS is the rate the sender achieved.
func (r SendReport) PPS() float64 { return float64(r.Sent) / r.Elapsed.Seconds() }

func (cfg *SendConfig) validate() error {
	if cfg.Payload < MinPayload || cfg.Payload > MaxPayload {
		return fmt.Errorf("udpgen: Payload %d: must be %d..%d bytes", cfg.Payload, MinPayload, MaxPayload)
	}
	if !cfg.Dst.IsValid() || !cfg.Dst.Addr().Is4() {
		return fmt.Errorf("udpgen: Dst %v: want an IPv4 address and port", cfg.Dst)
	}
	if cfg.Duration <= 0 && cfg.Packets == 0 {
		return errors.New("udpgen: neither Duration nor Packets bounds the run")
	}
	if cfg.Rate < 0 {
		return fmt.Errorf("udpgen: Rate %v: must be >= 0", cfg.Rate)
	}
	if cfg.Sockets <= 0 {
		cfg.Sockets = 2
	}
	return nil
}

// Send runs the generator and reports what it sent.
func Send(cfg SendConfig) (SendReport, error) {
	if err := cfg.validate(); err != nil {
		return SendReport{}, err
	}
	conns := make([]*net.UDPConn, 0, cfg.Sockets)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	err := netnsutil.Do(cfg.Netns, func() error {
		for range cfg.Sockets {
			c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(cfg.Dst))
			if err != nil {
				return err
			}
			conns = append(conns, c)
			if rc, err := c.SyscallConn(); err == nil {
				rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, sockBuf) })
			}
		}
		return nil
	})
	if err != nil {
		return SendReport{}, fmt.Errorf("udpgen: sockets to %s in %q: %w", cfg.Dst, cfg.Netns, err)
	}
	var (
		sent  atomic.Uint64
		quota atomic.Int64 // packets left when Packets bounds the run
		wg    sync.WaitGroup
		errc  = make(chan error, len(conns))
	)
	quota.Store(int64(cfg.Packets))
	start := time.Now()
	var deadline time.Time
	if cfg.Duration > 0 {
		deadline = start.Add(cfg.Duration)
	}
	perSocket := cfg.Rate / float64(len(conns))
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := send(c, &cfg, perSocket, start, deadline, &sent, &quota); err != nil {
				errc <- err
			}
		}()
	}
	wg.Wait()
	close(errc)
	rep := SendReport{Sent: sent.Load(), Elapsed: time.Since(start)}
	return rep, <-errc
}

// send drives one socket. Pacing is per batch: before each batch the
// goroutine sleeps until the time at which the packets it has sent so
// far are due at the offered rate.
func send(c *net.UDPConn, cfg *SendConfig, rate float64, start, deadline time.Time, sent *atomic.Uint64, quota *atomic.Int64) error {
	payload := make([]byte, cfg.Payload)
	binary.BigEndian.PutUint32(payload, magic)
	binary.BigEndian.PutUint32(payload[4:], cfg.Run)
	msgs := make([]ipv4.Message, Batch)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{payload}
	}
	pc := ipv4.NewPacketConn(c)
	var mine uint64
	for {
		now := time.Now()
		if !deadline.IsZero() && !now.Before(deadline) {
			return nil
		}
		n := Batch
		if cfg.Packets > 0 {
			left := quota.Add(-int64(n))
			if left < 0 {
				n += int(left)
				if n <= 0 {
					return nil
				}
			}
		}
		if rate > 0 {
			due := start.Add(time.Duration(float64(mine) / rate * float64(time.Second)))
			if d := due.Sub(now); d > 0 {
				time.Sleep(d)
			}
		}
		w, err := writeAll(pc, msgs[:n])
		mine += uint64(w)
		sent.Add(uint64(w))
		if err != nil {
			return fmt.Errorf("udpgen: sendmmsg to %s: %w", cfg.Dst, err)
		}
	}
}

// writeAll writes every message, retrying partial batches and waiting
// out a full socket buffer (ENOBUFS from a busy device queue).
func writeAll(pc *ipv4.PacketConn, msgs []ipv4.Message) (int, error) {
	done := 0
	for done < len(msgs) {
		n, err := pc.WriteBatch(msgs[done:], 0)
		done += max(n, 0)
		if err != nil {
			if errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.EAGAIN) {
				time.Sleep(20 * time.Microsecond)
				continue
			}
			// A connected UDP socket reports an earlier ICMP error
			// (nobody listening) on the next send: the sink is gone.
			return done, err
		}
	}
	return done, nil
}
