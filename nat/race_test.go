//go:build race

package nat

// raceEnabled shrinks data sizes: the race detector slows the netstack
// about 60-fold (measured on the TCP transfer tests).
const raceEnabled = true
