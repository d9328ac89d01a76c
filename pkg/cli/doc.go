// Package cli holds what the converter commands (fm-extract, fm-repack,
// fm-requant2bit) share around their cobra roots: Ctrl-C turned into context
// cancellation, the one-line error convention, and the byte progress bar.
package cli
