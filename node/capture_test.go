package node

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"

	"podnet/capture"
	"podnet/internal/netnsutil"
	"podnet/internal/nettest"
	"podnet/internal/packet"
	"podnet/nodeapi"
	"podnet/router"
	vswitch "podnet/switch"
	"podnet/switch/tap"
)

// captureRig is what the capture endpoint needs of a node: a switch with
// one pod port, pod-a, on a real TAP in a namespace of its own, and the
// node's API on a unix socket.
type captureRig struct {
	n      *Node
	podIdx int // pod-a's port
	client *nodeapi.Client
	socket string
	// tapFd is an AF_PACKET socket on the TAP's kernel side: what it
	// sends, the switch reads as pod-a's frames.
	tapFd   int
	tapAddr unix.SockaddrLinklayer
}

func newCaptureRig(t *testing.T) *captureRig {
	t.Helper()
	ns := nettest.Netns(t, nettest.UniqueName("cap"))
	var dev *tap.Device
	r := &captureRig{tapFd: -1}
	err := netnsutil.Do(ns, func() (err error) {
		if dev, err = tap.Open(tap.Config{Name: "cap0"}); err != nil {
			return err
		}
		if out, err := exec.Command("ip", "link", "set", "cap0", "up").CombinedOutput(); err != nil {
			return errors.New(string(out))
		}
		ifc, err := net.InterfaceByName("cap0")
		if err != nil {
			return err
		}
		r.tapAddr = unix.SockaddrLinklayer{Ifindex: ifc.Index, Protocol: htons(unix.ETH_P_ALL)}
		r.tapFd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		return err
	})
	if err != nil {
		if dev != nil {
			dev.Close()
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(r.tapFd) })
	sw := vswitch.New(vswitch.Config{})
	t.Cleanup(func() { sw.Close() })
	r.podIdx, err = sw.AddPodPort(vswitch.PodPort{Name: "pod-a", IP: podAIP, MAC: podAMAC, Dev: dev})
	if err != nil {
		dev.Close()
		t.Fatal(err)
	}
	routes, err := router.NewTable([]router.Route{{Prefix: netip.PrefixFrom(podAIP, 32), Kind: router.KindLocalPod, Port: r.podIdx}})
	if err != nil {
		t.Fatal(err)
	}
	sw.SetRoutes(routes)
	r.n = &Node{sw: sw, log: slog.New(slog.DiscardHandler), stopping: make(chan struct{})}
	r.socket = filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.Listen("unix", r.socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: r.n.apiHandler()}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	r.client = nodeapi.NewClient(r.socket)
	return r
}

var (
	podAIP  = netip.MustParseAddr("10.9.0.1")
	podAMAC = packet.MAC{2, 0, 0, 0, 0, 1}
)

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// send has pod-a send n frames of size bytes to the switch.
func (r *captureRig) send(t *testing.T, n, size int) {
	t.Helper()
	frame := make([]byte, size)
	copy(frame, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 0x08, 0x00})
	for range n {
		if err := unix.Sendto(r.tapFd, frame, 0, &r.tapAddr); err != nil && !errors.Is(err, unix.ENOBUFS) {
			t.Errorf("send on cap0: %v", err)
			return
		}
	}
}

