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
// The budget is Options.ExpertCacheBytes.
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

// ExpertCacheStats counts an ExpertCache's traffic. Hits and Misses count
// experts asked for; UploadBytes the host-to-device bytes of expert files
// (cached or not). Budget is the device memory the cache may fill (decided
// at the first expert bound; 0 before, or without a cache).
type ExpertCacheStats struct {
	Hits, Misses, Evictions, UploadBytes int64
	Budget                               int64
}

// Sub returns the counts of s since earlier (Budget: s's).
func (s ExpertCacheStats) Sub(earlier ExpertCacheStats) ExpertCacheStats {
	return ExpertCacheStats{Hits: s.Hits - earlier.Hits, Misses: s.Misses - earlier.Misses,
		Evictions: s.Evictions - earlier.Evictions, UploadBytes: s.UploadBytes - earlier.UploadBytes, Budget: s.Budget}
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
