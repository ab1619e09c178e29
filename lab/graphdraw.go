package lab

import (
	"fmt"
	"html"
	"io"
	"net/netip"
	"strings"
)

// Graph formats for Graph.Write.
const (
	GraphText    = "text"
	GraphDOT     = "dot"
	GraphMermaid = "mermaid"
	GraphSVG     = "svg"
)

// GraphFormats lists the formats Graph.Write draws.
var GraphFormats = []string{GraphText, GraphDOT, GraphMermaid, GraphSVG}

// Write draws the graph in format (one of GraphFormats) to w.
func (g Graph) Write(w io.Writer, format string) error {
	var b strings.Builder
	switch format {
	case GraphText:
		g.text(&b)
	case GraphDOT:
		g.dot(&b)
	case GraphMermaid:
		g.mermaid(&b)
	case GraphSVG:
		g.svg(&b)
	default:
		return fmt.Errorf("graph format %q: want one of %s", format, strings.Join(GraphFormats, ", "))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// tunnels lists a node's tunnel addresses.
func (n GraphNode) tunnels() string {
	var t []string
	if n.IPIPTunnel.IsValid() {
		t = append(t, "ipip tunnel "+n.IPIPTunnel.String())
	}
	if n.VXLANTunnel.IsValid() {
		t = append(t, "vxlan tunnel "+n.VXLANTunnel.String()+" "+n.VXLANMAC)
	}
	return strings.Join(t, ", ")
}

func (p GraphPool) modes() string {
	s := "ipipMode " + p.IPIPMode + ", vxlanMode " + p.VXLANMode
	if p.NATOutgoing {
		s += ", natOutgoing"
	}
	if p.Disabled {
		s += ", disabled"
	}
	return s
}

func (b GraphBlock) use() string {
	pool := b.Pool
	if pool == "" {
		pool = "no pool"
	}
	return fmt.Sprintf("%s (%s) %d/%d used", b.CIDR, pool, b.InUse, b.Total)
}

func (p GraphPeer) peer() string {
	who := p.Address.String()
	if p.Node != "" {
		who += " (" + p.Node + ")"
	}
	return who
}

func (p GraphPod) label() string {
	s := p.Name + " " + p.IP.String()
	if !p.Lab {
		s += " (not the lab's)"
	}
	return s
}

func prefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, " ")
}

// text draws the graph as an indented tree for the terminal.
func (g Graph) text(b *strings.Builder) {
	fmt.Fprintf(b, "lab %s\n", g.Lab)
	for _, s := range g.Subnets {
		fmt.Fprintf(b, "fabric %s: %s %s (subnet %s)\n", g.Fabric, s.Bridge, s.Gateway, s.Gateway.Masked())
	}
	if e := g.External; e != nil {
		fmt.Fprintf(b, "external %s (%s): outside the cluster, pods reach it through NAT outgoing\n", e.Address, e.Netns)
	}
	for _, p := range g.Pools {
		fmt.Fprintf(b, "pool %s %s: %s\n", p.Name, p.CIDR, p.modes())
	}
	for i, n := range g.Nodes {
		last := i == len(g.Nodes)-1
		branch, indent := "├─", "│  "
		if last {
			branch, indent = "└─", "   "
		}
		fmt.Fprintf(b, "%s node %s: eth0 %s on %s", branch, n.Name, n.Address, n.Bridge)
		if t := n.tunnels(); t != "" {
			fmt.Fprintf(b, ", %s", t)
		}
		b.WriteString("\n")
		var items []string
		if n.Error != "" {
			items = append(items, "error: "+n.Error)
		}
		for _, bl := range n.Blocks {
			items = append(items, "block "+bl.use())
		}
		for _, p := range n.Pods {
			items = append(items, "pod "+p.label())
		}
		for _, p := range n.Peers {
			items = append(items, fmt.Sprintf("bgp %s %s: %s", p.peer(), p.Type, p.State))
		}
		for j, it := range items {
			br := "├─"
			if j == len(items)-1 {
				br = "└─"
			}
			fmt.Fprintf(b, "%s%s %s\n", indent, br, it)
		}
	}
	if len(g.Overlay) > 0 {
		b.WriteString("between nodes:\n")
		for _, h := range g.Overlay {
			fmt.Fprintf(b, "  %s → %s via %s, %s: %s\n", h.From, h.To, h.Via, encapName(h.Encap), prefixes(h.Prefixes))
		}
	}
}

