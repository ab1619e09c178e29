//go:build race

package ipam

// raceEnabled: the race detector slows etcd and the allocators several
// times over, so the concurrency tests allocate less under it.
const raceEnabled = true
