// Package lab builds a whole podnet cluster on one machine out of network
// namespaces: an underlay fabric (a Linux bridge), nodes that run the real
// `podnet daemon`, one etcd datastore they all share, and pods attached to
// them. It backs `podnet lab`, the integration tests and the benchmarks,
// and it always cleans up after itself.
//
// Topology of a lab named NAME with two nodes and three pods:
//
//	root namespace: podnet datastore serve (etcd on RUNDIR/etcd.sock)
//	                  NAME-fabric: br0 10.77.0.1/24
//	                  w1 │                  │ w2
//	NAME-worker1: eth0 10.77.0.11    NAME-worker2: eth0 10.77.0.12
//	  podnet daemon --node worker1     podnet daemon --node worker2
//	    TAP │            │ TAP                │ TAP
//	NAME-test-1     NAME-test-3        NAME-test-2
//
// Pods get their addresses from podnet's IPAM (by default from
// 192.168.0.0/16, in blocks each node claims), not from the lab.
//
// Namespace names are an interface: other tests and tools rely on
// NAME-fabric, NAME-worker<K>, NAME-test-<J> (and NAME-external). Pods
// added to a running lab (AddPod, Scale) are NAME-<pod>; pods added by
// hand on node worker<K> (`podnet pod add --new`) are NAME-worker<K>-<pod>.
// Lab names have no "-", so the prefix NAME- belongs to one lab only.
package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"sync"

	"podnet/api"
)

// Defaults and limits of a lab.
const (
	// DefaultName is the lab name used when Config.Name is empty.
	DefaultName = "podnet"
	// DefaultNodes is the node count used when Config.Nodes is 0.
	DefaultNodes = 2
	// DefaultPods is the pod count used when Config.Pods is 0.
	DefaultPods = 3
	// NoPods, as Config.Pods, creates no pods at all.
	NoPods = -1
	// MaxNodes keeps node underlay addresses (10.77.0.(10+K)) inside the
	// fabric's /24.
	MaxNodes = 244
	// MaxPodsPerNode bounds a lab's size: IPAM could hand out more, but a
	// lab with more pods than this per node is a mistake, not a test.
	MaxPodsPerNode = 253
	// DefaultRunRoot is the parent of every lab's run directory.
	DefaultRunRoot = "/run/podnet/lab"
	// NetnsDir is where `ip netns add` mounts named namespaces.
	NetnsDir = "/run/netns"
)

// FabricBridge is the bridge in NAME-fabric. The fabric is a plain L2
// segment: nodes reach each other through it.
const FabricBridge = "br0"

// FabricAddress is br0's address and the nodes' default gateway.
var FabricAddress = netip.MustParsePrefix("10.77.0.1/24")

// Errors callers can test for with errors.Is.
var (
	// ErrExists: a lab with that name (run dir or namespaces) is already
	// there. Remove it with Down(name) or pick another name.
	ErrExists = errors.New("lab already exists")
	// ErrUnknownTarget: Exec was given a target that is neither "fabric",
	// a node nor a pod of the lab. The error text lists the valid targets.
	ErrUnknownTarget = errors.New("unknown target")
	// ErrNotFound: Open found no state.json for the lab.
	ErrNotFound = errors.New("lab not found")
)

var nameRE = regexp.MustCompile(`^[a-z][a-z0-9]{0,11}$`)

