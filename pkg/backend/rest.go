package backend

// Rester is an optional interface of a Device. Rest tells the device that
// its caller is about to block on something else (an expert file's read)
// before its next operation, so that workers it keeps polling for that
// operation may sleep sooner and leave the CPUs to the goroutines doing the
// reads. The next operation ends the rest; no result changes. The model calls
// it before it waits for a read that has not finished. Concurrency: safe from
// any goroutine, and concurrent with the device's operations.
type Rester interface {
	Rest()
}
