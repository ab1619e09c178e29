package node

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"

	"podnet/api"
	"podnet/internal/packet"
	"podnet/router"
	"podnet/router/bgp"
	"podnet/routing"
	vswitch "podnet/switch"
)

// The control loop: one goroutine owns the node's mutable state and is
// the only one that publishes to the switch (route tables, nodes, NAT
// pools) and installs kernel routes. Everyone else hands it work through
// n.do: the API (pods), BGP (learned paths), the address watcher and the
// datastore goroutine (what the resources say). The loop never waits on
// the datastore or the network, so whatever etcd does, learned routes
// reach the switch and the API answers.

// errStopped answers requests that come after the loop has stopped.
var errStopped = errors.New("the node is stopping")

// state is what the control loop owns.
type state struct {
	pods      map[string]*pod
	tunnels   tunnelState  // which encapsulations have their sockets open
	hostAddrs []netip.Addr // the node's own addresses
	learned   []bgp.Path   // paths from BGP peers, each prefix's best first
	view      view         // what the datastore said last
	// haveView is false until the first view arrives: until then
	// learned paths wait, as their pools decide how to reach them.
	haveView bool
	kernel   map[netip.Prefix]kernelRoute
	// kernelSkipped are prefixes whose kernel route belongs to someone
	// else (with its protocol), so the daemon left it alone.
	kernelSkipped map[netip.Prefix]netlink.RouteProtocol
	// rejected are the learned paths the import policy refuses now,
	// with the reason (importPaths).
	rejected map[rejectKey]string
	// appliedMTU is the pod MTU podnet0 and the pods' eth0 have (0:
	// not set yet); applyPodMTU brings them to podMTU.
	appliedMTU int
	// overheadKnown is false until the pools were read (at start, or
	// with the first view when etcd did not answer then): until then
	// the pods keep the MTU they have.
	overheadKnown bool
}

// view is what the datastore goroutine read last, digested for routing.
type view struct {
	pools     []*api.IPPool
	blocks    []netip.Prefix // this node's affine blocks
	nodeAddrs []netip.Addr   // other nodes' underlay addresses
	vteps     map[netip.Addr]packet.MAC
	// overhead is what the pools' encapsulation costs pods in MTU: 20
	// for IP-in-IP, 50 for VXLAN, the most any pool needs.
	overhead int
	// explicitPeers are the sessions a BGPPeer configures (not the
	// mesh): the import policy takes prefixes outside the pools only
	// from them.
	explicitPeers map[netip.Addr]bool
	// lent are the addresses other nodes borrowed (from blocks not
	// theirs), each with the underlay address of the node that holds it;
	// owners the other nodes' blocks, each with its node's address.
	lent   map[netip.Addr]netip.Addr
	owners map[netip.Prefix]netip.Addr
}

// podPhase says where a pod is in its life.
type podPhase uint8

const (
	// podAdding: AddPod holds the name (and address) while it talks to
	// IPAM and creates the link; not listed yet.
	podAdding podPhase = iota
	// podReady: listed, attached or not.
	podReady
	// podDeleting: detached, not listed; DeletePod is releasing its
	// address and endpoint. The name stays taken until it is done, so
	// a new pod of that name cannot get its IPAM handle released.
	podDeleting
	// podReleasing: gone from the node (link, namespace); its address
	// and WorkloadEndpoint wait for the datastore, which the datastore
	// goroutine retries (retryReleases). Not listed; the name stays
	// taken, as for podDeleting.
	podReleasing
)

// pod is a pod the node knows: its record and, when attached, its port.
type pod struct {
	rec      PodRecord
	phase    podPhase
	port     int
	attached bool
	err      string // why it is not attached
	// netns is the namespace of rec.Netns, as AddPod or restorePods
	// found it (zero: unknown), for netnsTaken.
	netns netnsID
	// busy: checkPods is comparing it with the datastore; a delete
	// waits until it is done.
	busy bool
}

func newState() *state {
	return &state{pods: map[string]*pod{}, kernel: map[netip.Prefix]kernelRoute{},
		kernelSkipped: map[netip.Prefix]netlink.RouteProtocol{}}
}

// podMTU is the pods' MTU with the encapsulation the pools use now.
func (s *state) podMTU(configured int) int { return routing.PodMTU(configured, s.view.overhead) }

