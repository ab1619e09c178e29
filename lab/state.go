package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
)

// stateFile is the name of the state file inside the run dir. It is
// rewritten after every step of Up, so that Down can undo a half-built lab
// after a crash.
const stateFile = "state.json"

// state is everything Down needs to undo a lab and everything Status shows.
type state struct {
	Name       string   `json:"name"`
	RunDir     string   `json:"runDir"`
	Binary     string   `json:"binary,omitempty"`
	DaemonArgs []string `json:"daemonArgs,omitempty"`
	NoDaemon   bool     `json:"noDaemon,omitempty"`
	HTTPServer string   `json:"httpServer,omitempty"`
	// Subnets is how many underlay subnets the fabric routes between.
	Subnets int `json:"subnets,omitempty"`
	// EtcdSocket is the client socket of the lab's etcd, the datastore
	// every daemon and podnet command of the lab uses; "" for NoDaemon labs.
	EtcdSocket string `json:"etcdSocket,omitempty"`
	// Etcd is the `podnet datastore serve` process. It runs in the root
	// namespace, so Down can only find it by this identity or by its
	// command line (etcdProcs), never through `ip netns pids`.
	Etcd procID `json:"etcd"`
	// Namespaces lists the namespaces Up created, in creation order.
	Namespaces []string    `json:"namespaces"`
	Nodes      []nodeState `json:"nodes"`
	// External is the host outside the cluster (nil in NoDaemon labs).
	External *externalState `json:"external,omitempty"`
	Pods     []podState     `json:"pods"`
}

type nodeState struct {
	Name     string       `json:"name"`
	Netns    string       `json:"netns"`
	Address  netip.Prefix `json:"address"`
	Iface    string       `json:"iface"`
	Socket   string       `json:"socket"`
	StateDir string       `json:"stateDir"`
	Log      string       `json:"log"`
	Daemon   procID       `json:"daemon"`
}

type externalState struct {
	Netns   string       `json:"netns"`
	Address netip.Prefix `json:"address"`
	Dir     string       `json:"dir"`
	HTTP    procID       `json:"http"`
	UDP     procID       `json:"udp"`
}

type podState struct {
	Name  string     `json:"name"`
	Node  string     `json:"node"`
	Netns string     `json:"netns"`
	IP    netip.Addr `json:"ip"`
	Dir   string     `json:"dir"`
	HTTP  procID     `json:"http"`
}

func (s *state) node(name string) *nodeState {
	for i := range s.Nodes {
		if s.Nodes[i].Name == name {
			return &s.Nodes[i]
		}
	}
	return nil
}

func (s *state) pod(name string) *podState {
	for i := range s.Pods {
		if s.Pods[i].Name == name {
			return &s.Pods[i]
		}
	}
	return nil
}

// datastore returns the endpoint URL of the lab's etcd, or "" when the lab
// has none.
func (s *state) datastore() string {
	if s.EtcdSocket == "" {
		return ""
	}
	return "unix://" + s.EtcdSocket
}

// targets lists every valid Exec target: "fabric", nodes, pods.
func (s *state) targets() []string {
	t := []string{"fabric"}
	if s.External != nil {
		t = append(t, "external")
	}
	for _, n := range s.Nodes {
		t = append(t, n.Name)
	}
	for _, p := range s.Pods {
		t = append(t, p.Name)
	}
	return t
}

// update applies f to the state under l.mu and saves it.
func (l *Lab) update(f func(st *state)) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	f(&l.st)
	return l.save()
}

// save writes the state atomically (temp file and rename), so a crash
// never leaves a truncated state.json behind. Caller holds l.mu.
func (l *Lab) save() error {
	b, err := json.MarshalIndent(&l.st, "", "  ")
	if err != nil {
		return fmt.Errorf("encode lab state: %w", err)
	}
	tmp := l.stFile + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write lab state %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, l.stFile); err != nil {
		return fmt.Errorf("write lab state %s: %w", l.stFile, err)
	}
	return nil
}

func loadState(path string) (*state, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("open lab state %s: %w", path, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("open lab state: %w", err)
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("decode lab state %s: %w", path, err)
	}
	if st.RunDir == "" {
		st.RunDir = filepath.Dir(path)
	}
	return &st, nil
}

// Namespace and interface names; they are an interface other tests use.

func fabricNetns(lab string) string     { return lab + "-fabric" }
func nodeName(k int) string             { return "worker" + strconv.Itoa(k) }
func podName(j int) string              { return "test-" + strconv.Itoa(j) }
func netnsOf(lab, member string) string { return lab + "-" + member }
func fabricPort(k int) string           { return "w" + strconv.Itoa(k) }

// NetnsPath is where `ip netns` mounts the namespace named ns.
func NetnsPath(ns string) string { return filepath.Join(NetnsDir, ns) }

// nodeSubnet is the underlay subnet node k sits on when the fabric has
// subnets of them: worker1 on 0, worker2 on 1, worker3 on 0, ...
func nodeSubnet(k, subnets int) int { return (k - 1) % max(subnets, 1) }

// nodeUnderlay is node k's address: 10.77.0.(10+k)/24 on subnet 0,
// 10.78.0.(10+k)/24 on subnet 1.
func nodeUnderlay(k, subnets int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(77 + nodeSubnet(k, subnets)), 0, byte(10 + k)}), 24)
}

// subnetGateway is the fabric's address on underlay subnet s (bridge br<s>).
func subnetGateway(s int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(77 + s), 0, 1}), 24)
}

func subnetBridge(s int) string { return "br" + strconv.Itoa(s) }

// Paths of the lab's etcd inside its run dir.
func etcdDir(runDir string) string    { return filepath.Join(runDir, "etcd") }
func etcdSocket(runDir string) string { return filepath.Join(runDir, "etcd.sock") }
func etcdLog(runDir string) string    { return filepath.Join(runDir, "etcd.log") }
