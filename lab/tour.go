package lab

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// TourConfig configures Lab.Tour.
type TourConfig struct {
	// Step runs only step Step (1..len(TourSteps)); 0 runs them all.
	Step int
	// Pause waits for Enter on In before each step.
	Pause bool
	// Out gets the commands, their output and the explanations.
	Out io.Writer
	// In is read for Enter when Pause is set; nil = os.Stdin.
	In io.Reader
}

// tourStep is one lesson of the tour: what it shows, how it shows it and
// checks it, and why it works that way.
type tourStep struct {
	Title string
	Why   string
	Run   func(ctx context.Context, t *tour) error
}

// TourSteps are the titles of the tour's steps, in order.
func TourSteps() []string {
	var t []string
	for _, s := range tourSteps {
		t = append(t, s.Title)
	}
	return t
}

// ErrTourCheck marks a tour step whose live check failed (other errors
// are commands that could not run at all).
var ErrTourCheck = errors.New("check failed")

// tour is a tour in progress: the lab and what it learned about it.
type tour struct {
	l   *Lab
	out io.Writer
	// sameA and sameB are two pods on one node; far is a pod on another.
	sameA, sameB, far PodStatus
	pool              poolModes
	// sameSubnet: the two nodes share an underlay subnet.
	sameSubnet bool
}

type poolModes struct{ IPIP, VXLAN string }

// between is the encapsulation the default pool asks for between two
// nodes, in one underlay subnet or not (CrossSubnet encapsulates only
// across subnets).
func (m poolModes) between(sameSubnet bool) string {
	switch {
	case m.IPIP == "Always", m.IPIP == "CrossSubnet" && !sameSubnet:
		return EncapIPIP
	case m.VXLAN == "Always", m.VXLAN == "CrossSubnet" && !sameSubnet:
		return EncapVXLAN
	}
	return EncapNone
}

// encap is the encapsulation between the tour's two nodes.
func (t *tour) encap(m poolModes) string { return m.between(t.sameSubnet) }

// farTTL is the TTL of a ping reply across the tour's two nodes: one
// hop for each switch; unencapsulated, the two nodes' kernels route it
// too, and across subnets the fabric's router.
func farTTL(encap string, sameSubnet bool) int {
	ttl := 64 - 2
	if encap == EncapNone {
		ttl -= 2
		if !sameSubnet {
			ttl--
		}
	}
	return ttl
}

// Tour walks the overlay lesson of docs/tutorial.md in the running lab:
// each step prints the commands it runs and their output, checks the
// result live, and says why. It needs a lab with daemons and at least two
// nodes; pods test-1..3 are added if missing. The lab is left as found:
// pool modes restored, the tour's pool and pods deleted. The error wraps
// ErrTourCheck when a check failed.
func (l *Lab) Tour(ctx context.Context, cfg TourConfig) error {
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	if cfg.In == nil {
		cfg.In = os.Stdin
	}
	if cfg.Step < 0 || cfg.Step > len(tourSteps) {
		return fmt.Errorf("tour step %d: want 1..%d", cfg.Step, len(tourSteps))
	}
	st := l.Status()
	if st.Datastore == "" || len(st.Nodes) < 2 {
		return fmt.Errorf("tour of lab %s: needs daemons and two nodes (podnet lab up --nodes 2)", st.Name)
	}
	if st.External == nil {
		return fmt.Errorf("tour of lab %s: the lab has no external host", st.Name)
	}
	t := &tour{l: l, out: cfg.Out}
	if err := t.setUp(ctx); err != nil {
		return err
	}
	in := bufio.NewReader(cfg.In)
	var failed []error
	for i, s := range tourSteps {
		if cfg.Step != 0 && cfg.Step != i+1 {
			continue
		}
		if cfg.Pause {
			fmt.Fprintf(cfg.Out, "\n[Enter for step %d: %s] ", i+1, s.Title)
			in.ReadString('\n')
		}
		fmt.Fprintf(cfg.Out, "\n=== step %d/%d: %s\n\n", i+1, len(tourSteps), s.Title)
		err := s.Run(ctx, t)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		fmt.Fprintf(cfg.Out, "\nwhy: %s\n", s.Why)
		if err != nil {
			fmt.Fprintf(cfg.Out, "FAIL step %d: %v\n", i+1, err)
			failed = append(failed, fmt.Errorf("step %d (%s): %w", i+1, s.Title, err))
			continue
		}
		fmt.Fprintf(cfg.Out, "ok   step %d\n", i+1)
	}
	if len(failed) > 0 {
		return fmt.Errorf("tour of lab %s: %w", st.Name, errors.Join(failed...))
	}
	return nil
}