// encapName says how packets go between nodes.
func encapName(encap string) string {
	switch encap {
	case "ipip":
		return "IP-in-IP"
	case "vxlan":
		return "VXLAN"
	case "", "none":
		return "no encapsulation"
	}
	return encap
}

// id makes a DOT/Mermaid identifier from a name.
func id(prefix, name string) string {
	r := strings.NewReplacer("-", "_", ".", "_", "/", "_", ":", "_")
	return prefix + "_" + r.Replace(name)
}

// dot draws the graph for Graphviz: the fabric bridges, nodes as clusters
// holding their pods and blocks, BGP sessions and overlay routes as edges.
func (g Graph) dot(b *strings.Builder) {
	fmt.Fprintf(b, "digraph %q {\n", "lab "+g.Lab)
	b.WriteString("  rankdir=TB;\n  node [shape=box, fontname=\"Helvetica\", fontsize=10];\n  edge [fontname=\"Helvetica\", fontsize=9];\n")
	for _, s := range g.Subnets {
		fmt.Fprintf(b, "  %s [label=%q, shape=box, style=filled, fillcolor=\"#dddddd\"];\n",
			id("br", s.Bridge), fmt.Sprintf("%s %s\n%s", g.Fabric, s.Bridge, s.Gateway))
	}
	if e := g.External; e != nil {
		fmt.Fprintf(b, "  external [label=%q, shape=ellipse];\n", "external "+e.Address.String())
		fmt.Fprintf(b, "  external -> %s [dir=none];\n", id("br", g.Subnets[0].Bridge))
	}
	for _, p := range g.Pools {
		fmt.Fprintf(b, "  %s [label=%q, shape=note];\n", id("pool", p.Name), fmt.Sprintf("pool %s %s\n%s", p.Name, p.CIDR, p.modes()))
	}
	for _, n := range g.Nodes {
		fmt.Fprintf(b, "  subgraph %s {\n", id("cluster", n.Name))
		label := n.Name + " " + n.Address.String()
		if t := n.tunnels(); t != "" {
			label += "\\n" + t
		}
		fmt.Fprintf(b, "    label=\"%s\";\n", strings.ReplaceAll(label, `"`, `\"`))
		fmt.Fprintf(b, "    %s [label=%q, shape=box3d];\n", id("node", n.Name), "podnet switch "+n.Name)
		if n.Error != "" {
			fmt.Fprintf(b, "    %s [label=%q, shape=plaintext, fontcolor=red];\n", id("error", n.Name), "error: "+n.Error)
		}
		for _, bl := range n.Blocks {
			fmt.Fprintf(b, "    %s [label=%q, shape=folder];\n", id("block_"+n.Name, bl.CIDR.String()), "block "+bl.use())
		}
		for _, p := range n.Pods {
			fmt.Fprintf(b, "    %s [label=%q, shape=ellipse];\n", id("pod_"+n.Name, p.Name), p.label())
			fmt.Fprintf(b, "    %s -> %s [dir=none];\n", id("pod_"+n.Name, p.Name), id("node", n.Name))
		}
		b.WriteString("  }\n")
		fmt.Fprintf(b, "  %s -> %s [dir=none, label=%q];\n", id("node", n.Name), id("br", n.Bridge), "eth0 "+n.Address.Addr().String())
	}
	for _, n := range g.Nodes {
		for _, p := range n.Peers {
			if p.Node != "" && p.Node < n.Name {
				// One edge per session, drawn from the lower name.
				continue
			}
			to := id("node", p.Node)
			if p.Node == "" {
				to = id("peer", p.Address.String())
				fmt.Fprintf(b, "  %s [label=%q, shape=ellipse];\n", to, "BGP peer "+p.Address.String())
			}
			fmt.Fprintf(b, "  %s -> %s [dir=both, style=dotted, color=\"#2266aa\", label=%q];\n", id("node", n.Name), to, "BGP "+p.State)
		}
	}
	for _, h := range g.Overlay {
		fmt.Fprintf(b, "  %s -> %s [style=dashed, color=\"#aa4422\", label=%q];\n", id("node", h.From), id("node", h.To),
			encapName(h.Encap)+"\n"+prefixes(h.Prefixes))
	}
	b.WriteString("}\n")
}

