package encap

import (
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"podnet/internal/netnsutil"
	"podnet/internal/nettest"
)

// underlay is two namespaces joined by a veth, standing in for two nodes:
//
//	netns A ("node A")                      netns B ("node B")
//	veth0 10.250.0.1/24 ─────────────────── veth0 10.250.0.2/24
//	IPIPConn (raw IPPROTO_IPIP)             IPIPConn, or the kernel's ipip0
//
// Both namespaces are removed when the test ends.
type underlay struct {
	nsA, nsB     string // paths for netnsutil.Do
	nameA, nameB string // names for ip -n
	addrA, addrB netip.Addr
}

func newUnderlay(t testing.TB) *underlay {
	t.Helper()
	u := &underlay{
		nameA: nettest.UniqueName("encA"),
		nameB: nettest.UniqueName("encB"),
		addrA: netip.MustParseAddr("10.250.0.1"),
		addrB: netip.MustParseAddr("10.250.0.2"),
	}
	u.nsA = nettest.Netns(t, u.nameA)
	u.nsB = nettest.Netns(t, u.nameB)
	ip(t, "-n", u.nameA, "link", "add", "veth0", "type", "veth", "peer", "name", "veth0", "netns", u.nameB)
	ip(t, "-n", u.nameA, "addr", "add", "10.250.0.1/24", "dev", "veth0")
	ip(t, "-n", u.nameB, "addr", "add", "10.250.0.2/24", "dev", "veth0")
	ip(t, "-n", u.nameA, "link", "set", "veth0", "up")
	ip(t, "-n", u.nameB, "link", "set", "veth0", "up")
	// Resolve the neighbours both ways up front, so the first batch does
	// not wait in the kernel's ARP queue (unres_qlen_bytes) and get cut.
	if out, err := exec.Command("ip", "netns", "exec", u.nameA, "ping", "-c1", "-W5", "10.250.0.2").CombinedOutput(); err != nil {
		t.Fatalf("ping 10.250.0.2 from %s: %v\n%s", u.nameA, err, out)
	}
	return u
}

// ip runs the ip(8) command and fails the test on error.
func ip(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// listen opens an IPIPConn inside the namespace at nsPath and closes it
// when the test ends.
func listen(t testing.TB, nsPath string, cfg IPIPConfig) *IPIPConn {
	t.Helper()
	var c *IPIPConn
	if err := netnsutil.Do(nsPath, func() (err error) {
		c, err = ListenIPIP(cfg)
		return err
	}); err != nil {
		t.Fatalf("ListenIPIP in %s: %v", nsPath, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
