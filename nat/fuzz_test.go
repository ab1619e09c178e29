package nat

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"podnet/internal/netnsutil"
	"podnet/internal/packet"
)

// nextDelivered returns the next packet NAT delivers, or fails.
func nextDelivered(t testing.TB, ch chan []byte, what string) packet.IPv4 {
	t.Helper()
	select {
	case b := <-ch:
		return packet.IPv4(b)
	case <-time.After(10 * time.Second):
		t.Fatalf("no %s delivered", what)
		return nil
	}
}

// FuzzDatagramReply: a remote in R sends arbitrary payloads back to the
// host sockets of two live flows (UDP from R's port 5000; ICMP echo
// replies with an arbitrary sequence number, through a raw socket), as
// anyone on the underlay could. Each must reach the pod as exactly one
// valid packet (header and transport checksums) from the remote to the
// pod's own port or echo identifier, carrying the payload unchanged.
func FuzzDatagramReply(f *testing.F) {
	f.Add(false, []byte("hello"), uint16(0))
	f.Add(true, []byte("ping payload"), uint16(7))
	f.Add(false, []byte{}, uint16(0))
	f.Add(true, []byte{}, uint16(0xffff))
	f.Add(false, bytes.Repeat([]byte{0xee}, 3000), uint16(0))
	f.Add(true, bytes.Repeat([]byte{0x11}, 1600), uint16(1))

	tp := newTopo(f)
	n, d := newNAT(f, tp, Config{UDP: time.Hour, UDPAssured: time.Hour, ICMP: time.Hour})
	ch := capture(d)
	pod := netip.AddrPortFrom(podAddr, 4000)
	const podEchoID = 0x4242
	remote := netip.AddrPortFrom(remoteAddr, 5000)
	_, pc := tp.listen(f, "udp4", remote.String())
	f.Cleanup(func() { pc.Close() })

	// Open the UDP flow and learn its host socket's address at R.
	n.Handle(buildUDP(pod, remote, []byte("open")), 0)
	pc.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 100)
	nr, hostUDP, err := pc.ReadFrom(buf)
	if err != nil || string(buf[:nr]) != "open" {
		f.Fatalf("R did not receive the pod's first datagram: %q, %v", buf[:nr], err)
	}
	// Open the echo flow; R's kernel answers the request itself.
	n.Handle(buildEcho(podAddr, remoteAddr, packet.ICMPEcho, podEchoID, 1, []byte("open")), 0)
	if ip := nextDelivered(f, ch, "echo reply from R's kernel"); ip.Protocol() != packet.ProtoICMP {
		f.Fatalf("first delivery: protocol %d, want ICMP", ip.Protocol())
	}
	e, ok := findEntry(n, "icmp", netip.AddrPortFrom(remoteAddr, 0))
	if !ok || !e.Node.IsValid() {
		f.Fatalf("no echo flow: %+v", n.Entries())
	}
	hostEchoID := e.Node.Port()
	var raw int
	if err := netnsutil.Do(tp.r, func() (err error) {
		raw, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
		return err
	}); err != nil {
		f.Fatalf("raw ICMP socket in R: %v", err)
	}
	f.Cleanup(func() { unix.Close(raw) })
	shutdownRead(f, raw) // it only sends
	toNode := &unix.SockaddrInet4{Addr: e.Node.Addr().As4()}

	f.Fuzz(func(t *testing.T, icmp bool, payload []byte, seq uint16) {
		const maxPayload = 65507 - packet.ICMPHeaderLen
		if len(payload) > maxPayload {
			payload = payload[:maxPayload]
		}
		if !icmp {
			if _, err := pc.WriteTo(payload, hostUDP); err != nil {
				t.Fatalf("R: send %d bytes: %v", len(payload), err)
			}
			ip := nextDelivered(t, ch, "UDP reply")
			if err := checkDelivered(ip); err != nil {
				t.Fatalf("UDP reply of %d bytes: %v", len(payload), err)
			}
			u := packet.UDP(ip.Payload())
			if ip.Protocol() != packet.ProtoUDP || ip.Src() != remoteAddr || ip.Dst() != podAddr ||
				u.SrcPort() != remote.Port() || u.DstPort() != pod.Port() {
				t.Fatalf("UDP reply %v:%d -> %v:%d (proto %d), want %v -> %v", ip.Src(), u.SrcPort(), ip.Dst(), u.DstPort(), ip.Protocol(), remote, pod)
			}
			if !bytes.Equal(u[packet.UDPHeaderLen:], payload) {
				t.Fatalf("UDP reply carries %d bytes, not the %d sent", len(u)-packet.UDPHeaderLen, len(payload))
			}
			return
		}
		m := make([]byte, packet.ICMPHeaderLen+len(payload))
		m[0] = packet.ICMPEchoReply
		binary.BigEndian.PutUint16(m[4:], hostEchoID)
		binary.BigEndian.PutUint16(m[6:], seq)
		copy(m[packet.ICMPHeaderLen:], payload)
		packet.ICMP(m).SetChecksum(packet.Checksum(m, 0))
		if err := unix.Sendto(raw, m, 0, toNode); err != nil {
			t.Fatalf("R: send echo reply of %d bytes: %v", len(payload), err)
		}
		ip := nextDelivered(t, ch, "echo reply")
		if err := checkDelivered(ip); err != nil {
			t.Fatalf("echo reply of %d bytes: %v", len(payload), err)
		}
		r := packet.ICMP(ip.Payload())
		if ip.Protocol() != packet.ProtoICMP || ip.Src() != remoteAddr || ip.Dst() != podAddr || r.Type() != packet.ICMPEchoReply || r.Code() != 0 {
			t.Fatalf("echo reply %v -> %v proto %d type %d/%d, want an echo reply %v -> %v", ip.Src(), ip.Dst(), ip.Protocol(), r.Type(), r.Code(), remoteAddr, podAddr)
		}
		if id, s := binary.BigEndian.Uint16(r[4:]), binary.BigEndian.Uint16(r[6:]); id != podEchoID || s != seq {
			t.Fatalf("echo reply id/seq %#x/%d, want %#x/%d", id, s, podEchoID, seq)
		}
		if !bytes.Equal(r[packet.ICMPHeaderLen:], payload) {
			t.Fatalf("echo reply carries %d bytes, not the %d sent", len(r)-packet.ICMPHeaderLen, len(payload))
		}
	})
}

