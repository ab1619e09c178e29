package resources

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"podnet/api"
	"podnet/ipam"
)

// PoolHooks are the Options that tie pools to IPAM m: deleting a pool
// with allocations is refused (PoolInUse), and deleting one drops its
// empty blocks and their affinities.
func PoolHooks(m *ipam.IPAM) Options {
	return Options{
		PoolInUse: PoolInUse(m),
		PoolDeleted: func(ctx context.Context, pool api.IPPool) error {
			cidr, err := pool.Prefix()
			if err != nil {
				return err
			}
			return m.ReleasePoolAffinities(ctx, cidr)
		},
	}
}

// PoolInUse is the Options.PoolInUse hook backed by IPAM m: it counts a
// pool's allocations and says which nodes hold them.
func PoolInUse(m *ipam.IPAM) func(ctx context.Context, pool api.IPPool) (int, string, error) {
	return func(ctx context.Context, pool api.IPPool) (int, string, error) {
		cidr, err := pool.Prefix()
		if err != nil {
			return 0, "", err
		}
		count, byNode, err := m.PoolAllocations(ctx, cidr)
		if err != nil || count == 0 {
			return count, "", err
		}
		return count, formatByNode(byNode), nil
	}
}

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