// Config describes a lab. The zero value is a valid config: lab "podnet",
// two nodes running daemons, three pods.
type Config struct {
	// Name names the lab and prefixes all its namespaces. It must match
	// ^[a-z][a-z0-9]{0,11}$. "" = "podnet".
	Name string
	// Nodes is the number of nodes worker1..workerN, 1..MaxNodes. 0 = 2.
	Nodes int
	// Pods is the number of pods test-1..test-M of the deployment "test",
	// spread round-robin over the nodes. 0 = DefaultPods (3); NoPods (any
	// negative value) = none. Ignored when NoDaemon is set.
	Pods int
	// Binary is the podnet binary the lab runs (datastore serve, daemon,
	// pod add, serve-http). "" = os.Executable().
	Binary string
	// RunDir holds state.json, per-node state dirs, the etcd data dir,
	// sockets and logs. Unix socket paths are limited to 107 bytes, so it
	// must be short.
	// "" = /run/podnet/lab/<Name>. Open(name) and Down(name) only find labs
	// in the default place; a lab with another RunDir is opened by OpenDir
	// and removed by Lab.Down or Teardown (Down(name) still sweeps its
	// namespaces).
	RunDir string
	// NoDaemon builds only the namespaces and the fabric: no datastore, no
	// daemons, no pods. This is the kernel-only baseline topology.
	NoDaemon bool
	// Subnets is how many underlay subnets the fabric has, 1 or 2. With 2
	// the fabric routes between 10.77.0.0/24 (odd workers) and
	// 10.78.0.0/24 (even workers), so CrossSubnet shows both of its
	// behaviours. 0 = 1.
	Subnets int
	// Encap is how pods on different nodes reach each other, as the
	// default pool's modes: "ipip" (ipipMode Always), "vxlan" (vxlanMode
	// Always), "crosssubnet" (vxlanMode CrossSubnet: encapsulate only
	// across subnets), "ipip-crosssubnet" (ipipMode CrossSubnet) or
	// "none" (plain routing through the nodes' kernels). "" = "ipip".
	Encap string
	// DaemonArgs are extra flags for every `podnet daemon`
	// (e.g. --tap-offload=false). They come after the lab's own flags,
	// --datastore included, so they can override them. nil = none.
	DaemonArgs []string
	// HTTPServer picks the pods' HTTP server: "nginx", "builtin" (the hidden
	// `podnet lab serve-http`) or "" = nginx when it is on PATH, else builtin.
	HTTPServer string
	// Verbose prints every command the lab runs (it is a teaching tool) to
	// Progress, or to os.Stderr when Progress is nil.
	Verbose bool
	// Progress receives one line per step ("starting daemon on worker1 ...
	// ready in 0.4s"). nil = no progress output.
	Progress io.Writer
}

// Encapsulations for Config.Encap.
const (
	EncapIPIP            = "ipip"
	EncapVXLAN           = "vxlan"
	EncapCrossSubnet     = "crosssubnet"
	EncapIPIPCrossSubnet = "ipip-crosssubnet"
	EncapNone            = "none"
)

// poolModeArgs are the daemon flags that give the default pool the
// modes of an encapsulation.
func poolModeArgs(encap string) []string {
	ipip, vxlan := api.EncapNever, api.EncapNever
	switch encap {
	case EncapIPIP:
		ipip = api.EncapAlways
	case EncapIPIPCrossSubnet:
		ipip = api.EncapCrossSubnet
	case EncapVXLAN:
		vxlan = api.EncapAlways
	case EncapCrossSubnet:
		vxlan = api.EncapCrossSubnet
	}
	return []string{"--default-ipv4-pool-ipip", string(ipip), "--default-ipv4-pool-vxlan", string(vxlan)}
}

// HTTP server kinds for Config.HTTPServer.
const (
	HTTPNginx   = "nginx"
	HTTPBuiltin = "builtin"
)

// NginxPackage is the smallest Debian package with an nginx binary.
const NginxPackage = "nginx-light"

