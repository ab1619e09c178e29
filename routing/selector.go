package routing

import "strings"

// SelectorMatches evaluates a label selector (a BGPPeer's nodeSelector or
// peerSelector) against a node's labels. Every selector decision in
// routing goes through here, so that a full selector implementation can
// replace this body alone. It supports the forms podnet documents:
// all(), k == 'v', k != 'v' and has(k), joined with &&; anything else
// matches nothing rather than being guessed at.
func SelectorMatches(sel string, labels map[string]string) bool {
	sel = strings.TrimSpace(sel)
	if sel == "" || sel == "all()" {
		return true
	}
	for _, term := range strings.Split(sel, "&&") {
		term = strings.TrimSpace(term)
		switch {
		case term == "all()":
		case strings.HasPrefix(term, "has(") && strings.HasSuffix(term, ")"):
			if _, ok := labels[strings.TrimSpace(term[4:len(term)-1])]; !ok {
				return false
			}
		case strings.Contains(term, "=="):
			k, v, _ := strings.Cut(term, "==")
			if labels[strings.TrimSpace(k)] != unquote(v) {
				return false
			}
		case strings.Contains(term, "!="):
			k, v, _ := strings.Cut(term, "!=")
			if labels[strings.TrimSpace(k)] == unquote(v) {
				return false
			}
		default:
			return false
		}
	}
	return true
}

func unquote(s string) string {
	return strings.Trim(strings.TrimSpace(s), `'"`)
}
