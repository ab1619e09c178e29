//go:build race

package packet

// raceEnabled is true under -race, where sync.Pool drops a random share of
// Puts on purpose, so pool allocation counts are meaningless.
const raceEnabled = true
