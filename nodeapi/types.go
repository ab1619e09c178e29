// Package nodeapi is the node daemon's local API as its clients see it:
// the wire types and a client for the unix socket. The CLI and a CNI
// plugin import it without importing the daemon (package node serves it).
//
// Every answer is JSON. Errors are {"error": "..."} with status 400 for a
// bad request (and "field" naming the request's field at fault, when the
// refusal is about one), 404 for a pod the node does not have, 409 for a
// pod being added, 410 for one being deleted, 503 while the datastore
// does not answer and 500 for a failure of the node; the client returns
// them as *StatusError.
package nodeapi

import "time"

// Where the daemon listens, and how a client finds it.
const (
	// DefaultSocket is the daemon's unix socket unless configured.
	DefaultSocket = "/run/podnet/podnet.sock"
	// SocketEnv names the environment variable that points clients at a
	// daemon's socket (the lab sets it inside each node).
	SocketEnv = "PODNET_SOCKET"
)

// API paths. GET unless said otherwise.
const (
	PathStatus = "/v1/status"
	// PathPods lists pods ([]PodInfo); POST adds one (AddPodRequest).
	PathPods = "/v1/pods"
	// PathPod + name: DELETE removes a pod.
	PathPod = "/v1/pods/"
	// PathRoutes is the route table ([]router.Route).
	PathRoutes = "/v1/routes"
	// PathBGPPeers are the BGP sessions ([]bgp.PeerStatus).
	PathBGPPeers = "/v1/bgp/peers"
	// PathBGPRoutes are the prefixes received from and advertised to each
	// BGP peer ([]bgp.PeerRoutes).
	PathBGPRoutes = "/v1/bgp/routes"
	// PathNATEntries is the NAT connection table ([]nat.Entry).
	PathNATEntries = "/v1/nat/entries"
	// PathNATStats are the NAT counters (nat.Stats).
	PathNATStats = "/v1/nat/stats"
	// PathPorts are the switch ports' counters ([]vswitch.PortStats).
	PathPorts = "/v1/ports"
	// PathTrace: POST a vswitch.TraceQuery, get a vswitch.TraceResult.
	PathTrace = "/v1/trace"
	// PathCapture streams a pcapng (see Client.Capture).
	PathCapture = "/v1/capture"
)

// TrailerCaptureDropped, a trailer of a capture's stream, is how many
// packets the capture lost because its queue was full: the client or the
// daemon did not keep up, and the stream is incomplete.
const TrailerCaptureDropped = "Podnet-Capture-Dropped"

// TrailerCaptureEnded, a trailer of a capture's stream, says why the
// daemon ended the capture before its count or time: its port went away.
const TrailerCaptureEnded = "Podnet-Capture-Ended"

// Status is the node's summary for `podnet status`.
type Status struct {
	Node     string `json:"node"`
	Underlay string `json:"underlay"`
	Address  string `json:"address"`
	// UnderlayProblem, when set, says how the underlay's address changed
	// since the daemon started (it reads it once; a restart picks up the
	// new one).
	UnderlayProblem string `json:"underlayProblem,omitempty"`
	HostPort        string `json:"hostPort"`
	TapOffload      bool   `json:"tapOffload"`
	// UDPSuperframes: the kernel takes bursts of datagrams as one
	// GSO_UDP_L4 write (USO, Linux 6.2+), so the switch merges them.
	UDPSuperframes bool `json:"udpSuperframes"`
	// VXLANSuperframes says whether TCP superframes leave as VXLAN whole,
	// for the kernel to segment, and if not why; "" before VXLAN is used.
	VXLANSuperframes string `json:"vxlanSuperframes,omitempty"`
	// IPIPSuperframes is the same for IP-in-IP; "" before IP-in-IP is
	// used.
	IPIPSuperframes string    `json:"ipipSuperframes,omitempty"`
	PodMTU          int       `json:"podMTU"`
	Pods            int       `json:"pods"`
	Routes          int       `json:"routes"`
	Started         time.Time `json:"started"`
	StateDir        string    `json:"stateDir"`
	// Version and Commit say which podnet build the daemon runs.
	Version string `json:"version"`
	Commit  string `json:"commit"`
	// Datastore is whether the daemon reaches etcd now (one of the
	// Datastore constants), since when, and the last error when it does
	// not. Forwarding does not need it; pod add does.
	Datastore      string    `json:"datastore"`
	DatastoreSince time.Time `json:"datastoreSince,omitempty"`
	DatastoreError string    `json:"datastoreError,omitempty"`
	// Registered is true once this daemon has written its Node resource
	// (at start, or once etcd answered if it did not then); BGP starts
	// after that.
	Registered bool `json:"registered"`
	// PendingReleases are pods gone from this node whose address and
	// WorkloadEndpoint still wait to be released in the datastore
	// (deleted while etcd was unreachable, or an add or delete a
	// restarted daemon is finishing). The daemon retries them; their
	// names stay taken until done.
	PendingReleases []string `json:"pendingReleases,omitempty"`
}

// Status.Datastore values.
const (
	DatastoreReachable   = "reachable"
	DatastoreUnreachable = "unreachable"
	// DatastoreUnknown: the daemon has not asked yet.
	DatastoreUnknown = "unknown"
)

// AddPodRequest asks for a pod to be attached.
type AddPodRequest struct {
	Name string `json:"name"`
	// Netns is the path of an existing network namespace; or set New.
	Netns string `json:"netns,omitempty"`
	// New makes the daemon create a named namespace for the pod
	// (/run/netns/<node>-<name>), which it deletes with the pod.
	New bool `json:"new,omitempty"`
	// IP asks for this address; "" lets IPAM pick one.
	IP string `json:"ip,omitempty"`
	// Pool names the pool IPAM picks from; "" means any enabled pool.
	Pool string `json:"pool,omitempty"`
}

// PodInfo is a pod as the API shows it.
type PodInfo struct {
	Name     string `json:"name"`
	IP       string `json:"ip"`
	Netns    string `json:"netns"`
	Tap      string `json:"tap"`
	MAC      string `json:"mac"`
	Node     string `json:"node"`
	Port     int    `json:"port"`
	Attached bool   `json:"attached"`
	Error    string `json:"error,omitempty"`
	Created  string `json:"created"`
}

// Error is the body of an error answer.
type Error struct {
	Error string `json:"error"`
	// Field is the request's field at fault (FieldPool), if one is.
	Field string `json:"field,omitempty"`
}

// FieldPool in an Error: the pool the request names does not exist or
// gives no addresses.
const FieldPool = "pool"
