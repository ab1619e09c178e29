// Package api holds podnet's resource types (IPPool, IPAMConfiguration,
// Node, WorkloadEndpoint, BGPConfiguration, BGPPeer) with Calico's field
// names, their defaults and validation, the YAML/JSON codec and the table
// printer. It is pure: no datastore, no I/O beyond the io.Reader/io.Writer
// it is handed.
//
// Every resource is a Kubernetes-style envelope (apiVersion, kind,
// metadata, spec, optional status) and implements Resource. Our
// apiVersion is podnet.io/v1; documents written for Calico
// (projectcalico.org/v3) are accepted for the kinds podnet shares with
// Calico. A resource keeps the apiVersion it was written with, and is
// printed with it, so that Calico's documents go back to calicoctl
// unchanged (SetAPIVersion converts).
package api

import (
	"fmt"
	"sort"
	"strings"
)

// API versions.
const (
	// APIVersion is podnet's own group/version, used for all output.
	APIVersion = "podnet.io/v1"
	// CalicoAPIVersion is accepted on input for the kinds in CalicoKinds.
	CalicoAPIVersion = "projectcalico.org/v3"
)

// OutputAPIVersion is the apiVersion a resource of kind that carries
// apiVersion v is printed and stored with: projectcalico.org/v3 stays
// for Calico's kinds, anything else becomes podnet.io/v1.
func OutputAPIVersion(kind, v string) string {
	if k, ok := kindByName(kind); ok && k.Calico && v == CalicoAPIVersion {
		return CalicoAPIVersion
	}
	return APIVersion
}

// SetAPIVersion sets the apiVersion r is printed with: podnet.io/v1, or
// projectcalico.org/v3 for the kinds podnet shares with Calico.
func SetAPIVersion(r Resource, v string) error {
	switch k, _ := kindByName(r.ResourceKind()); {
	case v == APIVersion, v == CalicoAPIVersion && k.Calico:
		r.GetTypeMeta().APIVersion = v
		return nil
	case v == CalicoAPIVersion:
		return fmt.Errorf("%s has no %s form: it is podnet's own kind", r.ResourceKind(), CalicoAPIVersion)
	}
	return fmt.Errorf("unknown apiVersion %q (want %s or %s)", v, APIVersion, CalicoAPIVersion)
}

// Kind names.
const (
	KindIPPool            = "IPPool"
	KindIPAMConfiguration = "IPAMConfiguration"
	KindNode              = "Node"
	KindWorkloadEndpoint  = "WorkloadEndpoint"
	KindBGPConfiguration  = "BGPConfiguration"
	KindBGPPeer           = "BGPPeer"
)

// TypeMeta is the apiVersion and kind of a document.
type TypeMeta struct {
	APIVersion string `json:"apiVersion,omitempty"`
	Kind       string `json:"kind,omitempty"`
}

// ObjectMeta is the metadata every resource carries. ResourceVersion is
// the datastore revision (etcd ModRevision) the object was read at; it
// is never stored, only reported and checked.
type ObjectMeta struct {
	Name              string            `json:"name,omitempty"`
	ResourceVersion   string            `json:"resourceVersion,omitempty"`
	CreationTimestamp Time              `json:"creationTimestamp,omitzero"`
	UID               string            `json:"uid,omitempty"`
	Labels            map[string]string `json:"labels,omitempty"`
	Annotations       map[string]string `json:"annotations,omitempty"`
}

// ListMeta is the metadata of a <Kind>List.
type ListMeta struct {
	ResourceVersion string `json:"resourceVersion,omitempty"`
}

// Resource is implemented by a pointer to each resource type (*IPPool,
// *Node, ...). The kind-specific behaviour (defaults, validation, table
// columns) hangs off it; the envelope is reached with GetTypeMeta and
// GetObjectMeta.
type Resource interface {
	GetTypeMeta() *TypeMeta
	GetObjectMeta() *ObjectMeta
	// ResourceKind is the canonical kind ("IPPool"), whatever TypeMeta
	// says.
	ResourceKind() string
	// SetDefaults fills unset fields with their defaults (idempotent).
	SetDefaults()
	// Validate checks the resource; the error, if any, is a
	// *ValidationError listing every bad field.
	Validate() error
}

// GetTypeMeta implements Resource.
func (t *TypeMeta) GetTypeMeta() *TypeMeta { return t }

