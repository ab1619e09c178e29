package main

import (
	"bytes"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"podnet/capture"
	"podnet/nodeapi"
)

// captureDaemon answers PathCapture on a unix socket with serve, in
// place of a node daemon.
func captureDaemon(t *testing.T, serve http.HandlerFunc) *nodeapi.Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+nodeapi.PathCapture, serve)
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return nodeapi.NewClient(sock)
}

// captureOutput runs runCapture and returns what it printed.
func captureOutput(t *testing.T, c *nodeapi.Client, file string) (out, errOut string) {
	t.Helper()
	var o, e bytes.Buffer
	oldOut, oldErr := stdout, stderr
	stdout, stderr = &o, &e
	defer func() { stdout, stderr = oldOut, oldErr }()
	if err := runCapture(c, "pod-a", "", 0, 0, file); err != nil {
		t.Fatal(err)
	}
	return o.String(), e.String()
}

// TestCaptureSaysDropped: the packets the daemon reports dropped at the
// end of a capture are said on stderr, printed or written to a file.
func TestCaptureSaysDropped(t *testing.T) {
	c := captureDaemon(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Trailer", nodeapi.TrailerCaptureDropped)
		pw, err := capture.NewPortWriter(w, "pod-a", capture.Ethernet)
		if err != nil {
			t.Error(err)
			return
		}
		pw.Write(time.Now(), capture.In, make([]byte, 60))
		w.Header().Set(nodeapi.TrailerCaptureDropped, "7")
	})
	const want = "7 packets dropped"
	out, errOut := captureOutput(t, c, "")
	if strings.Count(out, "\n") != 1 || !strings.Contains(errOut, want) {
		t.Errorf("printed:\n%s\nstderr:\n%s\nwant one packet, and %q on stderr", out, errOut, want)
	}
	_, errOut = captureOutput(t, c, filepath.Join(t.TempDir(), "c.pcap"))
	if !strings.Contains(errOut, want) {
		t.Errorf("with -w, stderr:\n%s\nwant %q", errOut, want)
	}
}

// TestCapturePrintsDirection: each printed packet says which way it
// crossed the port.
func TestCapturePrintsDirection(t *testing.T) {
	c := captureDaemon(t, func(w http.ResponseWriter, _ *http.Request) {
		pw, err := capture.NewPortWriter(w, "pod-a", capture.Ethernet)
		if err != nil {
			t.Error(err)
			return
		}
		pw.Write(time.Now(), capture.In, make([]byte, 60))
		pw.Write(time.Now(), capture.Out, make([]byte, 60))
	})
	out, _ := captureOutput(t, c, "")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], " in ") || !strings.Contains(lines[1], " out ") {
		t.Errorf("printed:\n%s\nwant a packet in, then one out", out)
	}
}
