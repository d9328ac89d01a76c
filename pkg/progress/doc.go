// Package progress is the one interface through which fm's long-running
// work (fm-extract, fm-repack, fm-requant2bit) reports how far it got, so that
// one progress bar (pkg/cli's Bar) serves every command.
package progress