// shutdownRead stops a send-only raw socket from queueing a copy of every
// ICMP packet R sees.
func shutdownRead(t testing.TB, fd int) {
	t.Helper()
	// A raw socket has no shutdown of its receive side; a filter that
	// accepts nothing keeps its queue empty instead.
	prog := []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: 0}}
	fp := unix.SockFprog{Len: 1, Filter: &prog[0]}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fp); err != nil {
		t.Fatalf("attach filter: %v", err)
	}
}

// recvErrOOB is the control message the kernel queues with an ICMP error
// on an IP_RECVERR socket: struct sock_extended_err and, with an
// offender, its sockaddr_in.
func recvErrOOB(origin, typ, code uint8, info uint32, offender netip.Addr) []byte {
	data := make([]byte, 16+unix.SizeofSockaddrInet4)
	data[4], data[5], data[6] = origin, typ, code
	binary.NativeEndian.PutUint32(data[0:], uint32(unix.EHOSTUNREACH))
	binary.NativeEndian.PutUint32(data[8:], info)
	if offender.IsValid() {
		binary.NativeEndian.PutUint16(data[16:], unix.AF_INET)
		a := offender.As4()
		copy(data[20:24], a[:])
	}
	oob := make([]byte, unix.CmsgSpace(len(data)))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level, h.Type = unix.IPPROTO_IP, unix.IP_RECVERR
	h.SetLen(unix.CmsgLen(len(data)))
	copy(oob[unix.CmsgLen(0):], data)
	return oob
}