// setUp makes sure there are pods to show, two on the first node and
// one on the second (adding test-N pods there, the lowest free numbers,
// when there are not; none is ever removed), and picks them.
func (t *tour) setUp(ctx context.Context) error {
	st := t.l.Status()
	first, second := st.Nodes[0], st.Nodes[1]
	count := func(node string) int {
		n := 0
		for _, p := range t.l.Status().Pods {
			if p.Node == node {
				n++
			}
		}
		return n
	}
	for _, need := range []struct {
		node string
		n    int
	}{{first.Name, 2}, {second.Name, 1}} {
		for count(need.node) < need.n {
			if err := ctx.Err(); err != nil {
				return err
			}
			name := t.freePodName()
			t.say(fmt.Sprintf("podnet lab pod add%s %s --node %s", nameFlag(t.l.Name()), name, need.node))
			if _, err := t.l.AddPod(ctx, PodSpec{Name: name, Node: need.node}); err != nil {
				return fmt.Errorf("tour: %w", err)
			}
		}
	}
	byNode := map[string][]PodStatus{}
	for _, p := range t.l.Status().Pods {
		byNode[p.Node] = append(byNode[p.Node], p)
	}
	a := byNode[first.Name]
	t.sameA, t.sameB, t.far = a[0], a[1], byNode[second.Name][0]
	t.sameSubnet = first.Address.Masked().Contains(second.Address.Addr())
	modes, err := t.poolModes(ctx)
	t.pool = modes
	return err
}

// freePodName is the lowest test-N no pod of the lab has.
func (t *tour) freePodName() string {
	taken := map[string]bool{}
	for _, p := range t.l.Status().Pods {
		taken[p.Name] = true
	}
	for j := 1; ; j++ {
		if name := podName(j); !taken[name] {
			return name
		}
	}
}

// say prints a command line as the user would type it.
func (t *tour) say(cmd string) { fmt.Fprintf(t.out, "$ %s\n", cmd) }

// exec runs args in target through `podnet lab exec`, shown and printed.
func (t *tour) exec(ctx context.Context, target string, args ...string) (string, error) {
	t.say(fmt.Sprintf("podnet lab exec%s %s -- %s", nameFlag(t.l.Name()), target, cmdline(nil, args)))
	out, err := t.l.Output(ctx, target, args...)
	t.out.Write(out)
	return string(out), err
}

// host runs `podnet ARGS` on the host with the lab's environment (as
// after eval "$(podnet lab env)"), shown and printed.
func (t *tour) host(ctx context.Context, args ...string) (string, error) {
	t.say("podnet " + cmdline(nil, args))
	env, err := t.l.Env("")
	if err != nil {
		return "", err
	}
	t.l.mu.Lock()
	bin := t.l.st.Binary
	t.l.mu.Unlock()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(prependPath(os.Environ()), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	t.out.Write(out.Bytes())
	if err != nil {
		return out.String(), fmt.Errorf("podnet %s: %w: %s", cmdline(nil, args), err, oneLine(out.String()))
	}
	return out.String(), nil
}

// quiet runs a podnet command on the host without showing it.
func (t *tour) quiet(ctx context.Context, args ...string) ([]byte, error) {
	return t.l.Output(ctx, "fabric", append([]string{"podnet"}, args...)...)
}

// poolModes reads the default pool's ipipMode and vxlanMode.
func (t *tour) poolModes(ctx context.Context) (poolModes, error) {
	out, err := t.quiet(ctx, "get", "ippool", "default-ipv4-ippool", "-o", "json")
	if err != nil {
		return poolModes{}, err
	}
	var p struct {
		Spec struct{ IPIPMode, VXLANMode string } `json:"spec"`
	}
	if err := json.Unmarshal(out, &p); err != nil {
		return poolModes{}, fmt.Errorf("decode default pool: %w", err)
	}
	return poolModes{orNever(p.Spec.IPIPMode), orNever(p.Spec.VXLANMode)}, nil
}

// nameFlag is " --name NAME" unless name is the default, for the
// commands the tour shows.
func nameFlag(name string) string {
	if name == DefaultName {
		return ""
	}
	return " --name " + name
}

// syncBuffer is a bytes.Buffer that tcpdump writes to while the tour
// reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// checkf returns a check failure.
func checkf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrTourCheck, fmt.Sprintf(format, args...))
}

