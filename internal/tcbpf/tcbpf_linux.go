// Package tcbpf attaches eBPF programs as direct-action tc filters on a
// link's ingress and checks that they stay there: what the tunnels' TAPs
// (package encap) and NAT's steering program (package nat) share.
package tcbpf

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// SkbProtocolOffset is offsetof(struct __sk_buff, protocol).
const SkbProtocolOffset = 16

// SkbProtocolIPv4 is ETH_P_IP as a 32-bit load of __sk_buff.protocol
// reads it: the field holds the network-order value, read in the host's
// order.
var SkbProtocolIPv4 = int32(binary.NativeEndian.Uint16([]byte{0x08, 0x00}))

// A Filter says where a program goes on a link's ingress.
type Filter struct {
	Name     string // the filter's name, shown by tc
	Handle   uint32
	Priority uint16
}

func link(ifindex int) netlink.Link {
	return &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: ifindex}}
}

func clsact(ifindex int) *netlink.GenericQdisc {
	return &netlink.GenericQdisc{QdiscType: "clsact", QdiscAttrs: netlink.QdiscAttrs{
		LinkIndex: ifindex, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT}}
}

// Attach adds prog as f, a direct-action cls_bpf filter, to the ingress
// of the link ifindex, with the link's clsact qdisc, which it adds if
// there is none (addedQdisc). Filters already there named f.Name (a
// daemon's that did not stop cleanly) are removed first.
func Attach(nl *netlink.Handle, ifindex int, prog *ebpf.Program, f Filter) (addedQdisc bool, err error) {
	switch err := nl.QdiscAdd(clsact(ifindex)); {
	case err == nil:
		addedQdisc = true
	case !errors.Is(err, unix.EEXIST):
		return false, fmt.Errorf("add clsact qdisc: %w", err)
	}
	if err := Remove(nl, ifindex, f.Name); err != nil {
		return addedQdisc, err
	}
	filter := &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{LinkIndex: ifindex, Parent: netlink.HANDLE_MIN_INGRESS,
			Handle: f.Handle, Protocol: unix.ETH_P_ALL, Priority: f.Priority},
		Fd: prog.FD(), Name: f.Name, DirectAction: true,
	}
	if err := nl.FilterAdd(filter); err != nil {
		return addedQdisc, fmt.Errorf("add tc filter: %w", err)
	}
	return addedQdisc, nil
}

// Remove deletes the ingress filters named name from the link ifindex.
func Remove(nl *netlink.Handle, ifindex int, name string) error {
	fs, err := nl.FilterList(link(ifindex), netlink.HANDLE_MIN_INGRESS)
	if err != nil {
		return fmt.Errorf("list tc filters: %w", err)
	}
	for _, f := range fs {
		if b, ok := f.(*netlink.BpfFilter); ok && b.Name == name {
			if err := nl.FilterDel(b); err != nil && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("remove tc filter %s: %w", name, err)
			}
		}
	}
	return nil
}

// RemoveQdiscIfUnused deletes the link's clsact qdisc if no filter is
// left on it, ingress or egress (one Attach added, once its filter is
// gone).
func RemoveQdiscIfUnused(nl *netlink.Handle, ifindex int) error {
	in, err := nl.FilterList(link(ifindex), netlink.HANDLE_MIN_INGRESS)
	if err != nil {
		return err
	}
	out, err := nl.FilterList(link(ifindex), netlink.HANDLE_MIN_EGRESS)
	if err != nil || len(in)+len(out) > 0 {
		return err
	}
	return nl.QdiscDel(clsact(ifindex))
}

// Attached says whether the program with id is still a filter on the
// link's ingress: someone may remove the filter or the qdisc.
func Attached(nl *netlink.Handle, ifindex int, id ebpf.ProgramID) error {
	fs, err := nl.FilterList(link(ifindex), netlink.HANDLE_MIN_INGRESS)
	if err != nil {
		return fmt.Errorf("list tc filters: %w", err)
	}
	for _, f := range fs {
		if b, ok := f.(*netlink.BpfFilter); ok && b.Id == int(id) {
			return nil
		}
	}
	return errors.New("the tc program is no longer attached (tc filter or qdisc removed)")
}
