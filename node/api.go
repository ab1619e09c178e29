package node

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/pprof"

	"podnet/datastore"
	"podnet/internal/buildinfo"
	"podnet/nodeapi"
	"podnet/router"
	vswitch "podnet/switch"
)

// Status reports the node's state.
func (n *Node) Status() nodeapi.Status {
	var pods, mtu int
	var pending []string
	n.do(func(s *state) error {
		pods, mtu, pending = len(s.listed()), s.podMTU(n.cfg.PodMTU), s.pendingReleases()
		return nil
	})
	addr := ""
	if n.underlayAddr.IsValid() {
		addr = n.underlayAddr.String()
	}
	build := buildinfo.Get()
	st := nodeapi.Status{
		Node: n.cfg.Name, Underlay: n.underlay, Address: addr, HostPort: vswitch.HostTUNName,
		TapOffload: n.cfg.TapOffload, UDPSuperframes: n.sw.UDPSuperframes(), PodMTU: mtu, Pods: pods,
		Routes: n.sw.Routes().Len(), Started: n.started, StateDir: n.cfg.StateDir,
		Version: build.Version, Commit: build.Commit, PendingReleases: pending,
	}
	if p := n.underlayProblem.Load(); p != nil {
		st.UnderlayProblem = *p
	}
	st.VXLANSuperframes = superframesStatus(n.vxlanSuperframes.Load(), n.sw.VXLANSuperframes)
	st.IPIPSuperframes = superframesStatus(n.ipipSuperframes.Load(), n.sw.IPIPSuperframes)
	n.datastoreStatus(&st)
	return st
}

// Routes returns the route table the data path uses now.
func (n *Node) Routes() []router.Route { return n.sw.Routes().Routes() }

// PortStats returns every port's counters.
func (n *Node) PortStats() []vswitch.PortStats { return n.sw.Stats() }

// apiHandler serves the local API (package nodeapi describes it).
func (n *Node) apiHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+nodeapi.PathStatus, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, n.Status())
	})
	mux.HandleFunc("GET "+nodeapi.PathPods, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, n.Pods())
	})
	mux.HandleFunc("POST "+nodeapi.PathPods, func(w http.ResponseWriter, r *http.Request) {
		var req nodeapi.AddPodRequest
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
	mux.HandleFunc("DELETE "+nodeapi.PathPod+"{name}", func(w http.ResponseWriter, r *http.Request) {
		if err := n.DeletePod(r.PathValue("name")); err != nil {
			writeErr(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET "+nodeapi.PathRoutes, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, n.Routes())
	})
	mux.HandleFunc("GET "+nodeapi.PathBGPPeers, func(w http.ResponseWriter, r *http.Request) {
		peers, err := n.BGPPeers(r.Context())
		if err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, peers)
	})
	mux.HandleFunc("GET "+nodeapi.PathNATEntries, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, n.nat.Entries())
	})
	mux.HandleFunc("GET "+nodeapi.PathNATStats, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, n.nat.Stats())
	})
	mux.HandleFunc("GET "+nodeapi.PathPorts, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, n.PortStats())
	})
	n.registerInspect(mux)
	n.registerBGPRoutes(mux)
	// Go's profiler, for engineers measuring the data path
	// (curl --unix-socket SOCKET http://podnet/debug/pprof/profile?seconds=10).
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeErr(w http.ResponseWriter, err error) {
	code, field := http.StatusInternalServerError, ""
	var ue *userError
	var unavailable *unavailableError
	switch {
	case errors.As(err, &ue):
		code, field = http.StatusBadRequest, ue.field
		if ue.code != 0 {
			code = ue.code
		}
	case errors.As(err, &unavailable), errors.Is(err, errStopped), datastore.Unreachable(err):
		// Refused for now, not for good: etcd did not answer (before
		// the health probe noticed), or the node is stopping.
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, nodeapi.Error{Error: err.Error(), Field: field})
}

// superframesStatus is a tunnel's superframes line for status: what
// opening its TAP found (opened), or why the switch stopped using it
// since; "" while the tunnel is not attached.
func superframesStatus(opened *string, state func() (attached bool, failure error)) string {
	if opened == nil {
		return ""
	}
	attached, err := state()
	switch {
	case !attached:
		return ""
	case err != nil:
		return "off (stopped): " + err.Error()
	}
	return *opened
}
