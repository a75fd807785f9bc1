//go:build race

package quantize_test

// raceEnabled: quantizing is single-goroutine arithmetic the race detector
// slows some 10-fold and has nothing to find in; the deep models'
// comparisons skip under it (the golden files' still run).
const raceEnabled = true
