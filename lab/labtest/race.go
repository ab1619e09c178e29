//go:build race

package labtest

// raceEnabled: the tests run under the race detector, so the daemons
// they start are built with it too (and stop at the first race).
const raceEnabled = true
