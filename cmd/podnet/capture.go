package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"podnet/capture"
	"podnet/nodeapi"
)

func newCaptureCmd() *cobra.Command {
	var file string
	var count int
	var seconds float64
	cmd := &cobra.Command{
		Use:   "capture PORT [FILTER...]",
		Short: "Show or save the packets crossing a port of this node's switch",
		Long: `capture copies the packets crossing one port of this node's switch: a
pod's port (by pod name, as Ethernet frames), the host port (host or
podnet0), a tunnel (ipip, vxlan: the inner packets), or the underlay
interface itself ("underlay": the wire, outer headers and all). Each
packet is printed on one line with its direction (in: the port sent it
to the switch, out: the switch sent it to the port), or with -w written
to a pcapng file that tcpdump, tshark and Wireshark read, where each
direction is an interface of its own, PORT:in and PORT:out.

FILTER terms, joined by "and": host ADDR, port N, tcp, udp, icmp; each
must hold for some IPv4 header of the packet, outer or inner.`,
		Example: `  podnet capture test-1
  podnet capture underlay -c 10 host 192.168.14.2
  podnet capture vxlan -w /tmp/vxlan.pcap --seconds 5
  podnet capture test-1 -w - | tshark -r -`,
		Args: cobra.MinimumNArgs(1),
	}
	sock := socketFlag(cmd)
	cmd.Flags().StringVarP(&file, "write", "w", "", "write a pcapng file instead of printing (mode 0600; a symbolic link is not followed); - writes the stream to stdout")
	cmd.Flags().IntVarP(&count, "count", "c", 0, "stop after this many packets (default: until interrupted)")
	cmd.Flags().Float64Var(&seconds, "seconds", 0, "stop after this many seconds (at most 3600)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		return runCapture(client(*sock), args[0], strings.Join(args[1:], " "), count, seconds, file)
	}
	return cmd
}

// runCapture streams a capture of port from the daemon c talks to: one
// line per packet, or a pcapng file.
func runCapture(c *nodeapi.Client, port, filter string, count int, seconds float64, file string) error {
	if _, err := capture.ParseFilter(filter); err != nil {
		return usageError{err}
	}
	body, err := c.Capture(port, count, seconds, filter)
	if err != nil {
		return err
	}
	defer body.Close()
	// ^C ends the capture cleanly: the file is complete up to there.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt)
	defer signal.Stop(sig)
	go func() { <-sig; body.Close() }()
	if file == "-" {
		// The pcapng stream itself, for a pipe: podnet capture x -w - | tshark -r -
		_, err := io.Copy(stdout, body)
		if isClosedBody(err) {
			err = nil
		}
		if endErr := captureEnd(body); err == nil {
			err = endErr
		}
		return err
	}
	if file != "" {
		f, err := createCaptureFile(file)
		if err != nil {
			return err
		}
		n, err := io.Copy(f, body)
		if cerr := f.Close(); err == nil || isClosedBody(err) {
			err = cerr
		}
		fmt.Fprintf(stderr, "wrote %d bytes to %s\n", n, file)
		if endErr := captureEnd(body); err == nil {
			err = endErr
		}
		return err
	}
	r, err := capture.NewReader(body)
	if err != nil {
		return err
	}
	for {
		t, dir, data, err := r.Next()
		if err != nil {
			if errors.Is(err, io.EOF) || isClosedBody(err) {
				return captureEnd(body)
			}
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return fmt.Errorf("the capture stream was cut off (did the daemon stop?): %w", err)
			}
			return err
		}
		fmt.Fprintln(stdout, capture.Line(t, dir, capture.Decode(data, r.Link())))
	}
}

// captureEnd says, at the end of a capture, how many packets the daemon
// could not copy to it (the output misses them), and fails if the daemon
// ended it early because its port went away.
func captureEnd(s *nodeapi.CaptureStream) error {
	if n := s.Dropped(); n > 0 {
		fmt.Fprintf(stderr, "%d packets dropped: the capture did not keep up\n", n)
	}
	if why := s.Ended(); why != "" {
		return fmt.Errorf("capture ended: %s", why)
	}
	return nil
}

// createCaptureFile opens file for a capture: pod traffic, so a new file
// is readable by its owner only, and a symbolic link is not followed
// (it could send the packets somewhere the user did not mean, or let
// another user point a root capture at a file of their choice).
func createCaptureFile(file string) (*os.File, error) {
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("%s is a symbolic link: not followed for a capture file", file)
	}
	if err != nil {
		return nil, err
	}
	// A file that was there already (another user may have made it in
	// /tmp beforehand, to read what is captured) must be ours, and
	// becomes private before anything is written to it.
	fi, err := f.Stat()
	if err == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
			err = fmt.Errorf("%s belongs to another user (uid %d): not written", file, st.Uid)
		}
	}
	if err == nil {
		err = f.Chmod(0o600)
	}
	if err == nil {
		err = f.Truncate(0)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func isClosedBody(err error) bool {
	return err != nil && strings.Contains(err.Error(), "closed")
}
