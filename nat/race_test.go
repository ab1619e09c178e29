//go:build race

package nat

// raceEnabled shrinks data sizes: the race detector slows the netstack
// about 60-fold (deps.md).
const raceEnabled = true