// TestCaptureStalledClient: a client that stops reading ends its capture
// after captureWriteTimeout, which frees the port for the next capture.
func TestCaptureStalledClient(t *testing.T) {
	r := newCaptureRig(t)
	defer captureWriteTimeout.Store(captureWriteTimeout.Load())
	captureWriteTimeout.Store(int64(300 * time.Millisecond))
	body, err := r.client.Capture("pod-a", 0, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close() // and not a byte read until then
	// Far more than the socket buffers hold: the handler's writes block.
	stop := make(chan struct{})
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
				r.send(t, 20, 1400)
			}
		}
	}()
	defer func() { close(stop); <-sent }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := r.n.sw.StartCapture("pod-a", 0)
		if err == nil {
			c.Stop()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("10s after its client stopped reading, the capture still holds pod-a: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// rxFrames is how many frames the switch has read from pod-a.
func (r *captureRig) rxFrames(t *testing.T) uint64 {
	t.Helper()
	for _, p := range r.n.sw.Stats() {
		if p.Name == "pod-a" {
			return p.RxFrames
		}
	}
	t.Fatal("no port pod-a")
	return 0
}

// TestCaptureReportsDropped: packets a capture loses because its client
// fell behind are counted, and the count reaches the client at the end
// of the stream.
func TestCaptureReportsDropped(t *testing.T) {
	r := newCaptureRig(t)
	s, err := r.client.Capture("pod-a", 0, 2, "")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Not reading yet: more frames than the capture's queue holds.
	for r.rxFrames(t) < 6000 {
		r.send(t, 100, 1400)
	}
	got := len(readDirs(t, s))
	if s.Dropped() == 0 || uint64(got)+s.Dropped() > r.rxFrames(t) {
		t.Errorf("%d packets shown, %d reported dropped, %d read by the switch; want some dropped, none counted twice",
			got, s.Dropped(), r.rxFrames(t))
	}
}

// readDirs reads a capture stream to its end and returns each packet's
// direction.
func readDirs(t *testing.T, stream io.Reader) []capture.Dir {
	t.Helper()
	pr, err := capture.NewReader(stream)
	if err != nil {
		t.Fatal(err)
	}
	var dirs []capture.Dir
	for {
		_, dir, _, err := pr.Next()
		if errors.Is(err, io.EOF) {
			return dirs
		}
		if err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, dir)
	}
}

// TestCaptureShowsDirection: a capture tells what the pod sent to the
// switch from what the switch sent the pod: a datagram pod-a sends to
// its own address crosses its port twice, in and then out.
func TestCaptureShowsDirection(t *testing.T) {
	r := newCaptureRig(t)
	s, err := r.client.Capture("pod-a", 2, 10, "udp")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: podAIP.AsSlice(), DstIP: podAIP.AsSlice()}
	udp := &layers.UDP{SrcPort: 1000, DstPort: 2000}
	udp.SetNetworkLayerForChecksum(ip)
	b := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(b, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		&layers.Ethernet{SrcMAC: podAMAC[:], DstMAC: packet.GatewayMAC[:], EthernetType: layers.EthernetTypeIPv4},
		ip, udp, gopacket.Payload("hello")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Sendto(r.tapFd, b.Bytes(), 0, &r.tapAddr); err != nil {
		t.Fatal(err)
	}
	if dirs := readDirs(t, s); !slices.Equal(dirs, []capture.Dir{capture.In, capture.Out}) {
		t.Errorf("directions %q, want in (from the pod), out (to it)", dirs)
	}
}

// TestCaptureEndsWhenPodRemoved: removing the pod ends a capture of its
// port at once, and the client is told why.
func TestCaptureEndsWhenPodRemoved(t *testing.T) {
	// The port is quiet for longer than the write timeout first: the end
	// of the stream (the trailer with the reason) must still get out.
	defer captureWriteTimeout.Store(captureWriteTimeout.Load())
	captureWriteTimeout.Store(int64(300 * time.Millisecond))
	r := newCaptureRig(t)
	s, err := r.client.Capture("pod-a", 10, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	time.Sleep(2 * writeTimeout())
	if err := r.n.sw.RemovePort(r.podIdx); err != nil {
		t.Fatal(err)
	}
	waitStreamEnd(t, s, "the capture of a removed pod")
	if want := "pod pod-a was removed"; s.Ended() != want {
		t.Errorf("the daemon said the capture ended: %q, want %q", s.Ended(), want)
	}
}

// TestCaptureRejectsBadLimits: a count or seconds the daemon cannot take
// is refused with 400 and a message naming it, rather than read as "no
// limit" (or, for 1e300 seconds, as a negative duration).
func TestCaptureRejectsBadLimits(t *testing.T) {
	r := newCaptureRig(t)
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", r.socket)
	}}}
	for _, q := range []string{
		"count=abc", "count=-1", "count=1.5", "count=99999999999999999999",
		"seconds=abc", "seconds=-1", "seconds=NaN", "seconds=Inf", "seconds=1e300", "seconds=3601",
	} {
		resp, err := hc.Get("http://podnet" + nodeapi.PathCapture + "?port=pod-a&" + q)
		if err != nil {
			t.Fatal(err)
		}
		var e nodeapi.Error
		json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		name, _, _ := strings.Cut(q, "=")
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(e.Error, name) {
			t.Errorf("%s: %s %q, want 400 naming %s", q, resp.Status, e.Error, name)
		}
	}
	// What the CLI is given goes to the daemon as it is.
	if _, err := r.client.Capture("pod-a", -1, 0, ""); err == nil || !strings.Contains(err.Error(), "count") {
		t.Errorf("Capture with count -1: %v, want the daemon's refusal", err)
	}
	// Good values still capture: 0 is no limit.
	s, err := r.client.Capture("pod-a", 0, 0.2, "")
	if err != nil {
		t.Fatalf("count 0, 0.2 seconds: %v", err)
	}
	defer s.Close()
	if _, err := io.Copy(io.Discard, s); err != nil {
		t.Fatal(err)
	}
}

// TestCaptureEndsWhenDaemonStops: a capture running when the daemon
// begins to stop ends at once, and its client learns why, instead of
// holding the API server's shutdown until the stream is cut off. The
// underlay's capture reads an interface instead of a port: the loopback
// device stands in for it here (only read).
func TestCaptureEndsWhenDaemonStops(t *testing.T) {
	for _, port := range []string{"pod-a", "underlay"} {
		t.Run(port, func(t *testing.T) { captureEndsWhenDaemonStops(t, port) })
	}
}

func captureEndsWhenDaemonStops(t *testing.T, port string) {
	r := newCaptureRig(t)
	r.n.underlay = "lo"
	s, err := r.client.Capture(port, 0, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r.send(t, 3, 100)
	close(r.n.stopping)
	waitStreamEnd(t, s, "the capture after the daemon began to stop")
	if got := s.Ended(); got != captureDaemonStopping {
		t.Errorf("capture ended with %q, want %q", got, captureDaemonStopping)
	}
}

// waitStreamEnd reads capture stream s to its end, which must come
// cleanly within 10 s; what names the capture in the failure.
func waitStreamEnd(t *testing.T, s io.Reader, what string) {
	t.Helper()
	read := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, s)
		read <- err
	}()
	select {
	case err := <-read:
		if err != nil {
			t.Fatalf("%s: the stream did not end cleanly: %v", what, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s still runs after 10s", what)
	}
}
