package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"podnet/nodeapi"
)

// defaultReadyTimeout is how long a command waits for the daemon to
// answer. A node that boots starts the runtime and podnet together; a few
// seconds cover the daemon's start, not a daemon that is down.
const defaultReadyTimeout = 10 * time.Second

// netConf is the plugin's entry of a conflist:
//
//	{"type": "podnet-cni", "socket": "/run/podnet/podnet.sock",
//	 "readyTimeout": "10s", "pool": "default-ipv4-ippool"}
//
// Every podnet field is optional.
type netConf struct {
	types.NetConf
	// Socket is the daemon's API socket; $PODNET_SOCKET overrides it, as
	// it does for the CLI, so the plugin finds the daemon of a lab node.
	Socket string `json:"socket,omitempty"`
	// ReadyTimeout bounds the wait for the daemon ("30s"); "" = 10s.
	ReadyTimeout string `json:"readyTimeout,omitempty"`
	// Pool names the IP pool addresses come from; "" = any enabled pool.
	Pool string `json:"pool,omitempty"`

	readyTimeout time.Duration
}

// parseConf decodes and checks the plugin's configuration. The error
// names the field at fault.
func parseConf(stdin []byte) (*netConf, error) {
	conf := &netConf{}
	if err := json.Unmarshal(stdin, conf); err != nil {
		return nil, fmt.Errorf("podnet-cni: parse network configuration: %w", err)
	}
	if conf.Name == "" {
		return nil, fmt.Errorf("podnet-cni: network configuration: \"name\" is required")
	}
	conf.readyTimeout = defaultReadyTimeout
	if conf.ReadyTimeout != "" {
		d, err := time.ParseDuration(conf.ReadyTimeout)
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("podnet-cni: network configuration: \"readyTimeout\" %q is not a positive duration (like \"30s\")", conf.ReadyTimeout)
		}
		conf.readyTimeout = d
	}
	if conf.Socket != "" && !strings.HasPrefix(conf.Socket, "/") {
		return nil, fmt.Errorf("podnet-cni: network configuration: \"socket\" %q is not an absolute path", conf.Socket)
	}
	return conf, nil
}

// socket picks the daemon's socket as the CLI does: $PODNET_SOCKET, else
// the conflist's "socket", else the default.
func (c *netConf) socket(getenv func(string) string) string {
	if s := getenv(nodeapi.SocketEnv); s != "" {
		return s
	}
	if c.Socket != "" {
		return c.Socket
	}
	return nodeapi.DefaultSocket
}

// Pod names are "cni-" + 6 hex digits of the network's name + "-" + up to
// 12 letters and digits of the container ID (to find a container's pod by
// eye) + "-" + 8 hex digits of SHA-256(network, container ID, ifname). The
// hash makes the name deterministic (DEL and CHECK find the pod ADD made
// from the same arguments, with no state in the plugin) and unique per
// attachment; the network tag lets GC touch only its own network's pods.
const podPrefix = "cni-"

func podName(network, containerID, ifName string) string {
	var id strings.Builder
	for _, r := range strings.ToLower(containerID) {
		if id.Len() == 12 {
			break
		}
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			id.WriteRune(r)
		}
	}
	sum := sha256.Sum256([]byte(network + "\x00" + containerID + "\x00" + ifName))
	name := networkPrefix(network)
	if id.Len() > 0 {
		name += id.String() + "-"
	}
	return name + hex.EncodeToString(sum[:4])
}

// networkPrefix is the start every pod name of network shares.
func networkPrefix(network string) string {
	sum := sha256.Sum256([]byte(network))
	return podPrefix + hex.EncodeToString(sum[:3]) + "-"
}
