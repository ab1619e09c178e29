package encap

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// underlaySocket opens the non-blocking IPv4 socket a tunnel transport
// sends and receives on (name says which, for errors). DF stays clear on
// what it sends: the kernel fragments an outer packet that does not fit
// the underlay, and the switch itself answers DF inner packets that would
// not fit with ICMP fragmentation-needed (see IPIPConn and VXLANConn).
// Buffers are asked for with the FORCE options first.
func underlaySocket(name string, typ, proto, buf int) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, typ|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return -1, fmt.Errorf("encap: %s: socket: %w", name, err)
	}
	fail := func(what string, err error) (int, error) {
		unix.Close(fd)
		return -1, fmt.Errorf("encap: %s: %s: %w", name, what, err)
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
