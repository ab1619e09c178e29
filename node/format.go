package node

import (
	"fmt"
	"slices"
	"strings"
)

// formatByNode renders {"worker2": 2, "worker1": 3} as
// "worker1: 3, worker2: 2".
func formatByNode(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		name := k
		if name == "" {
			name = "(no node)"
		}
		parts[i] = fmt.Sprintf("%s: %d", name, m[k])
	}
	return strings.Join(parts, ", ")
}
