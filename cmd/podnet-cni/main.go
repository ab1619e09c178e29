// Command podnet-cni is podnet's CNI plugin. A container runtime (podman,
// containerd, cnitool) runs it with a network namespace; it asks the
// node's podnet daemon to attach that namespace as a pod (the daemon's
// `pod add --netns`) and reports the pod's address, gateway, routes and
// MTU back. The plugin keeps no state: the pod's name is derived from the
// container ID and interface name, so DEL and CHECK find what ADD made.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"podnet/nodeapi"
)

// podIfName is the name the daemon gives the pod's interface (the
// switch's PodIfName, as Calico names it); the plugin cannot rename it.
const podIfName = "eth0"

// gateway is the pod's next hop: a link-local address the node's switch
// answers ARP for, as in Calico.
var gateway = net.IPv4(169, 254, 1, 1)

// errPluginNotAvailable is CNI 1.1's STATUS error "the plugin cannot
// service ADD requests".
const errPluginNotAvailable uint = 50

// readyPoll is how often a command asks a daemon that does not answer yet.
const readyPoll = 200 * time.Millisecond

// statusTimeout bounds STATUS's one question to the daemon (readyTimeout
// does when shorter): STATUS does not wait for a daemon that is starting.
const statusTimeout = 2 * time.Second

// supported are the CNI versions the plugin speaks: CHECK needs 0.4.0,
// STATUS and GC 1.1.0; results before 0.3.0 cannot say which interface
// an address is on.
var supported = version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add: cmdAdd, Del: cmdDel, Check: cmdCheck, GC: cmdGC, Status: cmdStatus,
	}, supported, "podnet-cni: attaches containers to the node's podnet daemon")
}

// connect returns a client of the daemon once it answers, and its status.
// A daemon that does not answer within the configured time is an error
// the runtime may retry (CNI's "try again later").
func connect(conf *netConf) (*nodeapi.Client, nodeapi.Status, error) {
	sock := conf.socket(os.Getenv)
	c := nodeapi.NewClient(sock)
	// The deadline bounds each request too: a starting daemon has bound
	// its socket before it serves, so a request waits there unanswered.
	ctx, cancel := context.WithTimeout(context.Background(), conf.readyTimeout)
	defer cancel()
	for {
		st, err := c.StatusContext(ctx)
		if err == nil {
			return c, st, nil
		}
		select {
		case <-ctx.Done():
			return nil, st, types.NewError(types.ErrTryAgainLater,
				fmt.Sprintf("podnet daemon at %s not ready after %v", sock, conf.readyTimeout), err.Error())
		case <-time.After(readyPoll):
		}
	}
}

// findPod returns the pod called name, if the daemon has it.
func findPod(c *nodeapi.Client, name string) (nodeapi.PodInfo, bool, error) {
	pods, err := c.Pods()
	if err != nil {
		return nodeapi.PodInfo{}, false, fmt.Errorf("list pods: %w", err)
	}
	for _, p := range pods {
		if p.Name == name {
			return p, true, nil
		}
	}
	return nodeapi.PodInfo{}, false, nil
}

func loadConf(args *skel.CmdArgs) (*netConf, error) {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, err.Error(), "")
	}
	return conf, nil
}

func checkIfName(ifName string) error {
	if ifName != podIfName {
		return types.NewError(types.ErrInvalidEnvironmentVariables,
			fmt.Sprintf("podnet-cni: CNI_IFNAME %q: podnet names the pod's interface %s, no other name is supported", ifName, podIfName), "")
	}
	return nil
}

func cmdAdd(args *skel.CmdArgs) error {
	conf, err := loadConf(args)
	if err != nil {
		return err
	}
	if err := checkIfName(args.IfName); err != nil {
		return err
	}
	c, st, err := connect(conf)
	if err != nil {
		return err
	}
	name := podName(conf.Name, args.ContainerID, args.IfName)
	info, err := c.AddPod(nodeapi.AddPodRequest{Name: name, Netns: args.Netns, Pool: conf.Pool})
	if err != nil {
		// A runtime that lost the answer to an ADD retries it: the pod
		// it asked for is then there, in the same namespace.
		p, ok, ferr := findPod(c, name)
		if ferr != nil || !ok || !p.Attached || p.Netns != args.Netns {
			// The codes a runtime acts on: retry while the daemon has no
			// datastore; a bad pool needs a fixed conflist, not a retry.
			msg := fmt.Sprintf("podnet-cni: add pod %s (container %s) in %s: %v", name, args.ContainerID, args.Netns, err)
			switch {
			case errors.Is(err, nodeapi.ErrUnavailable):
				return types.NewError(types.ErrTryAgainLater, msg, "")
			case errors.Is(err, nodeapi.ErrInvalidPool):
				return types.NewError(types.ErrInvalidNetworkConfig, msg+` (the network configuration's "pool")`, "")
			}
			return fmt.Errorf("podnet-cni: add pod %s (container %s) in %s: %w", name, args.ContainerID, args.Netns, err)
		}
		info = p
	}
	res, err := result(conf.CNIVersion, args.Netns, info, st.PodMTU)
	if err != nil {
		return fmt.Errorf("podnet-cni: pod %s: %w", name, err)
	}
	return types.PrintResult(res, conf.CNIVersion)
}

// result is the ADD answer for pod: its eth0, its /32 address, the
// gateway and the default route through it.
func result(cniVersion, netns string, pod nodeapi.PodInfo, mtu int) (*current.Result, error) {
	ip := net.ParseIP(pod.IP).To4()
	if ip == nil {
		return nil, fmt.Errorf("daemon answered with address %q, not IPv4", pod.IP)
	}
	idx := 0
	return &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{{Name: podIfName, Mac: pod.MAC, Mtu: mtu, Sandbox: netns}},
		IPs: []*current.IPConfig{{
			Interface: &idx,
			Address:   net.IPNet{IP: ip, Mask: net.CIDRMask(32, 32)},
			Gateway:   gateway,
		}},
		Routes: []*types.Route{{Dst: net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, GW: gateway}},
	}, nil
}

