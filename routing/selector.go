package routing

import "podnet/selector"

// SelectorMatches evaluates a label selector (a BGPPeer's nodeSelector or
// peerSelector) against a node's labels, in Calico's selector language
// (package selector). Validation refuses selectors that do not parse
// before they are stored, so one that fails here came from elsewhere; it
// matches nothing rather than being guessed at.
func SelectorMatches(sel string, labels map[string]string) bool {
	s, err := selector.Parse(sel)
	if err != nil {
		return false
	}
	return s.Matches(labels)
}
