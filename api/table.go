package api

import (
	"bytes"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
)

// TableOptions carries what a table needs beyond the resources.
type TableOptions struct {
	// Wide selects the -o wide columns instead of -o ps.
	Wide bool
	// GlobalASN is the AS a Node without its own inherits, shown in
	// parentheses in Node's ASN column; "" means "64512" (no
	// BGPConfiguration), "unknown" if it could not be read.
	GlobalASN string
}

// TableHeadings returns the column headings of kind for -o ps or wide
// (docs/calico-conventions.md §1.6).
func TableHeadings(kind string, wide bool) []string {
	switch kind {
	case KindIPPool:
		if wide {
			return []string{"NAME", "CIDR", "NAT", "IPIPMODE", "VXLANMODE", "DISABLED", "DISABLEBGPEXPORT", "SELECTOR", "ASSIGNMENTMODE"}
		}
		return []string{"NAME", "CIDR", "SELECTOR"}
	case KindNode:
		if wide {
			// Calico's columns, then what podnet adds: the VTEP MAC and
			// the pod MTU the daemon uses.
			return []string{"NAME", "ASN", "IPV4", "IPV6", "VXLANMAC", "PODMTU"}
		}
		return []string{"NAME"}
	case KindBGPPeer:
		return []string{"NAME", "PEERIP", "NODE", "ASN"}
	case KindBGPConfiguration:
		return []string{"NAME", "LOGSEVERITY", "MESHENABLED", "ASNUMBER"}
	case KindIPAMConfiguration:
		if wide {
			return []string{"NAME", "STRICTAFFINITY", "MAXBLOCKSPERHOST", "AUTOALLOCATEBLOCKS"}
		}
		return []string{"NAME", "STRICTAFFINITY", "MAXBLOCKSPERHOST"}
	case KindWorkloadEndpoint:
		if wide {
			return []string{"NAME", "WORKLOAD", "NODE", "NETWORKS", "INTERFACE", "MAC", "NETNS"}
		}
		return []string{"WORKLOAD", "NODE", "NETWORKS", "INTERFACE"}
	}
	return []string{"NAME"}
}

// TableRow returns r's cells for TableHeadings(r.ResourceKind(), wide).
func TableRow(r Resource, o TableOptions) []string {
	switch x := r.(type) {
	case *IPPool:
		s := &x.Spec
		if o.Wide {
			return []string{x.Name, s.CIDR, strconv.FormatBool(s.NATOutgoing), orNever(s.IPIPMode), orNever(s.VXLANMode),
				strconv.FormatBool(s.Disabled), strconv.FormatBool(s.DisableBGPExport), s.NodeSelector, s.AssignmentMode}
		}
		return []string{x.Name, s.CIDR, s.NodeSelector}
	case *Node:
		if !o.Wide {
			return []string{x.Name}
		}
		asn := o.GlobalASN
		if asn == "" {
			asn = DefaultASNumber.String()
		}
		asn = "(" + asn + ")"
		var v4, v6 string
		if b := x.Spec.BGP; b != nil {
			if b.ASNumber != nil {
				asn = b.ASNumber.String()
			}
			v4, v6 = b.IPv4Address, b.IPv6Address
		}
		mtu := ""
		if x.Status != nil && x.Status.PodMTU > 0 {
			mtu = strconv.Itoa(x.Status.PodMTU)
		}
		return []string{x.Name, asn, v4, v6, x.Spec.VXLANTunnelMACAddr, mtu}
	case *BGPPeer:
		s := &x.Spec
		peer, asn := s.PeerIP, ""
		if s.ASNumber != 0 {
			asn = asnColumn(s.ASNumber)
		}
		if s.PeerSelector != "" {
			peer = "(selector)"
			asn = "(selector)"
		}
		node := s.Node
		switch {
		case node == "" && s.NodeSelector != "":
			node = "(selector)"
		case node == "":
			node = "(global)"
		}
		return []string{x.Name, peer, node, asn}
	case *BGPConfiguration:
		s := &x.Spec
		mesh, asn := "", ""
		if s.NodeToNodeMeshEnabled != nil {
			mesh = strconv.FormatBool(*s.NodeToNodeMeshEnabled)
		}
		if s.ASNumber != nil {
			asn = s.ASNumber.String()
		}
		return []string{x.Name, s.LogSeverityScreen, mesh, asn}
	case *IPAMConfiguration:
		row := []string{x.Name, strconv.FormatBool(x.Spec.StrictAffinity), strconv.Itoa(x.Spec.MaxBlocksPerHost)}
		if o.Wide {
			row = append(row, strconv.FormatBool(x.AutoAllocate()))
		}
		return row
	case *WorkloadEndpoint:
		s := &x.Spec
		nets := strings.Join(s.IPNetworks, ",")
		if o.Wide {
			return []string{x.Name, s.Workload, s.Node, nets, s.InterfaceName, s.MAC, s.Netns}
		}
		return []string{s.Workload, s.Node, nets, s.InterfaceName}
	}
	return []string{r.GetObjectMeta().Name}
}

func orNever(m EncapMode) string {
	if m == "" {
		return string(EncapNever)
	}
	return string(m)
}

// PrintTable writes resources of one kind as a table: the headings, then
// one row per resource, columns aligned as calicoctl aligns them.
func PrintTable(w io.Writer, kind string, rs []Resource, o TableOptions) error {
	var b bytes.Buffer
	tw := tabwriter.NewWriter(&b, 5, 1, 3, ' ', 0)
	fmt.Fprintln(tw, strings.Join(TableHeadings(kind, o.Wide), "\t"))
	for _, r := range rs {
		fmt.Fprintln(tw, strings.Join(TableRow(r, o), "\t"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// Empty last cells leave padding behind; drop it.
	var out bytes.Buffer
	for _, l := range bytes.SplitAfter(b.Bytes(), []byte("\n")) {
		out.Write(bytes.TrimRight(l, " \n"))
		if len(l) > 0 && l[len(l)-1] == '\n' {
			out.WriteByte('\n')
		}
	}
	_, err := w.Write(out.Bytes())
	return err
}