// withDefaults returns cfg with every zero field filled in, or an error
// naming the first invalid field.
func (cfg Config) withDefaults() (Config, error) {
	if cfg.Name == "" {
		cfg.Name = DefaultName
	}
	if err := ValidateName(cfg.Name); err != nil {
		return cfg, err
	}
	if cfg.Nodes == 0 {
		cfg.Nodes = DefaultNodes
	}
	if cfg.Nodes < 1 || cfg.Nodes > MaxNodes {
		return cfg, fmt.Errorf("lab config: Nodes %d: must be 1..%d", cfg.Nodes, MaxNodes)
	}
	switch {
	case cfg.NoDaemon || cfg.Pods < 0:
		cfg.Pods = 0
	case cfg.Pods == 0:
		cfg.Pods = DefaultPods
	}
	if cfg.Pods > cfg.Nodes*MaxPodsPerNode {
		return cfg, fmt.Errorf("lab config: Pods %d: at most %d per node (%d with %d nodes)",
			cfg.Pods, MaxPodsPerNode, cfg.Nodes*MaxPodsPerNode, cfg.Nodes)
	}
	if cfg.Subnets == 0 {
		cfg.Subnets = 1
	}
	if cfg.Subnets < 1 || cfg.Subnets > 2 {
		return cfg, fmt.Errorf("lab config: Subnets %d: must be 1 or 2", cfg.Subnets)
	}
	switch cfg.Encap {
	case "":
		cfg.Encap = EncapIPIP
	case EncapIPIP, EncapNone, EncapCrossSubnet, EncapVXLAN, EncapIPIPCrossSubnet:
	default:
		return cfg, fmt.Errorf("lab config: Encap %q: want ipip, vxlan, crosssubnet, ipip-crosssubnet or none", cfg.Encap)
	}
	if cfg.Binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return cfg, fmt.Errorf("lab config: Binary: find own executable: %w", err)
		}
		cfg.Binary = exe
	}
	if cfg.Binary != "" {
		abs, err := filepath.Abs(cfg.Binary)
		if err != nil {
			return cfg, fmt.Errorf("lab config: Binary %q: %w", cfg.Binary, err)
		}
		cfg.Binary = abs
	}
	if cfg.RunDir == "" {
		cfg.RunDir = DefaultRunDir(cfg.Name)
	}
	switch cfg.HTTPServer {
	case HTTPNginx:
		if nginxPath() == "" {
			return cfg, fmt.Errorf("lab config: HTTPServer %q: nginx is not installed (install it with: apt-get install %s, or use --http-server builtin)", cfg.HTTPServer, NginxPackage)
		}
	case HTTPBuiltin:
	case "":
		cfg.HTTPServer = HTTPBuiltin
		if nginxPath() != "" {
			cfg.HTTPServer = HTTPNginx
		}
	default:
		return cfg, fmt.Errorf("lab config: HTTPServer %q: want %q, %q or empty", cfg.HTTPServer, HTTPNginx, HTTPBuiltin)
	}
	return cfg, nil
}

// ValidateName checks a lab name against ^[a-z][a-z0-9]{0,11}$; short names
// keep every namespace and interface name within kernel limits.
func ValidateName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("lab name %q: must match %s", name, nameRE)
	}
	return nil
}

// DefaultRunDir is the run directory of lab name when Config.RunDir is empty.
func DefaultRunDir(name string) string { return filepath.Join(DefaultRunRoot, name) }

// Lab is a built lab. Its methods are safe for concurrent use.
type Lab struct {
	r      runner
	stFile string

	// mu guards st and children.
	mu sync.Mutex
	st state
	// children are processes this Lab value started, kept so they can be
	// reaped after they exit (a lab opened by another process has none).
	children map[int]*os.Process
}

// Up builds the lab described by cfg and returns it once its etcd and every
// daemon are ready and every pod is serving HTTP. It refuses (ErrExists) when a lab of
// that name exists. On any failure, including ctx being cancelled, it
// tears down everything it made and returns the error.
func Up(ctx context.Context, cfg Config) (*Lab, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	l := &Lab{
		r:        newRunner(cfg.Verbose, cfg.Progress),
		stFile:   filepath.Join(cfg.RunDir, stateFile),
		children: map[int]*os.Process{},
		st: state{
			Name:       cfg.Name,
			RunDir:     cfg.RunDir,
			Binary:     cfg.Binary,
			DaemonArgs: append(poolModeArgs(cfg.Encap), cfg.DaemonArgs...),
			NoDaemon:   cfg.NoDaemon,
			HTTPServer: cfg.HTTPServer,
			Subnets:    cfg.Subnets,
		},
	}
	if err := l.claim(); err != nil {
		return nil, err
	}
	if err := l.build(ctx, cfg); err != nil {
		if derr := l.Down(); derr != nil {
			err = errors.Join(err, fmt.Errorf("tear down half-built lab %s: %w", cfg.Name, derr))
		}
		return nil, err
	}
	return l, nil
}