var ttlRE = regexp.MustCompile(`ttl=(\d+)`)

// pingTTL pings to from pod and checks the reply's TTL.
func (t *tour) pingTTL(ctx context.Context, from string, to netip.Addr, want string) error {
	out, err := t.exec(ctx, from, "ping", "-c1", "-W2", to.String())
	if err != nil {
		return checkf("%s cannot ping %s: %v", from, to, err)
	}
	m := ttlRE.FindStringSubmatch(out)
	if m == nil || m[1] != want {
		return checkf("ping %s from %s: want ttl=%s in the reply", to, from, want)
	}
	return nil
}

// page fetches pod to's page from pod from and checks it.
func (t *tour) page(ctx context.Context, from string, to PodStatus) error {
	out, err := t.exec(ctx, from, "wget", "-qO-", "-T", "5", "http://"+to.IP.String()+"/")
	if err != nil {
		return checkf("%s cannot fetch %s's page: %v", from, to.Name, err)
	}
	if want := PageText(to.Name, to.Node, to.IP); out != want {
		return checkf("%s's page from %s: got %q, want %q", to.Name, from, out, want)
	}
	return nil
}

// capture runs tcpdump on the fabric while ping runs from one pod to
// another, and returns what it printed.
func (t *tour) capture(ctx context.Context, from string, to netip.Addr) (string, error) {
	const filter = "ip proto 4 or udp port 4789 or icmp"
	t.say(fmt.Sprintf("podnet lab exec%s fabric -- tcpdump -ni br0 -c 2 '%s' &", nameFlag(t.l.Name()), filter))
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var dump syncBuffer
	cmd, err := t.l.command(cctx, "fabric", []string{"tcpdump", "-l", "-ni", subnetBridge(0), "-c", "2", filter})
	if err != nil {
		return "", err
	}
	cmd.Stdout, cmd.Stderr = &dump, &dump
	if err := cmd.Start(); err != nil {
		return "", checkf("tcpdump: %v", err)
	}
	// tcpdump says "listening on" once its filter is in place.
	for i := 0; i < 100 && !strings.Contains(dump.String(), "listening on"); i++ {
		time.Sleep(50 * time.Millisecond)
	}
	_, perr := t.exec(ctx, from, "ping", "-c1", "-W2", to.String())
	// tcpdump exits after two packets (request and reply), or at the
	// timeout when it saw fewer.
	cmd.Wait()
	io.WriteString(t.out, dump.String())
	if perr != nil {
		return dump.String(), checkf("ping %s from %s: %v", to, from, perr)
	}
	return dump.String(), nil
}