// GetObjectMeta implements Resource.
func (m *ObjectMeta) GetObjectMeta() *ObjectMeta { return m }

// SetDefaults applies r's defaults (see each kind's SetDefaults).
func SetDefaults(r Resource) { r.SetDefaults() }

// Validate validates r; the error is a *ValidationError.
func Validate(r Resource) error { return r.Validate() }

// KindInfo describes one kind.
type KindInfo struct {
	// Kind is the canonical name, e.g. "IPPool"; ListKind "IPPoolList".
	Kind, ListKind string
	// Plural is the lower-case plural, used as the datastore collection.
	Plural string
	// Aliases are the names accepted on the command line
	// (case-insensitively), after calicoctl.
	Aliases []string
	// Calico says whether projectcalico.org/v3 input is accepted.
	Calico bool
	// New returns an empty resource of this kind with TypeMeta set.
	New func() Resource
}

var kinds = []KindInfo{
	{Kind: KindIPPool, Plural: "ippools", Calico: true,
		Aliases: []string{"ippool", "ippools", "ipp", "ipps", "pool", "pools"},
		New:     func() Resource { return NewIPPool("") }},
	{Kind: KindIPAMConfiguration, Plural: "ipamconfigurations", Calico: true,
		Aliases: []string{"ipamconfiguration", "ipamconfigurations", "ipamconfig", "ipamconfigs"},
		New:     func() Resource { return NewIPAMConfiguration("") }},
	{Kind: KindNode, Plural: "nodes", Calico: true,
		Aliases: []string{"node", "nodes", "no"},
		New:     func() Resource { return NewNode("") }},
	{Kind: KindWorkloadEndpoint, Plural: "workloadendpoints",
		Aliases: []string{"workloadendpoint", "workloadendpoints", "wep", "weps"},
		New:     func() Resource { return NewWorkloadEndpoint("") }},
	{Kind: KindBGPConfiguration, Plural: "bgpconfigurations", Calico: true,
		Aliases: []string{"bgpconfiguration", "bgpconfigurations", "bgpconfig", "bgpconfigs"},
		New:     func() Resource { return NewBGPConfiguration("") }},
	{Kind: KindBGPPeer, Plural: "bgppeers", Calico: true,
		Aliases: []string{"bgppeer", "bgppeers", "bgpp", "bgpps", "bp", "bps"},
		New:     func() Resource { return NewBGPPeer("") }},
}

func init() {
	for i := range kinds {
		kinds[i].ListKind = kinds[i].Kind + "List"
	}
}

// Kinds lists every kind, in a stable order.
func Kinds() []KindInfo { return append([]KindInfo(nil), kinds...) }

// LookupKind finds a kind by a command-line name: an alias or the kind
// itself, case-insensitively ("pools", "IPPool", "bgpp").
func LookupKind(name string) (KindInfo, error) {
	l := strings.ToLower(name)
	for _, k := range kinds {
		if strings.ToLower(k.Kind) == l {
			return k, nil
		}
		for _, a := range k.Aliases {
			if a == l {
				return k, nil
			}
		}
	}
	return KindInfo{}, fmt.Errorf("resource type '%s' is not supported", name)
}

// kindByName finds a kind by its exact document name ("IPPool").
func kindByName(kind string) (KindInfo, bool) {
	for _, k := range kinds {
		if k.Kind == kind {
			return k, true
		}
	}
	return KindInfo{}, false
}

// New returns an empty resource of the exact kind ("IPPool") with its
// TypeMeta set, or an error for an unknown kind.
func New(kind string) (Resource, error) {
	k, ok := kindByName(kind)
	if !ok {
		return nil, fmt.Errorf("unknown kind %q", kind)
	}
	return k.New(), nil
}

// Key names a resource for messages: "IPPool(default-ipv4-ippool)".
func Key(r Resource) string {
	return r.ResourceKind() + "(" + r.GetObjectMeta().Name + ")"
}

// SortByName sorts resources by kind order, then name.
func SortByName(rs []Resource) {
	order := map[string]int{}
	for i, k := range kinds {
		order[k.Kind] = i
	}
	sort.SliceStable(rs, func(i, j int) bool {
		ki, kj := order[rs[i].ResourceKind()], order[rs[j].ResourceKind()]
		if ki != kj {
			return ki < kj
		}
		return rs[i].GetObjectMeta().Name < rs[j].GetObjectMeta().Name
	})
}
