package nodeapi

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// serve answers the client's requests on a unix socket in a temp dir
// with handler and returns the socket's path.
func serve(t *testing.T, handler http.Handler) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: handler}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return sock
}

func TestClient(t *testing.T) {
	var got AddPodRequest
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+PathStatus, func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(Status{Node: "worker1", Pods: 2, PodMTU: 1480})
	})
	mux.HandleFunc("POST "+PathPods, func(w http.ResponseWriter, r *http.Request) {
		if err := json.NewDecoder(r.Body).Decode(&got); err != nil {
			t.Errorf("decode request: %v", err)
		}
		if got.Name == "taken" {
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(Error{Error: "pod taken already exists"})
			return
		}
		if got.Pool == "nope" {
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(Error{Error: "pool nope does not exist", Field: FieldPool})
			return
		}
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(PodInfo{Name: got.Name, IP: "192.168.0.5", Attached: true})
	})
	mux.HandleFunc("DELETE "+PathPod+"{name}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("name") != "a" {
			http.Error(w, "no JSON here", http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	c := NewClient(serve(t, mux))

	st, err := c.Status()
	if err != nil || st.Node != "worker1" || st.Pods != 2 || st.PodMTU != 1480 {
		t.Fatalf("Status: got %+v, %v", st, err)
	}
	info, err := c.AddPod(AddPodRequest{Name: "a", New: true, Pool: "p"})
	if err != nil || info.Name != "a" || !info.Attached || got != (AddPodRequest{Name: "a", New: true, Pool: "p"}) {
		t.Fatalf("AddPod: got %+v, %v; server saw %+v", info, err, got)
	}
	// An error answer's text is the error.
	if _, err := c.AddPod(AddPodRequest{Name: "taken", New: true}); err == nil || err.Error() != "pod taken already exists" {
		t.Fatalf("AddPod taken: got %v", err)
	}
	// The field at fault comes with the error.
	if _, err := c.AddPod(AddPodRequest{Name: "b", New: true, Pool: "nope"}); !errors.Is(err, ErrInvalidPool) || err.Error() != "pool nope does not exist" {
		t.Fatalf("AddPod from pool nope: got %v, want ErrInvalidPool", err)
	}
	if err := c.DeletePod("a"); err != nil {
		t.Fatalf("DeletePod: %v", err)
	}
	// No JSON error body: the HTTP status.
	if err := c.DeletePod("b"); err == nil || !strings.Contains(err.Error(), "500 Internal Server Error") {
		t.Fatalf("DeletePod b: got %v", err)
	}
	// Unknown path: 404.
	var v any
	if err := c.Get("/v1/nothing", &v); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("Get unknown: got %v", err)
	}
}

func TestClientNoDaemon(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	_, err := NewClient(sock).Status()
	if err == nil || err.Error() != "podnet daemon is not running (no answer on "+sock+")" {
		t.Fatalf("got %v", err)
	}
}

func TestDefaultClientSocket(t *testing.T) {
	t.Setenv(SocketEnv, "")
	if got := DefaultClientSocket(); got != DefaultSocket {
		t.Errorf("unset: got %q, want %q", got, DefaultSocket)
	}
	t.Setenv(SocketEnv, "/tmp/x.sock")
	if got := DefaultClientSocket(); got != "/tmp/x.sock" {
		t.Errorf("set: got %q", got)
	}
}

// TestClientDaemonWentAway: a daemon that dies mid-request (the
// connection closes without an answer) gives an error that says so and
// where to look, not a bare EOF.
func TestClientDaemonWentAway(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			// Read the request, then die without a word.
			c.Read(make([]byte, 4096))
			c.Close()
		}
	}()
	c := NewClient(sock)
	_, err = c.AddPod(AddPodRequest{Name: "a", New: true})
	if err == nil || !strings.Contains(err.Error(), "went away") || !strings.Contains(err.Error(), "podnet pod list") {
		t.Fatalf("AddPod against a dying daemon: %v, want that it went away and to check podnet pod list", err)
	}
	if _, err := c.Status(); err == nil || !strings.Contains(err.Error(), "went away") {
		t.Fatalf("Status against a dying daemon: %v, want that it went away", err)
	}
}

// TestClientNoAnswer: a daemon that takes the request and never answers
// (one that binds its socket before it serves, or hangs) holds
// StatusContext only until its context ends.
func TestClientNoAnswer(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close() // and never Accept
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = NewClient(sock).StatusContext(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), sock+" did not answer in time") {
		t.Fatalf("StatusContext against a daemon that does not answer: %v, want that it did not answer in time", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("StatusContext gave up after %v, want about 300ms", d)
	}
}

// TestStatusErrorIs: the daemon's refusals map to what a caller acts on,
// a daemon older than its client included.
func TestStatusErrorIs(t *testing.T) {
	tests := []struct {
		code           int
		msg            string
		notFound, busy bool
	}{
		{404, "pod a not found", true, false},
		{410, "pod a is being deleted", true, false},
		{409, "pod a is being added", false, true},
		{400, "pod a not found", true, false}, // an older daemon
		{400, "pod a is being added", false, false},
		{500, "pod a not found", false, false},
	}
	for _, tt := range tests {
		err := error(&StatusError{Code: tt.code, Msg: tt.msg})
		if errors.Is(err, ErrNotFound) != tt.notFound || errors.Is(err, ErrBusy) != tt.busy || err.Error() != tt.msg {
			t.Errorf("%d %q: not found %v, busy %v, message %q", tt.code, tt.msg, errors.Is(err, ErrNotFound), errors.Is(err, ErrBusy), err)
		}
	}
}

// TestStatusErrorIsRetryOrPool: a refusal for the datastore is one to
// retry; a 400 about the pool field is the pool's fault, another 400 not.
func TestStatusErrorIsRetryOrPool(t *testing.T) {
	tests := []struct {
		err                      StatusError
		unavailable, invalidPool bool
	}{
		{StatusError{Code: 503, Msg: "datastore unreachable since ..."}, true, false},
		{StatusError{Code: 400, Msg: "pool p does not exist", Field: FieldPool}, false, true},
		{StatusError{Code: 400, Msg: "pod a already exists"}, false, false},
		{StatusError{Code: 500, Msg: "pool p: etcd lost", Field: FieldPool}, false, false},
	}
	for _, tt := range tests {
		err := error(&tt.err)
		if errors.Is(err, ErrUnavailable) != tt.unavailable || errors.Is(err, ErrInvalidPool) != tt.invalidPool {
			t.Errorf("%+v: unavailable %v, invalid pool %v; want %v, %v", tt.err, errors.Is(err, ErrUnavailable), errors.Is(err, ErrInvalidPool), tt.unavailable, tt.invalidPool)
		}
	}
}
