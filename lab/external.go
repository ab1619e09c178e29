package lab

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"
)

// The external host: a namespace on the fabric standing for the world
// outside the cluster. It serves HTTP on port 80 (GET /whoami answers
// with the client address it sees), echoes UDP on port 7 and answers
// ping. It has routes to the nodes' subnets but none to any pod pool, so
// pods reach it only through NAT outgoing.

// ExternalAddress is the external host's address on the fabric.
var ExternalAddress = netip.MustParsePrefix("10.77.0.100/24")

// Ports of the external host's services.
const (
	ExternalHTTPPort = 80
	ExternalUDPPort  = 7
)

func externalNetns(lab string) string { return lab + "-external" }

// addExternal creates the external host and starts its servers.
func (l *Lab) addExternal(ctx context.Context) error {
	ns := externalNetns(l.st.Name)
	fab := fabricNetns(l.st.Name)
	dir := filepath.Join(l.st.RunDir, "external")
	l.r.progressf("creating external host %s (%s): http :%d, udp echo :%d, ping", ns, ExternalAddress, ExternalHTTPPort, ExternalUDPPort)
	if err := l.addNetns(ctx, ns); err != nil {
		return err
	}
	if err := l.update(func(st *state) {
		st.External = &externalState{Netns: ns, Address: ExternalAddress, Dir: dir}
	}); err != nil {
		return err
	}
	cmds := [][]string{
		{"ip", "-n", fab, "link", "add", "wx", "type", "veth", "peer", "name", "eth0", "netns", ns},
		{"ip", "-n", fab, "link", "set", "wx", "master", subnetBridge(0)},
		{"ip", "-n", fab, "link", "set", "wx", "up"},
		{"ip", "-n", ns, "addr", "add", ExternalAddress.String(), "dev", "eth0"},
		{"ip", "-n", ns, "link", "set", "eth0", "up"},
	}
	for s := 1; s < max(l.st.Subnets, 1); s++ {
		// The other underlay subnets, through the fabric: nodes only.
		cmds = append(cmds, []string{"ip", "-n", ns, "route", "add", subnetGateway(s).Masked().String(), "via", subnetGateway(0).Addr().String()})
	}
	for _, args := range cmds {
		if _, err := l.r.run(ctx, args...); err != nil {
			return fmt.Errorf("create external host: %w", err)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create external host: %w", err)
	}
	bin := l.st.Binary
	httpID, httpProc, err := l.spawn(ctx, []string{"ip", "netns", "exec", ns, bin, "lab", "serve-http",
		"--pod", "external", "--node", "outside", "--ip", ExternalAddress.Addr().String(), "--addr", fmt.Sprintf(":%d", ExternalHTTPPort)},
		filepath.Join(dir, "http.log"))
	if err != nil {
		return fmt.Errorf("external http: %w", err)
	}
	udpID, udpProc, err := l.spawn(ctx, []string{"ip", "netns", "exec", ns, bin, "lab", "serve-udp-echo",
		"--addr", fmt.Sprintf(":%d", ExternalUDPPort)}, filepath.Join(dir, "udp.log"))
	if err != nil {
		return fmt.Errorf("external udp echo: %w", err)
	}
	if err := l.update(func(st *state) {
		st.External.HTTP, st.External.UDP = httpID, udpID
		l.children[httpID.PID] = httpProc
		l.children[udpID.PID] = udpProc
	}); err != nil {
		return err
	}
	if err := waitListen(ctx, httpID, ExternalHTTPPort, httpReadyTimeout); err != nil {
		return fmt.Errorf("external http: %w%s", err, logTail(filepath.Join(dir, "http.log")))
	}
	return nil
}

// ServeUDPEcho answers every datagram on addr with the same bytes until
// ctx is done, logging each sender to log. It backs the hidden `podnet lab
// serve-udp-echo`.
func ServeUDPEcho(ctx context.Context, addr string, log io.Writer) error {
	c, err := net.ListenPacket("udp", addr)
	if err != nil {
		return fmt.Errorf("udp echo: %w", err)
	}
	go func() { <-ctx.Done(); c.Close() }()
	buf := make([]byte, 65536)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("udp echo: %w", err)
		}
		if log != nil {
			fmt.Fprintf(log, "%s %s %d bytes\n", time.Now().Format(time.RFC3339), from, n)
		}
		c.WriteTo(buf[:n], from)
	}
}
