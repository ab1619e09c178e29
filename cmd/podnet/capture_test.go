package main

import (
	"bytes"
	"errors"
	"net"
	"net/http"
	"os"
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
func captureOutput(c *nodeapi.Client, file string) (out, errOut string, err error) {
	var o, e bytes.Buffer
	oldOut, oldErr := stdout, stderr
	stdout, stderr = &o, &e
	defer func() { stdout, stderr = oldOut, oldErr }()
	err = runCapture(c, "pod-a", "", 0, 0, file)
	return o.String(), e.String(), err
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
	out, errOut, err := captureOutput(c, "")
	if err != nil || strings.Count(out, "\n") != 1 || !strings.Contains(errOut, want) {
		t.Errorf("%v; printed:\n%s\nstderr:\n%s\nwant one packet, and %q on stderr", err, out, errOut, want)
	}
	_, errOut, err = captureOutput(c, filepath.Join(t.TempDir(), "c.pcap"))
	if err != nil || !strings.Contains(errOut, want) {
		t.Errorf("with -w: %v; stderr:\n%s\nwant %q", err, errOut, want)
	}
	// -w - writes the stream itself to stdout, for a pipe.
	out, errOut, err = captureOutput(c, "-")
	if err != nil || !strings.Contains(errOut, want) {
		t.Errorf("with -w -: %v; stderr:\n%s\nwant %q", err, errOut, want)
	}
	r, rerr := capture.NewReader(strings.NewReader(out))
	if rerr != nil {
		t.Fatalf("-w -: stdout is no capture stream: %v", rerr)
	}
	if _, dir, data, err := r.Next(); err != nil || dir != capture.In || len(data) != 60 {
		t.Errorf("-w -: first packet %v, %v, %d bytes; want one of 60 bytes, in", err, dir, len(data))
	}
}

// portStream is a daemon's capture of pod-a: a 60-byte packet for each
// direction in dirs.
func portStream(t *testing.T, dirs ...capture.Dir) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		pw, err := capture.NewPortWriter(w, "pod-a", capture.Ethernet)
		if err != nil {
			t.Error(err)
			return
		}
		for _, d := range dirs {
			pw.Write(time.Now(), d, make([]byte, 60))
		}
	}
}

// TestCapturePrintsDirection: each printed packet says which way it
// crossed the port.
func TestCapturePrintsDirection(t *testing.T) {
	c := captureDaemon(t, portStream(t, capture.In, capture.Out))
	out, _, err := captureOutput(c, "")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if err != nil || len(lines) != 2 || !strings.Contains(lines[0], " in ") || !strings.Contains(lines[1], " out ") {
		t.Errorf("%v; printed:\n%s\nwant a packet in, then one out", err, out)
	}
}

// TestCaptureFailsWhenEnded: a capture the daemon ended early, because
// its port went away, fails with the daemon's reason, printed or written
// to a file.
func TestCaptureFailsWhenEnded(t *testing.T) {
	c := captureDaemon(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Trailer", nodeapi.TrailerCaptureEnded)
		if _, err := capture.NewPortWriter(w, "pod-a", capture.Ethernet); err != nil {
			t.Error(err)
		}
		w.Header().Set(nodeapi.TrailerCaptureEnded, "pod pod-a was removed")
	})
	for _, file := range []string{"", filepath.Join(t.TempDir(), "c.pcap")} {
		_, _, err := captureOutput(c, file)
		if err == nil || !strings.Contains(err.Error(), "pod pod-a was removed") {
			t.Errorf("-w %q: %v, want the capture to fail saying the pod was removed", file, err)
		}
	}
}

// TestCaptureFileIsPrivate: -w makes a file only its owner can read, and
// does not follow a symbolic link at the name given.
func TestCaptureFileIsPrivate(t *testing.T) {
	c := captureDaemon(t, portStream(t, capture.In))
	dir := t.TempDir()
	file := filepath.Join(dir, "c.pcap")
	if _, _, err := captureOutput(c, file); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(file); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("capture file: %v, mode %v; want -rw-------", err, st.Mode())
	}
	target, link := filepath.Join(dir, "elsewhere"), filepath.Join(dir, "link.pcap")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if _, _, err := captureOutput(c, link); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("-w to a symbolic link: %v, want a refusal", err)
	}
	if _, err := os.Lstat(target); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the link's target: %v, want it not created", err)
	}
	// A file that was there already: made private, or refused when
	// another user owns it (and then left as it was).
	open := filepath.Join(dir, "open.pcap")
	if err := os.WriteFile(open, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := captureOutput(c, open); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(open); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("capture into a file that was 0644: %v, mode %v; want -rw-------", err, st.Mode())
	}
	theirs := filepath.Join(dir, "theirs.pcap")
	if err := os.WriteFile(theirs, []byte("theirs"), 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(theirs, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if _, _, err := captureOutput(c, theirs); err == nil || !strings.Contains(err.Error(), "belongs to another user") {
		t.Errorf("-w to another user's file: %v, want a refusal", err)
	}
	if b, _ := os.ReadFile(theirs); string(b) != "theirs" {
		t.Errorf("another user's file now holds %q, want it untouched", b)
	}
}