// checkOuter checks that a capture shows the encapsulation encap between
// nodes from and to, for a ping from pod address src to dst: the outer
// header, or without encapsulation the pods' own packet and no tunnel.
func checkOuter(dump, encap string, from, to, src, dst netip.Addr) error {
	switch encap {
	case EncapIPIP:
		if want := fmt.Sprintf("IP %s > %s: IP ", from, to); !strings.Contains(dump, want) {
			return checkf("no %q on the fabric (want %s between the nodes)", want, encap)
		}
	case EncapVXLAN:
		if !strings.Contains(dump, fmt.Sprintf("IP %s.", from)) || !strings.Contains(dump, fmt.Sprintf("> %s.4789: VXLAN", to)) {
			return checkf("no VXLAN packet from %s to %s:4789 on the fabric", from, to)
		}
	default:
		if strings.Contains(dump, ": VXLAN") || outerIPIPRE.MatchString(dump) {
			return checkf("encapsulated packets on the fabric, want the pods' own (%s)", encap)
		}
		if want := fmt.Sprintf("IP %s > %s: ICMP echo request", src, dst); !strings.Contains(dump, want) {
			return checkf("no %q on the fabric (want plain routing between the nodes)", want)
		}
	}
	return nil
}

// outerIPIPRE matches tcpdump's line for an IP-in-IP packet: an IP
// header whose payload is an IP packet.
var outerIPIPRE = regexp.MustCompile(`IP \S+ > \S+: IP `)