// claim checks that no lab of this name exists and creates the run dir,
// which from then on marks the lab as taken.
func (l *Lab) claim() error {
	name := l.st.Name
	if _, err := os.Stat(l.st.RunDir); err == nil {
		return fmt.Errorf("lab %s: run dir %s: %w (remove it with: podnet lab down --name %s)", name, l.st.RunDir, ErrExists, name)
	}
	nss, err := labNamespaces(name)
	if err != nil {
		return fmt.Errorf("lab %s: %w", name, err)
	}
	if len(nss) > 0 {
		return fmt.Errorf("lab %s: namespaces %v: %w (remove them with: podnet lab down --name %s)", name, nss, ErrExists, name)
	}
	if err := os.MkdirAll(filepath.Dir(l.st.RunDir), 0o755); err != nil {
		return fmt.Errorf("lab %s: create %s: %w", name, filepath.Dir(l.st.RunDir), err)
	}
	// Mkdir, not MkdirAll: two concurrent Ups of one name must not both win.
	if err := os.Mkdir(l.st.RunDir, 0o755); err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("lab %s: run dir %s: %w", name, l.st.RunDir, ErrExists)
		}
		return fmt.Errorf("lab %s: create run dir: %w", name, err)
	}
	return l.update(func(*state) {})
}

// build runs every step of Up, saving state after each one.
func (l *Lab) build(ctx context.Context, cfg Config) error {
	if err := linkBinary(cfg.RunDir, cfg.Binary); err != nil {
		return err
	}
	if err := l.buildFabric(ctx, cfg.Nodes); err != nil {
		return err
	}
	if cfg.NoDaemon {
		return nil
	}
	if err := l.startEtcd(ctx); err != nil {
		return err
	}
	if err := l.startDaemons(ctx); err != nil {
		return err
	}
	if err := l.addPods(ctx, cfg.Pods); err != nil {
		return err
	}
	if err := l.addExternal(ctx); err != nil {
		return err
	}
	return l.waitRoutes(ctx)
}

// Open loads the state of the running lab name from its default run dir.
func Open(name string) (*Lab, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	return OpenDir(DefaultRunDir(name))
}

// OpenDir loads the state of the lab whose run dir is dir.
func OpenDir(dir string) (*Lab, error) {
	st, err := loadState(filepath.Join(dir, stateFile))
	if err != nil {
		return nil, err
	}
	return &Lab{
		r:        newRunner(false, nil),
		stFile:   filepath.Join(dir, stateFile),
		st:       *st,
		children: map[int]*os.Process{},
	}, nil
}

// Name returns the lab's name.
func (l *Lab) Name() string { return l.st.Name }

// RunDir returns the lab's run directory.
func (l *Lab) RunDir() string { return l.st.RunDir }

// Datastore returns the endpoint URL of the lab's etcd
// ("unix:///run/podnet/lab/NAME/etcd.sock"), the value for
// PODNET_DATASTORE_ENDPOINTS, or "" when the lab has none (NoDaemon).
func (l *Lab) Datastore() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.st.datastore()
}

// PodIP returns the address of pod (e.g. "test-1"), or the zero Addr when
// the lab has no such pod.
func (l *Lab) PodIP(pod string) netip.Addr {
	l.mu.Lock()
	defer l.mu.Unlock()
	if p := l.st.pod(pod); p != nil {
		return p.IP
	}
	return netip.Addr{}
}

// NodeAddr returns the underlay address of node (e.g. "worker1"), or the
// zero Addr when the lab has no such node.
func (l *Lab) NodeAddr(node string) netip.Addr {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n := l.st.node(node); n != nil {
		return n.Address.Addr()
	}
	return netip.Addr{}
}
