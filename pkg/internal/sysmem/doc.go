// Package sysmem reports the machine's physical memory, for decisions that
// depend on whether data can fit in RAM (bench's projection, fm-repack's
// choice between buffered and direct source reads). It is a leaf package so
// that the converters need not link the inference packages to ask.
package sysmem
