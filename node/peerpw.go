package node

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"

	"podnet/api"
	"podnet/router/bgp"
)

// BGP passwords come from a file on the node (or the daemon's
// environment), which only the daemon can read: the CLI that applies a
// BGPPeer may run on another machine. A BGPPeer whose password cannot be
// read gets no session at all, rather than one without the password (a
// peer that does not insist would accept it unauthenticated), and
// `podnet node status` shows why in place of the session.

// passwordProblem says why a BGPPeer's password cannot be read, or "".
func passwordProblem(pw *api.BGPPassword) string {
	switch {
	case pw == nil:
		return ""
	case pw.SecretFile != "":
		b, err := os.ReadFile(pw.SecretFile)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return fmt.Sprintf("password file %s: no such file", pw.SecretFile)
		case errors.Is(err, fs.ErrPermission):
			return fmt.Sprintf("password file %s: permission denied", pw.SecretFile)
		case err != nil:
			var pe *fs.PathError
			if errors.As(err, &pe) {
				err = pe.Err
			}
			return fmt.Sprintf("password file %s: %v", pw.SecretFile, err)
		case strings.TrimSpace(string(b)) == "":
			return fmt.Sprintf("password file %s is empty", pw.SecretFile)
		}
	case pw.Env != "":
		if os.Getenv(pw.Env) == "" {
			return fmt.Sprintf("password variable %s is not set in the daemon's environment", pw.Env)
		}
	}
	return ""
}

// withoutPasswordProblems splits peers into those whose password (if
// any) can be read and those whose cannot, with the reason.
func withoutPasswordProblems(peers []*api.BGPPeer) (ok []*api.BGPPeer, broken map[*api.BGPPeer]string) {
	for _, p := range peers {
		if why := passwordProblem(p.Spec.Password); why != "" {
			if broken == nil {
				broken = map[*api.BGPPeer]string{}
			}
			broken[p] = why
			continue
		}
		ok = append(ok, p)
	}
	return ok, broken
}

// refusedSessions finds the sessions that the broken BGPPeers would add
// to (or change in) want, the sessions of the usable ones: each broken
// peer is added back alone and desired tells what changes. It returns
// want without those sessions, and a status row for each.
func refusedSessions(want []bgp.Peer, usable []*api.BGPPeer, broken map[*api.BGPPeer]string,
	desired func([]*api.BGPPeer) []bgp.Peer) ([]bgp.Peer, []bgp.PeerStatus) {
	if len(broken) == 0 {
		return want, nil
	}
	byAddr := map[string]bgp.Peer{}
	for _, p := range want {
		byAddr[p.Address.String()] = p
	}
	refused := map[string]bgp.PeerStatus{}
	names := make([]*api.BGPPeer, 0, len(broken))
	for b := range broken {
		names = append(names, b)
	}
	slices.SortFunc(names, func(a, b *api.BGPPeer) int { return strings.Compare(a.Name, b.Name) })
	for _, b := range names {
		for _, p := range desired(append(slices.Clone(usable), b)) {
			if q, ok := byAddr[p.Address.String()]; ok && q == p {
				continue
			}
			if _, dup := refused[p.Address.String()]; !dup {
				refused[p.Address.String()] = bgp.PeerStatus{Address: p.Address, Type: p.Type, State: "Idle",
					Info: broken[b] + " (BGPPeer " + b.Name + "; session not started)"}
			}
		}
	}
	out := slices.DeleteFunc(slices.Clone(want), func(p bgp.Peer) bool { _, r := refused[p.Address.String()]; return r })
	rows := make([]bgp.PeerStatus, 0, len(refused))
	for _, r := range refused {
		rows = append(rows, r)
	}
	slices.SortFunc(rows, func(a, b bgp.PeerStatus) int { return a.Address.Compare(b.Address) })
	return out, rows
}