// mermaid draws the graph as a Mermaid flowchart (Markdown renders it).
func (g Graph) mermaid(b *strings.Builder) {
	q := func(s string) string { return `"` + strings.ReplaceAll(s, `"`, "#quot;") + `"` }
	b.WriteString("flowchart TB\n")
	for _, s := range g.Subnets {
		fmt.Fprintf(b, "  %s[%s]\n", id("br", s.Bridge), q(g.Fabric+" "+s.Bridge+" "+s.Gateway.String()))
	}
	if e := g.External; e != nil {
		fmt.Fprintf(b, "  external([%s])\n", q("external "+e.Address.String()))
		fmt.Fprintf(b, "  external --- %s\n", id("br", g.Subnets[0].Bridge))
	}
	for _, p := range g.Pools {
		fmt.Fprintf(b, "  %s>%s]\n", id("pool", p.Name), q("pool "+p.Name+" "+p.CIDR.String()+"<br>"+p.modes()))
	}
	for _, n := range g.Nodes {
		label := n.Name + " " + n.Address.String()
		if t := n.tunnels(); t != "" {
			label += "<br>" + t
		}
		fmt.Fprintf(b, "  subgraph %s[%s]\n", id("cluster", n.Name), q(label))
		fmt.Fprintf(b, "    %s[[%s]]\n", id("node", n.Name), q("podnet switch "+n.Name))
		if n.Error != "" {
			fmt.Fprintf(b, "    %s[%s]\n", id("error", n.Name), q("error: "+n.Error))
		}
		for _, bl := range n.Blocks {
			fmt.Fprintf(b, "    %s[/%s/]\n", id("block_"+n.Name, bl.CIDR.String()), q("block "+bl.use()))
		}
		for _, p := range n.Pods {
			fmt.Fprintf(b, "    %s([%s]) --- %s\n", id("pod_"+n.Name, p.Name), q(p.label()), id("node", n.Name))
		}
		b.WriteString("  end\n")
		fmt.Fprintf(b, "  %s ---|%s| %s\n", id("node", n.Name), q("eth0 "+n.Address.Addr().String()), id("br", n.Bridge))
	}
	for _, n := range g.Nodes {
		for _, p := range n.Peers {
			if p.Node != "" && p.Node < n.Name {
				continue
			}
			to := id("node", p.Node)
			if p.Node == "" {
				to = id("peer", p.Address.String())
				fmt.Fprintf(b, "  %s([%s])\n", to, q("BGP peer "+p.Address.String()))
			}
			fmt.Fprintf(b, "  %s <-.-|%s| %s\n", id("node", n.Name), q("BGP "+p.State), to)
		}
	}
	for _, h := range g.Overlay {
		fmt.Fprintf(b, "  %s ==>|%s| %s\n", id("node", h.From), q(encapName(h.Encap)+" "+prefixes(h.Prefixes)), id("node", h.To))
	}
}