// waitEncap waits until node routes the block of ip (a pod on another
// node) with encap.
func (t *tour) waitEncap(ctx context.Context, node string, ip netip.Addr, encap string) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		out, err := t.l.Output(ctx, node, "podnet", "route", "list", "-o", "json")
		var routes []struct {
			Prefix netip.Prefix `json:"prefix"`
			Encap  string       `json:"encap"`
		}
		if err == nil && json.Unmarshal(out, &routes) == nil {
			for _, r := range routes {
				if r.Prefix.Bits() > 0 && r.Prefix.Bits() < 32 && r.Prefix.Contains(ip) && r.Encap == encap {
					return nil
				}
			}
		}
		if time.Now().After(deadline) {
			return checkf("%s does not route %s with %s after 15s", node, ip, encap)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

var tourSteps = []tourStep{
	{
		Title: "three HTTP pods on two nodes",
		Why: "Each pod is a network namespace whose eth0 is a TAP port of its node's podnet switch, with a /32 address " +
			"from IPAM and a default route to 169.254.1.1, an address no one has: the switch answers ARP for it " +
			"(proxy ARP), so every packet a pod sends reaches the switch, which routes it.",
		Run: func(ctx context.Context, t *tour) error {
			if _, err := t.l.Output(ctx, "fabric", "true"); err != nil {
				return err
			}
			t.say("podnet lab status" + nameFlag(t.l.Name()))
			for _, p := range t.l.Status().Pods {
				fmt.Fprintf(t.out, "  %-8s %-8s %s\n", p.Name, p.Node, p.IP)
			}
			if _, err := t.exec(ctx, t.sameA.Name, "ip", "route"); err != nil {
				return err
			}
			var errs []error
			for _, p := range []PodStatus{t.sameA, t.sameB, t.far} {
				errs = append(errs, t.page(ctx, t.sameA.Name, p))
			}
			return errors.Join(errs...)
		},
	},
	{
		Title: "same node: pod to pod through one switch",
		Why: "The switch found the destination's /32 (a local route) by longest-prefix match and wrote the packet " +
			"straight to its TAP port. It is a router, not a bridge, so the TTL went down by one (63); nothing " +
			"left the node.",
		Run: func(ctx context.Context, t *tour) error {
			return errors.Join(t.page(ctx, t.sameA.Name, t.sameB), t.pingTTL(ctx, t.sameA.Name, t.sameB.IP, "63"))
		},
	},
	{
		Title: "across nodes: the overlay",
		Why: "The sending switch has a route for the other node's address block, learned over BGP with that node " +
			"as next hop, and wraps the pod's packet in an outer header between the nodes' underlay addresses " +
			"(IP-in-IP: IP protocol 4, 20 bytes; VXLAN: UDP 4789, 50 bytes). The far switch unwraps it, checks " +
			"that it came from a node, and routes it: two routers, TTL 62. A pool that does not encapsulate " +
			"between these nodes (Never, or CrossSubnet within one subnet) hands the packet to the node's " +
			"kernel instead, which routes it to the other node as it is: four routers, TTL 60.",
		Run: func(ctx context.Context, t *tour) error {
			encap := t.encap(t.pool)
			ttl := strconv.Itoa(farTTL(encap, t.sameSubnet))
			if err := errors.Join(t.page(ctx, t.far.Name, t.sameA), t.pingTTL(ctx, t.far.Name, t.sameA.IP, ttl)); err != nil {
				return err
			}
			dump, err := t.capture(ctx, t.far.Name, t.sameA.IP)
			if err != nil {
				return err
			}
			return checkOuter(dump, encap, t.l.NodeAddr(t.far.Node), t.l.NodeAddr(t.sameA.Node), t.far.IP, t.sameA.IP)
		},
	},
	{
		Title: "the outside world through NAT outgoing",
		Why: "The external host has no route to any pool, so it could never answer a pod's own address. The pool's " +
			"natOutgoing makes the switch's catch-all route hand such packets to the node's NAT, which carries each " +
			"flow through the node's own sockets: the outside sees the node's address, and the pod sees replies " +
			"made by the node (ping TTL 64: a proxy, not address rewriting as with iptables).",
		Run: func(ctx context.Context, t *tour) error {
			st := t.l.Status()
			if st.External == nil {
				return checkf("lab has no external host")
			}
			ext := st.External.Address.Addr()
			out, err := t.exec(ctx, t.sameA.Name, "wget", "-qO-", "-T", "5", "http://"+ext.String()+"/whoami")
			if err != nil {
				return checkf("%s cannot reach %s: %v", t.sameA.Name, ext, err)
			}
			node := t.l.NodeAddr(t.sameA.Node)
			if !strings.HasPrefix(out, node.String()+":") {
				return checkf("the external host saw %q, want the node's address %s", strings.TrimSpace(out), node)
			}
			if err := t.pingTTL(ctx, t.sameA.Name, ext, "64"); err != nil {
				return err
			}
			out, err = t.exec(ctx, t.sameA.Node, "podnet", "nat", "list", "-o", "wide")
			if err != nil || !strings.Contains(out, t.sameA.IP.String()+":") {
				return checkf("nat list on %s shows no flow of %s: %v", t.sameA.Node, t.sameA.IP, err)
			}
			return nil
		},
	},
	{
		Title: "the node's virtual L3 switch and its BGP neighbours",
		Why: "That is the node's whole routing table: a local /32 per pod, its own blocks as blackholes (an unused " +
			"address goes nowhere), the other nodes' blocks from BGP with their encapsulation, the node itself " +
			"through the podnet0 port, NAT for the rest. Every daemon runs a BGP speaker; by default all nodes " +
			"peer with each other (the node-to-node mesh) and advertise their blocks.",
		Run: func(ctx context.Context, t *tour) error {
			node := t.sameA.Node
			out, err := t.exec(ctx, node, "podnet", "route", "list", "-o", "wide")
			if err != nil {
				return err
			}
			for _, want := range []string{t.sameA.IP.String() + "/32", t.sameB.IP.String() + "/32", "bgp " + t.l.NodeAddr(t.far.Node).String(), "nat-outgoing"} {
				if !strings.Contains(out, want) {
					return checkf("route list on %s lacks %q", node, want)
				}
			}
			if _, err := t.exec(ctx, node, "podnet", "node", "status"); err != nil {
				return err
			}
			js, err := t.l.Output(ctx, node, "podnet", "node", "status", "-o", "json")
			if err != nil {
				return err
			}
			var peers []struct {
				Address netip.Addr
				State   string
			}
			if err := json.Unmarshal(js, &peers); err != nil {
				return err
			}
			if want := len(t.l.Status().Nodes) - 1; len(peers) < want {
				return checkf("%s has %d BGP peers, want at least %d", node, len(peers), want)
			}
			for _, p := range peers {
				if p.State != "Established" {
					return checkf("BGP session %s to %s is %s", node, p.Address, p.State)
				}
			}
			return nil
		},
	},
	{
		Title: "which block went where, and how much is used",
		Why: "Each node claimed /26 blocks of the pool (64 addresses) when it first needed addresses and hands out " +
			"its pods' addresses from them, so nodes advertise one route per block, not per pod. In use are the " +
			"pods' addresses and one tunnel address per node per encapsulation used.",
		Run: func(ctx context.Context, t *tour) error {
			if _, err := t.host(ctx, "ipam", "show", "--show-blocks"); err != nil {
				return err
			}
			js, err := t.quiet(ctx, "ipam", "show", "-o", "json")
			if err != nil {
				return err
			}
			var usage []struct {
				Blocks []struct {
					CIDR netip.Prefix
					Node string
				}
			}
			if err := json.Unmarshal(js, &usage); err != nil {
				return err
			}
			for _, p := range []PodStatus{t.sameA, t.sameB, t.far} {
				ok := false
				for _, u := range usage {
					for _, b := range u.Blocks {
						ok = ok || b.CIDR.Contains(p.IP) && b.Node == p.Node
					}
				}
				if !ok {
					return checkf("%s's address %s is in no block of %s", p.Name, p.IP, p.Node)
				}
			}
			return nil
		},
	},
	{
		Title: "IP-in-IP to VXLAN and back, live",
		Why: "Every daemon watches the pool and rebuilt its routes with the new encapsulation: no restart, no pod " +
			"lost. On the wire the outer header changed from IP protocol 4 to UDP port 4789 with a VXLAN header " +
			"(VNI 4096). The pods' MTU follows the overhead (1480 for IP-in-IP, 1450 for VXLAN): the daemons set it " +
			"live on every pod, and the node's unused tunnel address goes back to IPAM.",
		Run: func(ctx context.Context, t *tour) error {
			orig := t.pool
			to := poolModes{"Never", "Always"}
			if t.encap(orig) == EncapVXLAN {
				to = poolModes{"Always", "Never"}
			}
			restore := func() error {
				_, err := t.host(context.WithoutCancel(ctx), "patch", "ippool", "default-ipv4-ippool", "-p",
					fmt.Sprintf(`{"spec":{"ipipMode":%q,"vxlanMode":%q}}`, orig.IPIP, orig.VXLAN))
				return err
			}
			if _, err := t.host(ctx, "patch", "ippool", "default-ipv4-ippool", "-p",
				fmt.Sprintf(`{"spec":{"ipipMode":%q,"vxlanMode":%q}}`, to.IPIP, to.VXLAN)); err != nil {
				return err
			}
			err := t.switched(ctx, t.encap(to))
			if rerr := restore(); rerr != nil {
				return errors.Join(err, rerr)
			}
			if err != nil {
				return err
			}
			fmt.Fprintln(t.out, "\nand back:")
			return t.switched(ctx, t.encap(orig))
		},
	},
	{
		Title: "a new pool, the old one disabled, the new one deleted",
		Why: "A disabled pool gives no new addresses but keeps its blocks, routes and pods, so old pods answer as " +
			"before while new pods get the new range. A pool with addresses in use cannot be deleted (its pods " +
			"would be left without a pool), so the pod goes first, then the pool.",
		Run: func(ctx context.Context, t *tour) error {
			return t.poolWalk(ctx)
		},
	},
}

// switched checks the pods after a switch to encap: routes, the outer
// header on the wire, the pages.
func (t *tour) switched(ctx context.Context, encap string) error {
	if err := t.waitEncap(ctx, t.sameA.Node, t.far.IP, encap); err != nil {
		return err
	}
	if err := t.waitEncap(ctx, t.far.Node, t.sameA.IP, encap); err != nil {
		return err
	}
	if _, err := t.exec(ctx, t.far.Node, "podnet", "route", "list"); err != nil {
		return err
	}
	dump, err := t.capture(ctx, t.far.Name, t.sameA.IP)
	if err != nil {
		return err
	}
	if err := checkOuter(dump, encap, t.l.NodeAddr(t.far.Node), t.l.NodeAddr(t.sameA.Node), t.far.IP, t.sameA.IP); err != nil {
		return err
	}
	if _, err := t.exec(ctx, t.sameA.Name, "ip", "link", "show", "eth0"); err != nil {
		return err
	}
	return t.page(ctx, t.far.Name, t.sameA)
}

// tourPool and tourPod are what step 8 creates, and deletes again.
const (
	tourPool     = "tour-pool"
	tourPoolCIDR = "10.10.0.0/16"
	tourPod      = "tour-new"
)

func (t *tour) poolWalk(ctx context.Context) (err error) {
	bg := context.WithoutCancel(ctx)
	// Whatever happens, the lab is left with its default pool enabled and
	// without the tour's pod and pool.
	defer func() {
		var errs []error
		if t.l.podStatus(tourPod).Name != "" {
			errs = append(errs, t.l.DeletePod(bg, tourPod))
		}
		if _, qerr := t.quiet(bg, "get", "ippool", tourPool); qerr == nil {
			_, derr := t.quiet(bg, "delete", "ippool", tourPool, "--force")
			errs = append(errs, derr)
		}
		_, perr := t.quiet(bg, "patch", "ippool", "default-ipv4-ippool", "-p", `{"spec":{"disabled":false}}`)
		errs = append(errs, perr)
		err = errors.Join(append([]error{err}, errs...)...)
	}()
	dir, err := os.MkdirTemp("", "podnet-tour-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	yaml := fmt.Sprintf(`apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: %s
spec:
  cidr: %s
  ipipMode: %s
  vxlanMode: %s
  natOutgoing: true
`, tourPool, tourPoolCIDR, t.pool.IPIP, t.pool.VXLAN)
	file := filepath.Join(dir, "pool.yaml")
	if err := os.WriteFile(file, []byte(yaml), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(t.out, "$ cat pool.yaml\n%s", yaml)
	if _, err := t.host(ctx, "apply", "-f", file); err != nil {
		return err
	}
	if _, err := t.host(ctx, "patch", "ippool", "default-ipv4-ippool", "-p", `{"spec":{"disabled":true}}`); err != nil {
		return err
	}
	t.say(fmt.Sprintf("podnet lab pod add%s %s --node %s", nameFlag(t.l.Name()), tourPod, t.sameA.Node))
	p, err := t.l.AddPod(ctx, PodSpec{Name: tourPod, Node: t.sameA.Node})
	if err != nil {
		return err
	}
	fmt.Fprintf(t.out, "pod %s added on %s: %s\n", p.Name, p.Node, p.IP)
	if !netip.MustParsePrefix(tourPoolCIDR).Contains(p.IP) {
		return checkf("%s got %s, not an address of the new pool %s", tourPod, p.IP, tourPoolCIDR)
	}
	if err := errors.Join(t.page(ctx, tourPod, t.far), t.page(ctx, t.far.Name, p), t.page(ctx, t.sameB.Name, t.far)); err != nil {
		return err
	}
	if _, err := t.host(ctx, "delete", "ippool", tourPool); err == nil {
		return checkf("delete ippool %s succeeded while %s holds an address of it", tourPool, tourPod)
	}
	t.say(fmt.Sprintf("podnet lab pod del%s %s", nameFlag(t.l.Name()), tourPod))
	if err := t.l.DeletePod(ctx, tourPod); err != nil {
		return err
	}
	fmt.Fprintf(t.out, "pod %s deleted\n", tourPod)
	if _, err := t.host(ctx, "delete", "ippool", tourPool); err != nil {
		return err
	}
	if _, err := t.host(ctx, "patch", "ippool", "default-ipv4-ippool", "-p", `{"spec":{"disabled":false}}`); err != nil {
		return err
	}
	out, err := t.host(ctx, "get", "ippool")
	if err != nil {
		return err
	}
	if strings.Contains(out, tourPool) {
		return checkf("pool %s still listed after delete", tourPool)
	}
	return t.page(ctx, t.far.Name, t.sameA)
}
