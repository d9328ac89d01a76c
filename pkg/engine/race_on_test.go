//go:build race

package engine

// raceEnabled: under the race detector sync.Pool drops recycled objects at
// random (the CPU backend's loop tasks and scratch among them), so allocation
// counts are not meaningful.
const raceEnabled = true
