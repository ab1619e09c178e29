package node

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/pprof"
	"time"

	"podnet/router"
	vswitch "podnet/switch"
)

// Status is the node's summary for `podnet status`.
type Status struct {
	Node       string    `json:"node"`
	Underlay   string    `json:"underlay"`
	Address    string    `json:"address"`
	HostPort   string    `json:"hostPort"`
	TapOffload bool      `json:"tapOffload"`
	PodMTU     int       `json:"podMTU"`
	Pods       int       `json:"pods"`
	Routes     int       `json:"routes"`
	Started    time.Time `json:"started"`
	StateDir   string    `json:"stateDir"`
}

// Status reports the node's state.
func (n *Node) Status() Status {
	n.mu.Lock()
	pods := len(n.pods)
	mtu := n.podMTU() // the routing loop changes it under mu
	n.mu.Unlock()
	addr := ""
	if n.underlayAddr.IsValid() {
		addr = n.underlayAddr.String()
	}
	return Status{
		Node: n.cfg.Name, Underlay: n.underlay, Address: addr, HostPort: vswitch.HostTUNName,
		TapOffload: n.cfg.TapOffload, PodMTU: mtu, Pods: pods,
		Routes: n.sw.Routes().Len(), Started: n.started, StateDir: n.cfg.StateDir,
	}
}

// Routes returns the route table the data path uses now.
func (n *Node) Routes() []router.Route { return n.sw.Routes().Routes() }

// PortStats returns every port's counters.
func (n *Node) PortStats() []vswitch.PortStats { return n.sw.Stats() }

// apiHandler serves the local API. Every answer is JSON; errors are
// {"error": "..."} with 400 for a bad request, 404 for an unknown pod and
// 500 for a failure of the node.
func (n *Node) apiHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, n.Status())
	})
	mux.HandleFunc("GET /v1/pods", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, n.Pods())
	})
	mux.HandleFunc("POST /v1/pods", func(w http.ResponseWriter, r *http.Request) {
		var req AddPodRequest
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			writeErr(w, badRequest("bad request body: %v", err))
			return
		}
		info, err := n.AddPod(req)
		if err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusCreated, info)
	})
	mux.HandleFunc("DELETE /v1/pods/{name}", func(w http.ResponseWriter, r *http.Request) {
		if err := n.DeletePod(r.PathValue("name")); err != nil {
			writeErr(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /v1/routes", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, n.Routes())
	})
	mux.HandleFunc("GET /v1/bgp/peers", func(w http.ResponseWriter, r *http.Request) {
		peers, err := n.BGPPeers(r.Context())
		if err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, peers)
	})
	mux.HandleFunc("GET /v1/nat/entries", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, n.nat.Entries())
	})
	mux.HandleFunc("GET /v1/nat/stats", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, n.nat.Stats())
	})
	mux.HandleFunc("GET /v1/ports", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, n.PortStats())
	})
	n.registerInspect(mux)
	// Go's profiler, for engineers measuring the data path
	// (curl --unix-socket SOCKET http://podnet/debug/pprof/profile?seconds=10).
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

type apiError struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeErr(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	var ue *userError
	if errors.As(err, &ue) {
		code = http.StatusBadRequest
	}
	writeJSON(w, code, apiError{Error: err.Error()})
}
