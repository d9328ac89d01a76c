// Package cli holds what fm's four binaries (fm-extract, fm-repack,
// fm-requant2bit, fm-infer) share around their cobra roots: Ctrl-C turned
// into context cancellation, the one-line error convention, the byte
// progress bar, --version, and range-checked numeric flags whose errors name
// the flag.
package cli