// listed are the pods the API shows, sorted by name.
func (s *state) listed() []*pod {
	var out []*pod
	for _, p := range s.pods {
		if p.phase == podReady {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b *pod) int { return strings.Compare(a.rec.Name, b.rec.Name) })
	return out
}

// routineLoop runs the control loop until ctx is done, then removes the
// kernel routes it installed. Run starts it.
func (n *Node) routineLoop(ctx context.Context, s *state) {
	defer close(n.loopDone)
	n.cleanStaleKernelRoutes()
	for {
		select {
		case <-ctx.Done():
			n.syncKernelRoutes(s, nil)
			return
		case op := <-n.ops:
			op(s)
		}
	}
}

// do runs f on the control loop and returns its error, or errStopped
// when the loop has stopped. f must not block: no datastore, no network,
// no n.do.
func (n *Node) do(f func(*state) error) error {
	res := make(chan error, 1)
	select {
	case n.ops <- func(s *state) { res <- f(s) }:
		return <-res
	case <-n.loopDone:
		return errStopped
	}
}

// onRoutes is the BGP speaker's OnRoutes: the loop takes the paths and
// publishes at once. A change in what BGP says often follows a change in
// the cluster (a node came or went), so the datastore is read again too,
// in case a watch missed it; the routes do not wait for that. That read
// comes at most once per routesRereadEvery, so that a peer flapping a
// prefix costs every node a read a second, not one per change.
func (n *Node) onRoutes(paths []bgp.Path) {
	err := n.do(func(s *state) error {
		s.learned = paths
		return n.publish(s)
	})
	if err != nil && !errors.Is(err, errStopped) {
		n.log.Warn("publish routes", "err", err)
	}
	n.routesReread.kick()
}

// routesRereadEvery bounds the datastore reads that BGP route changes
// ask for.
const routesRereadEvery = time.Second

// rateLimited calls f at most once per every: the first kick schedules
// f after every, and the kicks until then are folded into that call.
type rateLimited struct {
	every time.Duration
	f     func()
	armed atomic.Bool
	// after schedules; nil means time.AfterFunc (a test's own clock
	// otherwise).
	after func(time.Duration, func())
}

func (r *rateLimited) kick() {
	if !r.armed.CompareAndSwap(false, true) {
		return
	}
	fire := func() {
		r.armed.Store(false)
		r.f()
	}
	if r.after != nil {
		r.after(r.every, fire)
		return
	}
	time.AfterFunc(r.every, fire)
}

// setView takes what the datastore goroutine read: the switch learns the
// nodes and NAT pools, the routes follow, and so does the pods' MTU.
func (n *Node) setView(s *state, v view) error {
	s.view, s.haveView, s.overheadKnown = v, true, true
	n.applyPodMTU(s)
	n.syncTunnels(s)
	nodes := vswitch.NodeSet{}
	for _, a := range v.nodeAddrs {
		nodes[a] = true
	}
	n.sw.SetNodes(nodes)
	nc := vswitch.NATConfig{Handler: n.nat}
	nc.Pools, nc.Allowed = routing.NATPools(v.pools)
	n.sw.SetNAT(nc)
	return n.publish(s)
}

// publish builds the route table from the state, hands it to the switch
// and brings the kernel routes to remote pods in line.
func (n *Node) publish(s *state) error {
	var remote []router.Route
	if s.haveView {
		remote = routing.RemoteRoutes(n.importPaths(s), s.view.pools, n.underlayAddr, s.view.blocks, s.view.vteps, vswitch.HostTUNName)
	}
	tab := routing.Table{
		HostAddrs: s.hostAddrs, NodeAddrs: s.view.nodeAddrs, OwnBlocks: s.view.blocks,
		Remote: remote, HostDev: vswitch.HostTUNName,
	}
	for _, p := range s.listed() {
		if p.attached {
			tab.Pods = append(tab.Pods, routing.LocalPod{Name: p.rec.Name, IP: p.rec.IP, Port: p.port})
		}
	}
	t, err := router.NewTable(tab.Routes())
	if err != nil {
		return fmt.Errorf("build route table: %w", err)
	}
	n.sw.SetRoutes(t)
	n.syncKernelRoutes(s, remote)
	return nil
}
