package lab

import (
	"bytes"
	"encoding/xml"
	"errors"
	"flag"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden files in testdata")

// fixedGraph is a two-subnet lab of three nodes with a hand-added pod, a
// BGP peer outside the lab, a node whose daemon is down, and both
// encapsulations: every part of the drawing shows up.
func fixedGraph() Graph {
	a, p := netip.MustParseAddr, netip.MustParsePrefix
	mesh := "node-to-node mesh"
	return Graph{
		Lab: "demo", Fabric: "demo-fabric",
		Subnets:  []GraphSubnet{{Bridge: "br0", Gateway: p("10.77.0.1/24")}, {Bridge: "br1", Gateway: p("10.78.0.1/24")}},
		External: &GraphExternal{Netns: "demo-external", Address: a("10.77.0.100")},
		Pools: []GraphPool{
			{Name: "default-ipv4-ippool", CIDR: p("192.168.0.0/16"), IPIPMode: "Never", VXLANMode: "CrossSubnet", NATOutgoing: true},
			{Name: "old", CIDR: p("10.10.0.0/16"), IPIPMode: "Always", VXLANMode: "Never", Disabled: true},
		},
		Nodes: []GraphNode{
			{Name: "worker1", Netns: "demo-worker1", Address: p("10.77.0.11/24"), Bridge: "br0",
				VXLANTunnel: a("192.168.10.0"), VXLANMAC: "66:aa:bb:cc:dd:01",
				Blocks: []GraphBlock{{CIDR: p("192.168.10.0/26"), Pool: "default-ipv4-ippool", InUse: 3, Total: 64}},
				Pods: []GraphPod{{Name: "test-1", IP: a("192.168.10.1"), Lab: true},
					{Name: "hand", IP: a("192.168.10.2")}},
				Peers: []GraphPeer{{Address: a("10.78.0.12"), Node: "worker2", Type: mesh, State: "Established"},
					{Address: a("10.77.0.200"), Type: "global", State: "Active"}}},
			{Name: "worker2", Netns: "demo-worker2", Address: p("10.78.0.12/24"), Bridge: "br1",
				IPIPTunnel: a("10.10.20.0"), VXLANTunnel: a("192.168.20.0"), VXLANMAC: "66:aa:bb:cc:dd:02",
				Blocks: []GraphBlock{{CIDR: p("192.168.20.0/26"), Pool: "default-ipv4-ippool", InUse: 2, Total: 64},
					{CIDR: p("10.10.20.0/26"), Pool: "old", InUse: 1, Total: 64}},
				Pods:  []GraphPod{{Name: "test-2", IP: a("192.168.20.1"), Lab: true}},
				Peers: []GraphPeer{{Address: a("10.77.0.11"), Node: "worker1", Type: mesh, State: "Established"}}},
			{Name: "worker3", Netns: "demo-worker3", Address: p("10.77.0.13/24"), Bridge: "br0",
				Blocks: []GraphBlock{}, Pods: []GraphPod{}, Peers: []GraphPeer{},
				Error: "exec podnet pod list -o json in worker3: exit status 1: connection refused"},
		},
		Overlay: []GraphHop{
			{From: "worker1", To: "worker2", Via: a("10.78.0.12"), Encap: "vxlan", Prefixes: []netip.Prefix{p("192.168.20.0/26"), p("10.10.20.0/26")}},
			{From: "worker2", To: "worker1", Via: a("10.77.0.11"), Encap: "vxlan", Prefixes: []netip.Prefix{p("192.168.10.0/26")}},
		},
	}
}

func TestGraphGolden(t *testing.T) {
	for _, tt := range []struct{ format, file string }{
		{GraphText, "graph.txt"},
		{GraphDOT, "graph.dot"},
		{GraphMermaid, "graph.mmd"},
	} {
		t.Run(tt.format, func(t *testing.T) {
			var b bytes.Buffer
			if err := fixedGraph().Write(&b, tt.format); err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", tt.file)
			if *updateGolden {
				if err := os.WriteFile(golden, b.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./lab -run TestGraphGolden -update to write it)", err)
			}
			if got := b.String(); got != string(want) {
				t.Errorf("%s drawing differs from %s:\n%s", tt.format, golden, got)
			}
		})
	}
}

// TestGraphSVG checks that the SVG is well-formed XML with one text per
// item, escaped, so a browser shows every node, pod, block and session.
func TestGraphSVG(t *testing.T) {
	g := fixedGraph()
	g.Nodes[0].Pods[1].Name = `<b>&"x"`
	var b bytes.Buffer
	if err := g.Write(&b, GraphSVG); err != nil {
		t.Fatal(err)
	}
	dec := xml.NewDecoder(&b)
	var texts []string
	root := ""
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed XML: %v", err)
		}
		switch el := tok.(type) {
		case xml.StartElement:
			if root == "" {
				root = el.Name.Local
			}
			if el.Name.Local == "text" {
				var s string
				if err := dec.DecodeElement(&s, &el); err != nil {
					t.Fatal(err)
				}
				texts = append(texts, s)
			}
		}
	}
	if root != "svg" {
		t.Fatalf("root element %q, want svg", root)
	}
	all := strings.Join(texts, "\n")
	for _, want := range []string{
		"demo-fabric br0 10.77.0.1/24", "demo-fabric br1 10.78.0.1/24", "external 10.77.0.100",
		"node worker1 (podnet switch)", "pod test-1 192.168.10.1", `pod <b>&"x" 192.168.10.2 (not the lab's)`,
		"block 10.10.20.0/26 (old) 1/64 used", "bgp 10.77.0.200: Active", "error: exec podnet pod list",
		"worker1 → worker2 via 10.78.0.12, VXLAN: 192.168.20.0/26 10.10.20.0/26",
		"pool old 10.10.0.0/16: ipipMode Always, vxlanMode Never, disabled",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("SVG texts lack %q; they are:\n%s", want, all)
		}
	}
}

