package api

import (
	"net/netip"
	"strings"
)

// WorkloadEndpoint is one pod's interface on a node: its TAP, network
// namespace, addresses and MAC. Its name is WorkloadEndpointName(node,
// pod).
type WorkloadEndpoint struct {
	TypeMeta
	ObjectMeta `json:"metadata"`
	Spec       WorkloadEndpointSpec `json:"spec"`
}

// WorkloadEndpointSpec describes a pod's endpoint.
type WorkloadEndpointSpec struct {
	// Node is the node the pod runs on; required.
	Node string `json:"node"`
	// Workload is the pod's name; required.
	Workload string `json:"workload"`
	// InterfaceName is the TAP device on the node side; required.
	InterfaceName string `json:"interfaceName"`
	// IPNetworks are the pod's addresses as /32 CIDRs.
	IPNetworks []string `json:"ipNetworks,omitempty"`
	// MAC is the pod interface's MAC address.
	MAC string `json:"mac,omitempty"`
	// Netns is the path of the pod's network namespace.
	Netns string `json:"netns,omitempty"`
}

// WorkloadEndpointName is the endpoint name for a pod on a node:
// "<node>-<pod>".
func WorkloadEndpointName(node, pod string) string { return node + "-" + pod }

// NewWorkloadEndpoint returns a WorkloadEndpoint named name.
func NewWorkloadEndpoint(name string) *WorkloadEndpoint {
	return &WorkloadEndpoint{TypeMeta: TypeMeta{APIVersion: APIVersion, Kind: KindWorkloadEndpoint}, ObjectMeta: ObjectMeta{Name: name}}
}

// ResourceKind implements Resource.
func (*WorkloadEndpoint) ResourceKind() string { return KindWorkloadEndpoint }

// SetDefaults implements Resource: canonical CIDRs.
func (w *WorkloadEndpoint) SetDefaults() {
	for i, n := range w.Spec.IPNetworks {
		if p, err := netip.ParsePrefix(n); err == nil {
			w.Spec.IPNetworks[i] = p.String()
		}
	}
}

// Validate implements Resource.
func (w *WorkloadEndpoint) Validate() error {
	var fe fieldErrors
	validateMeta(&fe, &w.ObjectMeta)
	s := &w.Spec
	if s.Node == "" {
		fe.add("WorkloadEndpoint.Spec.Node", "", "node is required")
	} else if !dnsSubdomain.MatchString(s.Node) {
		fe.add("WorkloadEndpoint.Spec.Node", s.Node, nameReason)
	}
	if s.Workload == "" {
		fe.add("WorkloadEndpoint.Spec.Workload", "", "workload is required")
	}
	switch {
	case s.InterfaceName == "":
		fe.add("WorkloadEndpoint.Spec.InterfaceName", "", "interfaceName is required")
	case len(s.InterfaceName) > 15 || strings.ContainsAny(s.InterfaceName, "/ \t\n:"):
		fe.add("WorkloadEndpoint.Spec.InterfaceName", s.InterfaceName, "must be a Linux interface name (at most 15 characters, no '/', ':' or spaces)")
	}
	for _, n := range s.IPNetworks {
		if p, err := netip.ParsePrefix(n); err != nil || !p.Addr().Is4() || p.Bits() != 32 {
			fe.add("WorkloadEndpoint.Spec.IPNetworks", n, "must be an IPv4 address with /32, e.g. 192.168.0.5/32")
		}
	}
	if s.MAC != "" && !validMAC(s.MAC) {
		fe.add("WorkloadEndpoint.Spec.MAC", s.MAC, "must be a MAC address")
	}
	if s.Netns != "" && !strings.HasPrefix(s.Netns, "/") {
		fe.add("WorkloadEndpoint.Spec.Netns", s.Netns, "must be an absolute path")
	}
	return fe.err()
}
