package lab

import (
	"net/netip"
	"path/filepath"
)

// Status describes a lab; it encodes to JSON for `podnet lab status -o json`.
type Status struct {
	Name   string `json:"name"`
	RunDir string `json:"runDir"`
	// Datastore is the endpoint URL of the lab's etcd, the value for
	// PODNET_DATASTORE_ENDPOINTS; "" when the lab has none (NoDaemon).
	Datastore string `json:"datastore"`
	// EtcdPID is the etcd process (0 when none); EtcdRunning says
	// whether it is alive now.
	EtcdPID     int          `json:"etcdPID"`
	EtcdRunning bool         `json:"etcdRunning"`
	Fabric      FabricStatus `json:"fabric"`
	Nodes       []NodeStatus `json:"nodes"`
	Pods        []PodStatus  `json:"pods"`
	// External is the host outside the cluster; nil in NoDaemon labs.
	External *ExternalStatus `json:"external,omitempty"`
}

// ExternalStatus is the host outside the cluster and its servers.
type ExternalStatus struct {
	Netns    string       `json:"netns"`
	Address  netip.Prefix `json:"address"`
	HTTPPort int          `json:"httpPort"`
	UDPPort  int          `json:"udpEchoPort"`
	HTTPLog  string       `json:"httpLog"`
}

// FabricStatus is the underlay bridge.
type FabricStatus struct {
	Netns   string       `json:"netns"`
	Bridge  string       `json:"bridge"`
	Address netip.Prefix `json:"address"`
}

// NodeStatus is one node and its daemon. PID is 0 when no daemon was
// started (NoDaemon labs); Running says whether that process is alive now.
type NodeStatus struct {
	Name     string       `json:"name"`
	Netns    string       `json:"netns"`
	Address  netip.Prefix `json:"address"`
	Iface    string       `json:"iface"`
	Socket   string       `json:"socket"`
	StateDir string       `json:"stateDir"`
	Log      string       `json:"log"`
	PID      int          `json:"pid"`
	Running  bool         `json:"running"`
}

// PodStatus is one pod; HTTPPID is its HTTP server's process.
type PodStatus struct {
	Name    string     `json:"name"`
	Node    string     `json:"node"`
	Netns   string     `json:"netns"`
	IP      netip.Addr `json:"ip"`
	HTTPPID int        `json:"httpPID"`
}

// Status returns a snapshot of the lab, with the liveness of etcd and of
// each daemon checked now.
func (l *Lab) Status() Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := Status{
		Name:        l.st.Name,
		RunDir:      l.st.RunDir,
		Datastore:   l.st.datastore(),
		EtcdPID:     l.st.Etcd.PID,
		EtcdRunning: l.st.Etcd.running(),
		Fabric:      FabricStatus{Netns: fabricNetns(l.st.Name), Bridge: FabricBridge, Address: FabricAddress},
		Nodes:       []NodeStatus{},
		Pods:        []PodStatus{},
	}
	for _, n := range l.st.Nodes {
		s.Nodes = append(s.Nodes, NodeStatus{
			Name: n.Name, Netns: n.Netns, Address: n.Address, Iface: n.Iface,
			Socket: n.Socket, StateDir: n.StateDir, Log: n.Log,
			PID: n.Daemon.PID, Running: n.Daemon.running(),
		})
	}
	for _, p := range l.st.Pods {
		s.Pods = append(s.Pods, PodStatus{Name: p.Name, Node: p.Node, Netns: p.Netns, IP: p.IP, HTTPPID: p.HTTP.PID})
	}
	if e := l.st.External; e != nil {
		s.External = &ExternalStatus{Netns: e.Netns, Address: e.Address, HTTPPort: ExternalHTTPPort,
			UDPPort: ExternalUDPPort, HTTPLog: filepath.Join(e.Dir, "http.log")}
	}
	return s
}
