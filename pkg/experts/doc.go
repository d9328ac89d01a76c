// Package experts is the expert store: it maps (layer, expert) to the bytes of
// one packed expert file (OUT/packed_experts/layer_LL_expert_EEEE.bin, described
// by layout.ExpertSet) and reads them on demand, per token and per layer.
//
// Reads go through a fixed pool of pread workers (Options.IOThreads, sized for an
// NVMe queue rather than for the CPU count, because the workers spend their time
// blocked in the kernel) into reusable 4096-aligned buffers. Two modes:
//
//   - page cache (default, "trust the OS"): buffered preads; the kernel keeps hot
//     experts in RAM and the store keeps nothing beyond the buffers in use;
//   - direct I/O (Options.DirectIO): O_DIRECT on Linux, F_NOCACHE on macOS, so
//     expert bytes do not crowd the page cache, plus an explicit RAM cache of
//     Options.CacheBytes whose budget is never exceeded. Where the filesystem
//     refuses O_DIRECT (EINVAL, e.g. tmpfs) the store falls back to buffered
//     reads and says so once through Warnings (probed at Open).
//
// The cache policy was chosen by measurement (TestPolicyHitRates,
// BenchmarkPolicyHitRate): no real routing trace was available, so a synthetic
// one stands in — per-layer Zipf popularity, temporal reuse and topic drift,
// calibrated to the LRU hit rates flash-moe measured on Qwen3.5-397B — in six
// variants at 8 to 128 cached experts per layer. Against LRU, ARC gained 1.0
// point of hit rate on average (worst case −3.1) and LFUDA 0.5 to 1.5 (worst
// −5.2), so ARC is the default; every online policy stays 10–25 points below
// Belady's optimum, so the budget matters more than the policy.
// BenchmarkPolicyHitRate -args -trace=FILE replays a recorded trace.
//
// Fetch reads a layer's experts at once; a Slot fetches one expert at a time and
// is reused (the model's decode loop keeps one per expert in flight): once the
// store is warm a Slot's Start, Wait and Release allocate nothing, and the
// worker that finishes a read wakes the Slot's owner directly.
//
// Buffers handed out by Fetch and Slots are reference counted: they stay valid, and are
// not reused, until Release, even if the cache evicts the expert meanwhile.
//
// Every file access goes through the FS interface so that tests can inject
// short reads, EIO and latency. Any read error or short read aborts the Fetch
// that needed it, cancels its other reads and returns an error naming the file.
package experts
