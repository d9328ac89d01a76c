package experts

import (
	"sync/atomic"
	"time"
)

// Stats are the store's counters since Open or the last ResetStats, plus a
// few gauges of what it holds now. For per-token figures take Stats at token
// boundaries and Sub them, or ResetStats at the start of each token.
type Stats struct {
	Fetches int64 // Fetch calls and Slot Starts
	Experts int64 // experts asked for: Hits + Shared + Misses
	Hits    int64 // served from the RAM cache (Mmap: from an existing mapping)
	Shared  int64 // served from a buffer another caller had read or was reading
	Misses  int64 // read from their files
	Reads   int64 // ReadAt calls (a short read costs more than one per miss)
	Bytes   int64 // bytes read from files
	// IOTime sums the wall time of every file read; parallel reads overlap, so
	// it can exceed the elapsed time. IOTime/WaitTime estimates the achieved
	// read parallelism.
	IOTime time.Duration
	// WaitTime sums the wall time callers spent inside Fetch, and for a Slot
	// the time from Start to the end of its expert's read: what the I/O cost
	// the token.
	WaitTime  time.Duration
	Evictions int64 // experts dropped from the RAM cache

	// Gauges (not reset; Sub keeps the newer value).
	CachedExperts int64 // experts in the RAM cache now (Mmap: experts mapped)
	CachedBytes   int64 // their bytes: never above Options.CacheBytes (Mmap: mapped, in the page cache)
	// BufferBytes counts every expert buffer the store keeps reachable: cached,
	// handed out and not yet released, being read, or idle for reuse.
	BufferBytes     int64
	PeakBufferBytes int64 // highest BufferBytes since Open or ResetStats
	// VerifiedBytes and VerifyTime are the bytes hashed by checksum
	// verification since Open and the time spent hashing them (summed over
	// workers); not reset: each expert is hashed once per process.
	VerifiedBytes int64
	VerifyTime    time.Duration
}

// Sub returns the counters of s minus those of prev (the activity between two
// snapshots); gauges are those of s.
func (s Stats) Sub(prev Stats) Stats {
	d := s
	d.Fetches -= prev.Fetches
	d.Experts -= prev.Experts
	d.Hits -= prev.Hits
	d.Shared -= prev.Shared
	d.Misses -= prev.Misses
	d.Reads -= prev.Reads
	d.Bytes -= prev.Bytes
	d.IOTime -= prev.IOTime
	d.WaitTime -= prev.WaitTime
	d.Evictions -= prev.Evictions
	return d
}

// HitRate is the fraction of experts served without reading a file.
func (s Stats) HitRate() float64 {
	if s.Experts == 0 {
		return 0
	}
	return float64(s.Hits+s.Shared) / float64(s.Experts)
}

// counters are the resettable part of Stats, updated without the store lock
// by the workers.
type counters struct {
	fetches, experts, hits, shared, misses atomic.Int64
	reads, bytes, ioTime, waitTime         atomic.Int64
	evictions                              atomic.Int64
}

func (c *counters) snapshot() Stats {
	return Stats{
		Fetches:   c.fetches.Load(),
		Experts:   c.experts.Load(),
		Hits:      c.hits.Load(),
		Shared:    c.shared.Load(),
		Misses:    c.misses.Load(),
		Reads:     c.reads.Load(),
		Bytes:     c.bytes.Load(),
		IOTime:    time.Duration(c.ioTime.Load()),
		WaitTime:  time.Duration(c.waitTime.Load()),
		Evictions: c.evictions.Load(),
	}
}

func (c *counters) reset() {
	for _, v := range []*atomic.Int64{&c.fetches, &c.experts, &c.hits, &c.shared, &c.misses,
		&c.reads, &c.bytes, &c.ioTime, &c.waitTime, &c.evictions} {
		v.Store(0)
	}
}
