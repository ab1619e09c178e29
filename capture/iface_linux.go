package capture

import (
	"fmt"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Interface reads every frame on one network interface of the calling
// thread's namespace (an AF_PACKET socket): what the underlay really
// carries, with the outer headers of IP-in-IP and VXLAN.
type Interface struct {
	f   *os.File
	buf []byte
}

// OpenInterface starts reading frames on the named interface.
func OpenInterface(name string) (*Interface, error) {
	ifc, err := net.InterfaceByName(name)
	if err != nil {
		return nil, fmt.Errorf("capture on %s: %w", name, err)
	}
	proto := int(htons(unix.ETH_P_ALL))
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return nil, fmt.Errorf("capture on %s: packet socket: %w", name, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifc.Index}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("capture on %s: bind: %w", name, err)
	}
	// A nonblocking fd in an os.File goes through Go's poller, so Read
	// honours deadlines and Close wakes a blocked Read.
	return &Interface{f: os.NewFile(uintptr(fd), "capture-"+name), buf: make([]byte, SnapLen)}, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// Read returns the next frame (valid until the next Read), waiting at most
// until deadline.
func (i *Interface) Read(deadline time.Time) ([]byte, error) {
	if err := i.f.SetReadDeadline(deadline); err != nil {
		return nil, err
	}
	n, err := i.f.Read(i.buf)
	if err != nil {
		return nil, err
	}
	return i.buf[:n], nil
}

// Close stops reading.
func (i *Interface) Close() error { return i.f.Close() }