// svg draws the graph by hand (no Graphviz needed): the fabric bridges in
// a row at the top, the nodes below them with their pods and blocks
// inside, overlay routes and BGP sessions as arcs under the nodes.
func (g Graph) svg(b *strings.Builder) {
	const (
		nodeW, gap, pad  = 260, 40, 20
		lineH, fabricTop = 16, 20
	)
	esc := html.EscapeString
	// Height of a node box: title lines, then one line per item.
	lines := func(n GraphNode) int {
		return 2 + len(n.Blocks) + len(n.Pods) + len(n.Peers) + min(len(n.Error), 1)
	}
	maxLines := 0
	for _, n := range g.Nodes {
		maxLines = max(maxLines, lines(n))
	}
	nodeTop := fabricTop + 40 + 40
	nodeH := (maxLines+1)*lineH + 10
	width := max(pad*2+len(g.Nodes)*(nodeW+gap)-gap, 600)
	overlayTop := nodeTop + nodeH + 30
	height := overlayTop + (len(g.Overlay)+len(g.Pools)+2)*lineH + 40
	fmt.Fprintf(b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="Helvetica, Arial, sans-serif" font-size="12">`+"\n", width, height)
	fmt.Fprintf(b, `<title>lab %s</title>`+"\n", esc(g.Lab))
	fmt.Fprintf(b, `<rect width="%d" height="%d" fill="white"/>`+"\n", width, height)
	// Fabric: one bar per subnet bridge.
	barW := (width - 2*pad - (len(g.Subnets)-1)*gap) / max(len(g.Subnets), 1)
	barX := map[string]int{}
	for i, s := range g.Subnets {
		x := pad + i*(barW+gap)
		barX[s.Bridge] = x
		fmt.Fprintf(b, `<rect x="%d" y="%d" width="%d" height="30" fill="#dddddd" stroke="#555"/>`+"\n", x, fabricTop, barW)
		fmt.Fprintf(b, `<text x="%d" y="%d">%s</text>`+"\n", x+8, fabricTop+19, esc(fmt.Sprintf("%s %s %s", g.Fabric, s.Bridge, s.Gateway)))
	}
	if e := g.External; e != nil {
		fmt.Fprintf(b, `<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", width-pad-8, fabricTop+19, esc("external "+e.Address.String()))
	}
	for i, n := range g.Nodes {
		x := pad + i*(nodeW+gap)
		cx := x + nodeW/2
		// Straight up when the bar is above the node, else to its middle.
		bx := barX[n.Bridge] + barW/2
		if cx > barX[n.Bridge] && cx < barX[n.Bridge]+barW {
			bx = cx
		}
		fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#555"/>`+"\n", cx, nodeTop, bx, fabricTop+30)
		fmt.Fprintf(b, `<text x="%d" y="%d">%s</text>`+"\n", cx+4, nodeTop-8, esc("eth0 "+n.Address.String()))
		fmt.Fprintf(b, `<rect x="%d" y="%d" width="%d" height="%d" rx="6" fill="#f4f8ff" stroke="#2266aa"/>`+"\n", x, nodeTop, nodeW, nodeH)
		y := nodeTop + lineH
		fmt.Fprintf(b, `<text x="%d" y="%d" font-weight="bold">%s</text>`+"\n", x+8, y, esc("node "+n.Name+" (podnet switch)"))
		y += lineH
		fmt.Fprintf(b, `<text x="%d" y="%d" font-size="10">%s</text>`+"\n", x+8, y, esc(n.tunnels()))
		item := func(color, s string) {
			y += lineH
			fmt.Fprintf(b, `<text x="%d" y="%d" fill="%s">%s</text>`+"\n", x+12, y, color, esc(s))
		}
		if n.Error != "" {
			item("#cc0000", "error: "+n.Error)
		}
		for _, bl := range n.Blocks {
			item("#666666", "block "+bl.use())
		}
		for _, p := range n.Pods {
			item("#000000", "pod "+p.label())
		}
		for _, p := range n.Peers {
			item("#2266aa", "bgp "+p.peer()+": "+p.State)
		}
	}
	y := overlayTop
	fmt.Fprintf(b, `<text x="%d" y="%d" font-weight="bold">between nodes</text>`+"\n", pad, y)
	for _, h := range g.Overlay {
		y += lineH
		fmt.Fprintf(b, `<text x="%d" y="%d" fill="#aa4422">%s</text>`+"\n", pad+8, y,
			esc(fmt.Sprintf("%s → %s via %s, %s: %s", h.From, h.To, h.Via, encapName(h.Encap), prefixes(h.Prefixes))))
	}
	for _, p := range g.Pools {
		y += lineH
		fmt.Fprintf(b, `<text x="%d" y="%d">%s</text>`+"\n", pad+8, y, esc(fmt.Sprintf("pool %s %s: %s", p.Name, p.CIDR, p.modes())))
	}
	b.WriteString("</svg>\n")
}
