package backend

// NonFiniteMarker is an optional interface of a Device whose NonFinite is a
// round trip to another processor (a GPU: the queue drains, the host waits,
// the device idles while the host issues again). The model checks the
// residual stream after every block; with a NonFiniteMarker it queues those
// checks as Marks and reads them at the synchronizing calls a step makes
// anyway (a sparse layer's router logits, the final logits), instead of
// synchronizing two or three times per layer. Devices without it are checked
// with NonFinite, block by block.
type NonFiniteMarker interface {
	// NewMarks allocates n slots, each reading −1 (nothing found).
	NewMarks(n int) (Marks, error)
}

// Marks are deferred NonFinite results of one caller: use them from one
// goroutine at a time, like a State.
type Marks interface {
	// Mark queues a scan of x (ordered like an operation of the calling
	// goroutine, so it sees x as the operations issued before it left it)
	// whose result, the first row of x holding a NaN or an infinity, goes to
	// slot i; when slot i is marked several times before Read, the smallest
	// row found stays. 0 ≤ i < n.
	Mark(i int, x Tensor)
	// Read sets dst[i] (len(dst) = n) to slot i's row, or −1 when no Mark of
	// it since the last Read found a non-finite value, and resets every slot
	// to −1. It waits for the queued scans like Sync and returns any deferred
	// device error; after a Download or Sync issued after the Marks it need
	// not wait again (a GPU copies the slots to the host within that
	// synchronizing call).
	Read(dst []int) error
	// Release frees the slots.
	Release()
}
