//go:build race

package server

// raceEnabled: the race detector slows generation some 30-fold; tests
// that only repeat a path already run under it skip.
const raceEnabled = true
