package backend

import "sync/atomic"

// ExpertKey names one routed expert of one loaded model: Owner is a number
// unique to the model instance in this process (NewCacheOwner), so two models
// on one device — or a model and its successor at the same address — never
// share entries; Layer and ID say which expert.
type ExpertKey struct {
	Owner     uint64
	Layer, ID int
}

var cacheOwners atomic.Uint64

// NewCacheOwner returns a number no earlier call returned, for ExpertKey.Owner.
func NewCacheOwner() uint64 { return cacheOwners.Add(1) }

// ExpertCache is an optional interface of a Device that keeps routed experts
// in its own memory between steps (a GPU's VRAM: re-uploading each token's
// experts over PCIe costs more than computing with them). The model uses it
// when its Device implements it: it asks CachedExpert before fetching an
// expert's file, fetches only the misses, and binds them with
// BindExpertCached, so a resident expert is never read from the store again.
// The budget is Options.ExpertCacheBytes (on the CPU also RAMExpertCache's).
//
// Concurrency: every method may be called from any goroutine, and the
// Experts handed out may be used by concurrent ExpertFFN(s) calls. An Expert
// from CachedExpert or BindExpertCached stays valid — an eviction never
// reuses its memory — until its Release, which ends that use and is called
// once, after the last ExpertFFN(s) that reads it; an entry evicted while
// held is reused after its last Release. A cache that does not apply (no
// budget, a layout it does not take) misses every CachedExpert, binds with
// BindExpert and counts nothing.
type ExpertCache interface {
	// CachedExpert returns the expert resident under key, or false. Its
	// Release ends this use; the copy stays resident.
	CachedExpert(key ExpertKey) (Expert, bool)
	// BindExpertCached binds like BindExpert, and keeps the device copy under
	// key for later CachedExpert calls when the budget allows (evicting
	// others). The rules for buf are BindExpert's.
	BindExpertCached(key ExpertKey, layout *ExpertLayout, buf []byte) (Expert, error)
	// ExpertCacheStats returns the cache's counters since the device opened.
	ExpertCacheStats() ExpertCacheStats
}

// RAMExpertCache is an optional interface of an ExpertCache kept in host
// RAM (the CPU backend's row-interleaved experts, which it computes faster
// than the files' layout, but must first convert). TakeRAMBudget reports
// whether the cache keeps experts of layout l; if so it takes bytes as its
// budget, and the caller gives the expert store no RAM cache of its own, so
// that an expert is not held twice (as its file and as the device's copy).
// Call it once, before the first expert is bound; later calls report false.
// The engine calls it only when every expert fits in the budget: the
// conversion pays only for experts that stay.
type RAMExpertCache interface {
	TakeRAMBudget(l *ExpertLayout, bytes int64) bool
}

// ExpertCacheStats counts an ExpertCache's traffic. Hits and Misses count
// experts asked for; UploadBytes the host-to-device bytes of expert files
// (cached or not). Budget is the device memory the cache may fill (decided
// at the first expert bound; 0 before, or without a cache).
type ExpertCacheStats struct {
	Hits, Misses, Evictions, UploadBytes int64
	Budget                               int64
	// Host says the cache is in host RAM (the CPU's packed experts): it
	// stands in for the expert store's RAM cache, not for a device tier.
	Host bool
}

// Sub returns the counts of s since earlier (Budget: s's).
func (s ExpertCacheStats) Sub(earlier ExpertCacheStats) ExpertCacheStats {
	return ExpertCacheStats{Hits: s.Hits - earlier.Hits, Misses: s.Misses - earlier.Misses,
		Evictions: s.Evictions - earlier.Evictions, UploadBytes: s.UploadBytes - earlier.UploadBytes, Budget: s.Budget, Host: s.Host}
}

// UploadMeter is an optional interface of a Device with its own memory: it
// measures the bandwidth of copies from pinned host memory (ExpertBuffer's
// kind) into the device — the rate at which experts that miss an
// ExpertCache arrive. fm-infer bench uses it as the ceiling of expert
// uploads and in its projection. It may be called from any goroutine, not
// concurrently with a step's work.
type UploadMeter interface {
	MeasureUpload(bytes int) (bytesPerSecond float64, err error)
}

// HitRate is Hits / (Hits + Misses), 0 without lookups.
func (s ExpertCacheStats) HitRate() float64 {
	if n := s.Hits + s.Misses; n > 0 {
		return float64(s.Hits) / float64(n)
	}
	return 0
}
