//go:build race

package vswitch

// raceEnabled is true under -race, where sync.Pool drops a random share of
// Puts on purpose: the segment scratch then allocates, and allocation
// counts mean nothing. make test runs the allocation tests without -race
// too (make allocs).
const raceEnabled = true