// cmdDel removes the pod. A pod the daemon does not have, or is deleting
// already (it finishes the release itself, etcd or not), is released (a
// second DEL, or a DEL for an ADD that failed): success. A pod still
// being added (the runtime gave up waiting for its ADD) is an error, so
// that the runtime tries the DEL again: a success now would leave the
// pod and its address behind once the ADD completes.
func cmdDel(args *skel.CmdArgs) error {
	conf, err := loadConf(args)
	if err != nil {
		return err
	}
	c, _, err := connect(conf)
	if err != nil {
		return err
	}
	name := podName(conf.Name, args.ContainerID, args.IfName)
	err = c.DeletePod(name)
	switch {
	case err == nil, errors.Is(err, nodeapi.ErrNotFound):
		return nil
	case errors.Is(err, nodeapi.ErrBusy):
		return types.NewError(types.ErrTryAgainLater, fmt.Sprintf("podnet-cni: delete pod %s (container %s): %v", name, args.ContainerID, err), "")
	}
	return fmt.Errorf("podnet-cni: delete pod %s (container %s): %w", name, args.ContainerID, err)
}

// cmdCheck verifies that ADD's result still holds: the daemon has the pod
// attached in this namespace with the address of prevResult, and inside
// the namespace eth0 is up with that address, the MTU and the routes.
func cmdCheck(args *skel.CmdArgs) error {
	conf, err := loadConf(args)
	if err != nil {
		return err
	}
	if err := checkIfName(args.IfName); err != nil {
		return err
	}
	if err := version.ParsePrevResult(&conf.NetConf); err != nil {
		return types.NewError(types.ErrDecodingFailure, "podnet-cni: check: prevResult: "+err.Error(), "")
	}
	if conf.PrevResult == nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "podnet-cni: check: the configuration has no prevResult", "")
	}
	prev, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, "podnet-cni: check: prevResult: "+err.Error(), "")
	}
	c, st, err := connect(conf)
	if err != nil {
		return err
	}
	name := podName(conf.Name, args.ContainerID, args.IfName)
	pod, ok, err := findPod(c, name)
	switch {
	case err != nil:
		return fmt.Errorf("podnet-cni: check pod %s: %w", name, err)
	case !ok:
		return types.NewError(types.ErrUnknownContainer, fmt.Sprintf("podnet-cni: check: the daemon has no pod %s for container %s", name, args.ContainerID), "")
	case !pod.Attached:
		return fmt.Errorf("podnet-cni: check: pod %s is not attached: %s", name, pod.Error)
	case pod.Netns != args.Netns:
		return fmt.Errorf("podnet-cni: check: pod %s is in %s, not %s", name, pod.Netns, args.Netns)
	}
	ip := net.ParseIP(pod.IP).To4()
	found := false
	for _, c := range prev.IPs {
		if c.Address.IP.Equal(ip) {
			found = true
		}
	}
	if !found {
		return fmt.Errorf("podnet-cni: check: pod %s has address %s, which prevResult does not list", name, pod.IP)
	}
	if err := checkNetns(args.Netns, ip, st.PodMTU); err != nil {
		return fmt.Errorf("podnet-cni: check pod %s in %s: %w", name, args.Netns, err)
	}
	return nil
}

// cmdGC deletes this network's pods whose attachment the runtime no longer
// lists. Pods of other networks and pods not made by the plugin keep. A
// pod gone, or being deleted, since the list (a DEL meanwhile) is done.
func cmdGC(args *skel.CmdArgs) error {
	conf, err := loadConf(args)
	if err != nil {
		return err
	}
	c, _, err := connect(conf)
	if err != nil {
		return err
	}
	keep := map[string]bool{}
	for _, a := range conf.ValidAttachments {
		keep[podName(conf.Name, a.ContainerID, a.IfName)] = true
	}
	pods, err := c.Pods()
	if err != nil {
		return fmt.Errorf("podnet-cni: gc: list pods: %w", err)
	}
	prefix := networkPrefix(conf.Name)
	var errs []error
	for _, p := range pods {
		if strings.HasPrefix(p.Name, prefix) && !keep[p.Name] {
			if err := c.DeletePod(p.Name); err != nil && !errors.Is(err, nodeapi.ErrNotFound) {
				errs = append(errs, fmt.Errorf("delete pod %s: %w", p.Name, err))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("podnet-cni: gc: %w", err)
	}
	return nil
}

// cmdStatus says whether an ADD could succeed now: whether the daemon
// answers, within statusTimeout, and reaches the datastore, without which
// it refuses every pod add. It does not wait for the daemon to start.
func cmdStatus(args *skel.CmdArgs) error {
	conf, err := loadConf(args)
	if err != nil {
		return err
	}
	sock := conf.socket(os.Getenv)
	ctx, cancel := context.WithTimeout(context.Background(), min(conf.readyTimeout, statusTimeout))
	defer cancel()
	st, err := nodeapi.NewClient(sock).StatusContext(ctx)
	if err != nil {
		return types.NewError(errPluginNotAvailable, fmt.Sprintf("podnet daemon at %s is not available", sock), err.Error())
	}
	if st.Datastore == nodeapi.DatastoreUnreachable {
		return types.NewError(errPluginNotAvailable,
			fmt.Sprintf("podnet daemon at %s cannot add pods: its datastore is unreachable since %s", sock, st.DatastoreSince.UTC().Format(time.RFC3339)),
			st.DatastoreError)
	}
	return nil
}
