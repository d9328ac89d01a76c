// Package deptest holds a negative dependency test (the tailscale tstest/deptest
// pattern): the four commands must stay pure Go, statically linkable with
// CGO_ENABLED=0, and must never pull in cgo or dlopen machinery (purego), which
// belongs only to an optional GPU backend behind a build tag. It also holds
// pkg/model to the backend contract: it must not import any implementation
// under pkg/backend/.
package deptest