func TestGraphUnknownFormat(t *testing.T) {
	err := fixedGraph().Write(io.Discard, "png")
	if err == nil || !strings.Contains(err.Error(), `graph format "png": want one of text, dot, mermaid, svg`) {
		t.Errorf("got %v", err)
	}
}

func TestNginxMissing(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := Config{HTTPServer: HTTPNginx, Binary: "/bin/true"}.withDefaults()
	if err == nil || !strings.Contains(err.Error(), "nginx is not installed (install it with: apt-get install nginx-light") {
		t.Errorf("got %v, want the sentence saying how to install nginx", err)
	}
}

func TestScaleBookkeeping(t *testing.T) {
	st := state{
		Nodes: []nodeState{{Name: "worker1"}, {Name: "worker2"}, {Name: "worker3"}},
		Pods: []podState{{Name: "test-1", Node: "worker1"}, {Name: "test-3", Node: "worker2"},
			{Name: "test-03", Node: "worker1"}, {Name: "test-x", Node: "worker1"}, {Name: "web-2", Node: "worker1"},
			{Name: "test-10", Node: "worker1"}},
	}
	if got, want := st.replicas("test"), []int{1, 3, 10}; !slices.Equal(got, want) {
		t.Errorf("replicas(test): got %v, want %v", got, want)
	}
	if got, want := st.replicas("web"), []int{2}; !slices.Equal(got, want) {
		t.Errorf("replicas(web): got %v, want %v", got, want)
	}
	if got := st.leastLoaded(); got != "worker3" {
		t.Errorf("leastLoaded: got %s, want worker3 (no pods)", got)
	}
	st.Pods = append(st.Pods, podState{Name: "a", Node: "worker3"})
	if got := st.leastLoaded(); got != "worker2" {
		t.Errorf("leastLoaded: got %s, want worker2 (first of the ties with one pod)", got)
	}
}

func TestCheckPodName(t *testing.T) {
	l := &Lab{st: state{Name: "demo", Pods: []podState{{Name: "test-1", Node: "worker1"}}}}
	for _, tt := range []struct{ name, wantErr string }{
		{"web", ""},
		{"test-2", ""},
		{"test-1", "lab demo already has a pod test-1 (on worker1)"},
		{"worker1", `pod name "worker1": taken by the lab's worker1 namespace`},
		{"fabric", `pod name "fabric": taken`},
		{"external", `pod name "external": taken`},
		// demo-worker1-x would be the namespace of pod x added by hand on
		// worker1.
		{"worker1-x", `pod name "worker1-x": namespaces demo-worker1-* belong to the pods added by hand on worker1`},
		{"worker12-a-b", "pick a name not starting with worker12-"},
		{"workerx-1", ""},
		{"web-worker1-x", ""},
		{"Web", "must be a DNS label"},
		{"-web", "must be a DNS label"},
		{"", "must be a DNS label"},
	} {
		err := l.checkPodName(tt.name)
		if (tt.wantErr == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("checkPodName(%q): got %v, want %q", tt.name, err, tt.wantErr)
		}
	}
}
