package api

import (
	"fmt"
	"regexp"
	"strings"
)

// UnsupportedError is a field or kind that is valid in Calico but that
// podnet does not implement, so that a user migrating from Calico can
// tell it from a typo (which gets calicoctl's UnknownFieldError). Field
// is the path in the document ("spec.communities"), empty for a kind.
type UnsupportedError struct {
	Kind, Field string
	// Note says why, and what to use instead where podnet has something.
	Note string
}

func (e *UnsupportedError) Error() string {
	what := "kind " + e.Kind
	if e.Field != "" {
		what = e.Kind + " field " + e.Field
	}
	msg := "podnet does not support " + what + " (yet)"
	if e.Note != "" {
		msg += ": " + e.Note
	}
	return msg
}

// Notes shared by several entries.
const (
	noteNoK8s     = "podnet runs without Kubernetes"
	noteNoPolicy  = "podnet has no network policy"
	noteNoIPv6    = "podnet does not route IPv6 yet"
	noteNoService = "podnet does not advertise service addresses over BGP"
	notePassword  = "Kubernetes secrets are not available; give the password with password.secretFile (a file on each node) or password.env (an environment variable of the daemon)"
)

// calicoOnlyFields are the fields of Calico's v3 API, by kind and path
// below the resource (list indices dropped), that podnet refuses.
var calicoOnlyFields = map[string]map[string]string{
	KindIPPool: {
		"spec.namespaceSelector": noteNoK8s + "; use nodeSelector, or name the pool when adding the pod (podnet pod add --pool)",
		"spec.ipip":              "this is Calico's deprecated v1 form; use ipipMode",
		"spec.nat-outgoing":      "this is Calico's deprecated v1 form; use natOutgoing",
	},
	KindIPAMConfiguration: {
		"spec.kubeVirtVMAddressPersistence": noteNoK8s,
	},
	KindNode: {
		"spec.ipv6VXLANTunnelAddr":    noteNoIPv6,
		"spec.vxlanTunnelMACAddrV6":   noteNoIPv6,
		"spec.wireguard":              "podnet has no WireGuard encryption",
		"status.wireguardPublicKey":   "podnet has no WireGuard encryption",
		"status.wireguardPublicKeyV6": "podnet has no WireGuard encryption",
		"status.podCIDRs":             noteNoK8s,
	},
	KindBGPConfiguration: {
		"spec.serviceClusterIPs":              noteNoService,
		"spec.serviceExternalIPs":             noteNoService,
		"spec.serviceLoadBalancerIPs":         noteNoService,
		"spec.serviceLoadBalancerAggregation": noteNoService,
		"spec.communities":                    "podnet does not set BGP communities",
		"spec.prefixAdvertisements":           "podnet does not set BGP communities",
		"spec.nodeMeshPassword":               "the node-to-node mesh has no password; " + notePassword + " on a BGPPeer instead",
		"spec.nodeMeshMaxRestartTime":         "podnet's BGP speaker does not do graceful restart",
		"spec.ignoredInterfaces":              "podnet does not import interface routes",
		"spec.localWorkloadPeeringIPV4":       "pods cannot peer with the node",
		"spec.localWorkloadPeeringIPV6":       "pods cannot peer with the node",
		"spec.programClusterRoutes":           "podnet always programs the routes it learns",
		"spec.ipv4NormalRoutePriority":        "podnet does not install pod routes in a kernel routing table",
		"spec.ipv6NormalRoutePriority":        noteNoIPv6,
	},
	KindBGPPeer: {
		"spec.password.secretKeyRef":    notePassword,
		"spec.keepOriginalNextHop":      "podnet does not change next-hop handling per peer",
		"spec.nextHopMode":              "podnet does not change next-hop handling per peer",
		"spec.sourceAddress":            "podnet does not choose the session's source address per peer",
		"spec.failureDetectionMode":     "podnet has no BFD",
		"spec.restartMode":              "podnet's BGP speaker does not do graceful restart",
		"spec.maxRestartTime":           "podnet's BGP speaker does not do graceful restart",
		"spec.birdGatewayMode":          "podnet has no BIRD",
		"spec.numAllowedLocalASNumbers": "podnet does not accept its own AS in paths",
		"spec.ttlSecurity":              "podnet does not set GTSM (TTL security)",
		"spec.reachableBy":              "podnet adds no static route to the peer",
		"spec.filters":                  "podnet has no BGP filters (BGPFilter)",
		"spec.reversePeering":           "the selected nodes always peer back (Calico's Auto)",
		"spec.localWorkloadSelector":    "pods cannot peer with the node",
	},
}

// calicoOnlyKinds are Calico's v3 kinds that podnet does not have.
var calicoOnlyKinds = map[string]string{
	"BGPFilter":                     "podnet has no BGP filters: each node advertises its blocks to every peer",
	"FelixConfiguration":            "podnet has no Felix; its node settings are the daemon's flags",
	"ClusterInformation":            "the datastore needs no cluster information",
	"KubeControllersConfiguration":  noteNoK8s,
	"GlobalNetworkPolicy":           noteNoPolicy,
	"NetworkPolicy":                 noteNoPolicy,
	"StagedGlobalNetworkPolicy":     noteNoPolicy,
	"StagedNetworkPolicy":           noteNoPolicy,
	"StagedKubernetesNetworkPolicy": noteNoPolicy,
	"Tier":                          noteNoPolicy,
	"GlobalNetworkSet":              noteNoPolicy,
	"NetworkSet":                    noteNoPolicy,
	"HostEndpoint":                  noteNoPolicy,
	"Profile":                       noteNoPolicy,
	"IPReservation":                 "podnet IPAM has no reserved ranges; make a smaller pool or a disabled one",
	"BlockAffinity":                 "block affinities are IPAM's own; see podnet ipam show --show-blocks",
	"CalicoNodeStatus":              "see podnet node status",
}

var listIndex = regexp.MustCompile(`\[[0-9]+\]`)

// unsupportedField turns an unknown field of kind at path (below the
// resource) into an *UnsupportedError when Calico has that field.
func unsupportedField(kind, field, fullPath string) error {
	if note, ok := calicoOnlyFields[kind][listIndex.ReplaceAllString(field, "")]; ok {
		return &UnsupportedError{Kind: kind, Field: fullPath, Note: note}
	}
	return nil
}

// unsupportedKind is an *UnsupportedError for one of Calico's kinds (or
// their lists), else nil.
func unsupportedKind(kind string) error {
	k := strings.TrimSuffix(kind, "List")
	if note, ok := calicoOnlyKinds[k]; ok {
		return &UnsupportedError{Kind: k, Note: note}
	}
	return nil
}

// notYet is the reason of a FieldError for a value that Calico accepts
// and podnet cannot honour yet.
func notYet(what, why string) string {
	return fmt.Sprintf("podnet does not support %s yet: %s", what, why)
}