// FuzzICMPErrorToPod feeds icmpFromErrQueue, which turns what a flow's
// socket finds on its error queue into an ICMP error for the pod, with
// arbitrary errors (origin, type, code, MTU, offender), arbitrary quotes
// and, when rawOOB is given, arbitrary control bytes. An error of ICMP
// origin becomes at most one packet: a valid ICMP error of the same type
// and code from the offender (else the remote) to the pod, quoting the
// pod's own datagram: its addresses, its port or echo identifier, then
// the kernel's quote. Anything it cannot translate is counted, never
// delivered half-built.
func FuzzICMPErrorToPod(f *testing.F) {
	f.Add(false, uint16(4000), uint16(53), uint32(0x0afc0002), []byte("query"), uint8(unix.SO_EE_ORIGIN_ICMP), uint8(3), uint8(3), uint32(0), uint32(0x0afc0002), true, []byte{})
	f.Add(true, uint16(0x4242), uint16(0), uint32(0x08080808), []byte{8, 0, 0, 0, 0, 7, 0, 1, 'x'}, uint8(unix.SO_EE_ORIGIN_ICMP), uint8(11), uint8(0), uint32(0), uint32(0x0a000001), true, []byte{})
	f.Add(false, uint16(1), uint16(2), uint32(0x01020304), bytes.Repeat([]byte{9}, 700), uint8(unix.SO_EE_ORIGIN_ICMP), uint8(3), uint8(4), uint32(1280), uint32(0), false, []byte{})
	f.Add(false, uint16(1), uint16(2), uint32(0x01020304), []byte{}, uint8(unix.SO_EE_ORIGIN_LOCAL), uint8(0), uint8(0), uint32(1400), uint32(0), false, []byte{})
	f.Add(true, uint16(9), uint16(0), uint32(0x01020304), []byte{0, 0}, uint8(unix.SO_EE_ORIGIN_ICMP), uint8(3), uint8(1), uint32(0), uint32(0), false, []byte{1, 2, 3})

	var got [][]byte
	n := &NAT{cfg: Config{Deliver: func(buf []byte, off int, _ packet.VirtioNetHdr) { got = append(got, append([]byte(nil), buf[off:]...)) }}}
	f.Fuzz(func(t *testing.T, icmp bool, podPort, remotePort uint16, remote uint32, quote []byte,
		origin, typ, code uint8, info, offender uint32, withOffender bool, rawOOB []byte) {
		got = got[:0]
		dropsBefore := n.c.drops[DropICMPError].Load()
		var ra [4]byte
		binary.BigEndian.PutUint32(ra[:], remote)
		k := flowKey{proto: packet.ProtoUDP, pod: netip.AddrPortFrom(podAddr, podPort), remote: netip.AddrPortFrom(netip.AddrFrom4(ra), remotePort)}
		if icmp {
			k.proto, k.remote = packet.ProtoICMP, netip.AddrPortFrom(k.remote.Addr(), 0)
		}
		var off netip.Addr
		if withOffender {
			var oa [4]byte
			binary.BigEndian.PutUint32(oa[:], offender)
			off = netip.AddrFrom4(oa)
		}
		oob := rawOOB
		if len(oob) == 0 {
			oob = recvErrOOB(origin, typ, code, info, off)
		}
		n.icmpFromErrQueue(&flow{key: k}, quote, oob)

		if len(got) > 1 {
			t.Fatalf("%d packets delivered for one error", len(got))
		}
		drops := n.c.drops[DropICMPError].Load() - dropsBefore
		if len(rawOOB) > 0 {
			// Only that nothing half-built is delivered can be said.
			if len(got) == 1 {
				if err := checkDelivered(got[0]); err != nil {
					t.Fatalf("delivered from raw control bytes: %v", err)
				}
			}
			return
		}
		if origin != unix.SO_EE_ORIGIN_ICMP {
			if len(got) != 0 || drops != 0 {
				t.Fatalf("origin %d (not ICMP): %d delivered, %d counted; want neither", origin, len(got), drops)
			}
			return
		}
		if len(got) == 0 {
			if drops != 1 {
				t.Fatalf("error neither delivered nor counted (drops %d)", drops)
			}
			return
		}
		if drops != 0 {
			t.Fatalf("error delivered and counted as a drop")
		}
		ip := packet.IPv4(got[0])
		if err := checkDelivered(ip); err != nil {
			t.Fatalf("delivered: %v", err)
		}
		if len(ip) > packet.ICMPErrorMaxLen {
			t.Fatalf("ICMP error of %d bytes, over %d", len(ip), packet.ICMPErrorMaxLen)
		}
		wantSrc := k.remote.Addr()
		if off.IsValid() {
			wantSrc = off
		}
		m := packet.ICMP(ip.Payload())
		if ip.Protocol() != packet.ProtoICMP || ip.Src() != wantSrc || ip.Dst() != podAddr || m.Type() != typ || m.Code() != code {
			t.Fatalf("ICMP %d/%d %v -> %v (proto %d), want %d/%d %v -> %v", m.Type(), m.Code(), ip.Src(), ip.Dst(), ip.Protocol(), typ, code, wantSrc, podAddr)
		}
		if typ == packet.ICMPDestUnreachable && code == packet.ICMPFragmentationNeeded {
			if mtu := binary.BigEndian.Uint16(m[6:]); mtu != uint16(info) {
				t.Fatalf("next-hop MTU %d, want %d", mtu, uint16(info))
			}
		}
		in := packet.IPv4(m[packet.ICMPHeaderLen:])
		if len(in) < packet.IPv4MinHeaderLen+8 || !in.HeaderChecksumValid() || in.Src() != podAddr || in.Dst() != k.remote.Addr() || in.Protocol() != k.proto {
			t.Fatalf("quoted header % x: want a valid header %v -> %v proto %d and 8 bytes", in[:min(len(in), 28)], podAddr, k.remote.Addr(), k.proto)
		}
		body := in[packet.IPv4MinHeaderLen:]
		rest := quote
		if icmp {
			if binary.BigEndian.Uint16(body[4:]) != podPort {
				t.Fatalf("quoted echo identifier %#x, want the pod's %#x", binary.BigEndian.Uint16(body[4:]), podPort)
			}
			if body[0] != quote[0] || !bytes.Equal(body[6:], quote[6:min(len(quote), len(body))]) {
				t.Fatalf("quoted ICMP header and data differ from the kernel's quote")
			}
			return
		}
		u := packet.UDP(body)
		if u.SrcPort() != podPort || u.DstPort() != remotePort {
			t.Fatalf("quoted ports %d -> %d, want %d -> %d", u.SrcPort(), u.DstPort(), podPort, remotePort)
		}
		if q := body[packet.UDPHeaderLen:]; !bytes.Equal(q, rest[:min(len(rest), len(q))]) || len(q) > len(rest) {
			t.Fatalf("quoted UDP payload (%d bytes) is not the start of the kernel's quote (%d bytes)", len(q), len(rest))
		}
	})
}
