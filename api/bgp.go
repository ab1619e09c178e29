package api

import (
	"fmt"
	"net/netip"
	"path"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// BGP defaults (docs/calico-conventions.md §5.1).
const (
	DefaultASNumber          ASNumber = 64512
	DefaultBGPListenPort              = 179
	DefaultLogSeverityScreen          = "Info"
	// BindModeNone listens on all addresses; BindModeNodeIP on the
	// node's address only.
	BindModeNone   = "None"
	BindModeNodeIP = "NodeIP"
	// BGPConfigurationGlobal is the name of the global BGPConfiguration;
	// "node.<nodename>" names a per-node override.
	BGPConfigurationGlobal = "default"
	// BGPConfigurationNodePrefix starts the name of a node's own
	// BGPConfiguration: node.<nodename>.
	BGPConfigurationNodePrefix = "node."
)

// BGPConfiguration is the global ("default") or per-node ("node.<name>")
// BGP configuration (docs/calico-conventions.md §5.2).
type BGPConfiguration struct {
	TypeMeta
	ObjectMeta `json:"metadata"`
	Spec       BGPConfigurationSpec `json:"spec"`
}

// BGPConfigurationSpec has the Calico fields podnet implements.
type BGPConfigurationSpec struct {
	// LogSeverityScreen: Debug, Info (default), Warning, Error, Fatal in
	// Calico; podnet accepts Info only until the BGP speaker's log level
	// follows it (its messages go to the daemon's log at --log-level).
	LogSeverityScreen string `json:"logSeverityScreen,omitempty"`
	// NodeToNodeMeshEnabled: iBGP full mesh between nodes; default true.
	// Global only.
	NodeToNodeMeshEnabled *bool `json:"nodeToNodeMeshEnabled,omitempty"`
	// ASNumber is the default AS of nodes; default 64512. Global only.
	ASNumber *ASNumber `json:"asNumber,omitempty"`
	// ListenPort is the port the BGP speaker listens on; default 179. A
	// node's own BGPConfiguration overrides the global one; peers dial
	// the port the other node listens on.
	ListenPort int `json:"listenPort,omitempty"`
	// BindMode: None (listen on all addresses, default) or NodeIP
	// (listen on the node's address only). Global only.
	BindMode string `json:"bindMode,omitempty"`
}

// NewBGPConfiguration returns a BGPConfiguration named name.
func NewBGPConfiguration(name string) *BGPConfiguration {
	return &BGPConfiguration{TypeMeta: TypeMeta{APIVersion: APIVersion, Kind: KindBGPConfiguration}, ObjectMeta: ObjectMeta{Name: name}}
}

// ResourceKind implements Resource.
func (*BGPConfiguration) ResourceKind() string { return KindBGPConfiguration }

// SetDefaults implements Resource. Only the global configuration gets
// defaults: a per-node one inherits what it leaves unset.
func (c *BGPConfiguration) SetDefaults() {
	if c.Name != BGPConfigurationGlobal {
		return
	}
	s := &c.Spec
	if s.LogSeverityScreen == "" {
		s.LogSeverityScreen = DefaultLogSeverityScreen
	}
	if s.NodeToNodeMeshEnabled == nil {
		t := true
		s.NodeToNodeMeshEnabled = &t
	}
	if s.ASNumber == nil {
		a := DefaultASNumber
		s.ASNumber = &a
	}
	if s.ListenPort == 0 {
		s.ListenPort = DefaultBGPListenPort
	}
}

// Validate implements Resource.
func (c *BGPConfiguration) Validate() error {
	var fe fieldErrors
	validateMeta(&fe, &c.ObjectMeta)
	global := c.Name == BGPConfigurationGlobal
	if c.Name != "" && !global && (!strings.HasPrefix(c.Name, BGPConfigurationNodePrefix) || len(c.Name) == len(BGPConfigurationNodePrefix)) {
		fe.add("Metadata.Name", c.Name, `BGPConfiguration name must be "default" or "node.<nodename>"`)
	}
	s := &c.Spec
	switch s.LogSeverityScreen {
	case "", DefaultLogSeverityScreen:
	case "Debug", "Warning", "Error", "Fatal":
		fe.add("BGPConfiguration.Spec.LogSeverityScreen", s.LogSeverityScreen, notYet("logSeverityScreen other than Info", "BGP messages go to the daemon's log at its --log-level"))
	default:
		fe.add("BGPConfiguration.Spec.LogSeverityScreen", s.LogSeverityScreen, "must be one of Debug, Info, Warning, Error, Fatal")
	}
	if s.ListenPort < 0 || s.ListenPort > 65535 {
		fe.add("BGPConfiguration.Spec.ListenPort", s.ListenPort, "must be between 1 and 65535")
	}
	if s.ASNumber != nil && *s.ASNumber == 0 {
		fe.add("BGPConfiguration.Spec.ASNumber", 0, "AS number must be between 1 and 4294967295")
	}
	switch s.BindMode {
	case "", BindModeNone, BindModeNodeIP:
	default:
		fe.add("BGPConfiguration.Spec.BindMode", s.BindMode, "must be one of None, NodeIP")
	}
	if !global {
		if s.NodeToNodeMeshEnabled != nil {
			fe.add("BGPConfiguration.Spec.NodeToNodeMeshEnabled", *s.NodeToNodeMeshEnabled, "NodeToNodeMeshEnabled can only be set on the global BGPConfiguration (default)")
		}
		if s.BindMode != "" {
			// Calico's speaker reads the bind mode from the global
			// configuration only.
			fe.add("BGPConfiguration.Spec.BindMode", s.BindMode, notYet("bindMode on a node's BGPConfiguration", "set it on the global BGPConfiguration (default)"))
		}
		if s.ASNumber != nil {
			fe.add("BGPConfiguration.Spec.ASNumber", *s.ASNumber, "ASNumber can only be set on the global BGPConfiguration (default); set Node.Spec.BGP.ASNumber instead")
		}
	}
	return fe.err()
}

// BGPPeer is a BGP session to configure: with a fixed peer (peerIP and
// asNumber) or with the nodes matching peerSelector; on all nodes, on one
// node, or on the nodes matching nodeSelector (docs/calico-conventions.md §5.3).
type BGPPeer struct {
	TypeMeta
	ObjectMeta `json:"metadata"`
	Spec       BGPPeerSpec `json:"spec"`
}

// BGPPeerSpec has the Calico fields podnet implements, and a password
// read from a file or the environment instead of a Kubernetes secret.
type BGPPeerSpec struct {
	// Node restricts the peering to one node; empty with no NodeSelector
	// means all nodes (a global peer).
	Node string `json:"node,omitempty"`
	// NodeSelector restricts the peering to matching nodes; exclusive
	// with Node.
	NodeSelector string `json:"nodeSelector,omitempty"`
	// PeerIP is "<IPv4>[:port]" or "[<IPv6>]:port" (or a bare IPv6).
	PeerIP string `json:"peerIP,omitempty"`
	// ASNumber is the peer's AS, 1..4294967295.
	ASNumber ASNumber `json:"asNumber,omitempty"`
	// LocalASNumber overrides this side's AS for the session.
	LocalASNumber *ASNumber `json:"localASNumber,omitempty"`
	// PeerSelector peers with the podnet nodes it matches (their own AS);
	// PeerIP and ASNumber must then be empty.
	PeerSelector string `json:"peerSelector,omitempty"`
	// Password is the TCP MD5 password source.
	Password *BGPPassword `json:"password,omitempty"`
	// KeepaliveTime and HoldTime are the BGP timers; unset (or a hold
	// time of 0) = the BGP speaker's defaults (30s, 90s).
	KeepaliveTime *Duration `json:"keepaliveTime,omitempty"`
	HoldTime      *Duration `json:"holdTime,omitempty"`
}

// DefaultHoldTime is the hold time of a session whose BGPPeer sets none.
const DefaultHoldTime = 90 * time.Second

// BGPPassword says where the session password comes from: exactly one of
// a file on the node (`password: {secretFile: /etc/podnet/peer.pw}`,
// trailing newline stripped) or an environment variable of the daemon
// (`password: {env: PODNET_PEER_PW}`). Calico's secretKeyRef needs
// Kubernetes and is not accepted.
type BGPPassword struct {
	SecretFile string `json:"secretFile,omitempty"`
	Env        string `json:"env,omitempty"`
}

// NewBGPPeer returns a BGPPeer named name.
func NewBGPPeer(name string) *BGPPeer {
	return &BGPPeer{TypeMeta: TypeMeta{APIVersion: APIVersion, Kind: KindBGPPeer}, ObjectMeta: ObjectMeta{Name: name}}
}

// ResourceKind implements Resource.
func (*BGPPeer) ResourceKind() string { return KindBGPPeer }

// SetDefaults implements Resource; a BGPPeer has no defaults.
func (p *BGPPeer) SetDefaults() {}

// ParsePeerIP splits PeerIP into address and port (0 when absent).
func ParsePeerIP(s string) (netip.Addr, int, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap(), 0, nil // ::ffff:a.b.c.d is the IPv4 address
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.Addr{}, 0, err
	}
	if ap.Port() == 0 {
		return netip.Addr{}, 0, fmt.Errorf("peer %q: port 0", s)
	}
	return ap.Addr().Unmap(), int(ap.Port()), nil
}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Validate implements Resource.
func (p *BGPPeer) Validate() error {
	var fe fieldErrors
	validateMeta(&fe, &p.ObjectMeta)
	s := &p.Spec
	if s.Node != "" && s.NodeSelector != "" {
		fe.add("BGPPeer.Spec.NodeSelector", s.NodeSelector, "node and nodeSelector cannot both be set")
	}
	if s.Node != "" && !dnsSubdomain.MatchString(s.Node) {
		fe.add("BGPPeer.Spec.Node", s.Node, nameReason)
	}
	if s.NodeSelector != "" {
		validateSelector(&fe, "BGPPeer.Spec.NodeSelector", s.NodeSelector)
	}
	if s.PeerSelector != "" {
		validateSelector(&fe, "BGPPeer.Spec.PeerSelector", s.PeerSelector)
		if s.PeerIP != "" {
			fe.add("BGPPeer.Spec.PeerIP", s.PeerIP, "peerIP must be empty when peerSelector is set")
		}
		if s.ASNumber != 0 {
			fe.add("BGPPeer.Spec.ASNumber", s.ASNumber, "asNumber must be empty when peerSelector is set")
		}
	} else {
		if s.PeerIP == "" {
			fe.add("BGPPeer.Spec.PeerIP", "", "peerIP is required unless peerSelector is set")
		} else if a, _, err := ParsePeerIP(s.PeerIP); err != nil || a.Zone() != "" {
			fe.add("BGPPeer.Spec.PeerIP", s.PeerIP, "must be <IPv4>[:port] or [<IPv6>]:port")
		} else if !a.Unmap().Is4() {
			fe.add("BGPPeer.Spec.PeerIP", s.PeerIP, notYet("IPv6 BGP peers", noteNoIPv6+" (IPv6 pools are refused too)"))
		} else if !a.Unmap().IsGlobalUnicast() {
			// 0.0.0.0, loopback, link-local, multicast, broadcast: no BGP
			// router is there, and 0.0.0.0 would make every node a peer
			// of itself.
			fe.add("BGPPeer.Spec.PeerIP", s.PeerIP, "must be a unicast address of a BGP router (not unspecified, loopback, link-local, multicast or broadcast)")
		}
		if s.ASNumber == 0 {
			fe.add("BGPPeer.Spec.ASNumber", 0, "asNumber is required (1..4294967295) unless peerSelector is set")
		}
	}
	if s.LocalASNumber != nil && *s.LocalASNumber == 0 {
		fe.add("BGPPeer.Spec.LocalASNumber", 0, "AS number must be between 1 and 4294967295")
	}
	if pw := s.Password; pw != nil {
		switch {
		case (pw.SecretFile == "") == (pw.Env == ""):
			fe.add("BGPPeer.Spec.Password", pw.SecretFile+pw.Env, "set exactly one of password.secretFile and password.env")
		case pw.SecretFile != "" && !strings.HasPrefix(pw.SecretFile, "/"):
			fe.add("BGPPeer.Spec.Password.SecretFile", pw.SecretFile, "must be an absolute path")
		case pw.SecretFile != "" && path.Clean(pw.SecretFile) != pw.SecretFile:
			// Only the form can be checked here: the file is read by the
			// daemon of each node the peering applies to, and node status
			// says when it cannot be.
			fe.add("BGPPeer.Spec.Password.SecretFile", pw.SecretFile, "must be the path of a file, written plainly (no trailing /, no . or .. parts, no //): "+path.Clean(pw.SecretFile)+"?")
		case pw.Env != "" && !envName.MatchString(pw.Env):
			fe.add("BGPPeer.Spec.Password.Env", pw.Env, "must be an environment variable name")
		}
	}
	// RFC 4271 §4.2: the hold time is 0 or at least 3s. Our speaker
	// (GoBGP) takes 0 as unset: the default 90s.
	if h := s.HoldTime; h != nil && (h.Duration < 0 || (h.Duration > 0 && h.Duration < 3*time.Second) || h.Duration%time.Second != 0) {
		fe.add("BGPPeer.Spec.HoldTime", h.Duration, "hold time must be 0 or a whole number of seconds ≥ 3s")
	}
	if k := s.KeepaliveTime; k != nil {
		switch {
		case k.Duration < time.Second || k.Duration%time.Second != 0:
			fe.add("BGPPeer.Spec.KeepaliveTime", k.Duration, "keepalive time must be a whole number of seconds ≥ 1s")
		case s.HoldTime != nil && s.HoldTime.Duration > 0 && k.Duration >= s.HoldTime.Duration:
			fe.add("BGPPeer.Spec.KeepaliveTime", k.Duration, "keepalive time must be less than the hold time")
		case (s.HoldTime == nil || s.HoldTime.Duration == 0) && k.Duration >= DefaultHoldTime:
			// The session would run on the default hold time and expire
			// before each keepalive.
			fe.add("BGPPeer.Spec.KeepaliveTime", k.Duration, fmt.Sprintf("keepalive time must be less than the hold time (%v when holdTime is 0 or not set)", DefaultHoldTime))
		}
	}
	return fe.err()
}

// asnColumn formats an AS number for tables.
func asnColumn(a ASNumber) string { return strconv.FormatUint(uint64(a), 10) }
