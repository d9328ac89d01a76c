package backend

// Reserver is an optional interface of a State: Reserve makes room for
// positions tokens in every KV cache ahead of use. Caches otherwise grow when
// a step needs more room, and a growth in the middle of a decode is a stall:
// the CPU state copies every layer's cache into fresh memory, whose page
// faults cost ~21 ms for 12 layers on the development VM (docs/PERF.md,
// round seven). A hint only: a step still grows a state that is short of
// room, a Reserve below what the state holds does nothing, and a device may
// reserve less than asked (the CPU at most 256 MiB of caches ahead of use).
// An error is an allocation the device refused; the state is unchanged then.
// Concurrency: as the State's other methods (one goroutine at a time).
type Reserver interface {
	Reserve(positions int) error
}
