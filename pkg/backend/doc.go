// Package backend is the contract between the model (pkg/model) and the
// hardware that computes it: a Device holds activations, weights and
// per-sequence state in its own memory and runs the coarse operations a forward
// pass of the Qwen MoE architectures is made of. It contains no platform code
// (no cgo, no purego, no assembly): implementations live in their own packages
// (pkg/backend/cpu, a GPU backend behind a build tag) and register themselves
// with Register from an init function; programs select one with Open.
//
// The model is written against this package only, so a new backend implements
// Device, passes the conformance suite of pkg/backend/backendtest (float64
// reference twins of every operation), passes the golden logit tests of
// pkg/model (which run once per registered backend), and touches nothing in
// pkg/model. docs/BACKENDS.md is the how-to.
//
// # Where each step runs
//
// On the host (Go code in pkg/model, pkg/experts, pkg/engine):
//   - tokenization and sampling: the final logits are downloaded (Download);
//   - routing: a sparse layer's router logits (T×E floats) are downloaded and
//     the softmax / top-K / renormalization run on the host. They are tiny,
//     the top-K with its tie rule is branchy, and the chosen expert ids must
//     reach the host anyway, because the host schedules the expert reads;
//   - expert I/O: the expert store reads each routed expert's file into
//     memory the backend allocated (ExpertBuffer: pinned host memory for a GPU,
//     so the upload is a DMA; plain aligned memory for the CPU), then the model
//     binds it (BindExpert);
//   - the non-finite diagnosis: NonFinite reduces on the device and returns
//     one row index. The model checks the residual stream after every block;
//     a Device that also implements NonFiniteMarker gets those checks as
//     Marks, queued like operations and read at the synchronizing calls a
//     step makes anyway (a sparse layer's router logits, the final logits,
//     or one Read at the end of a chunk without logits), so a GPU does not
//     drain its queue two more times per layer. The error is the same: the
//     model reports the first block (in the order they ran) whose check
//     found a NaN or an infinity, and for a MoE block re-runs that layer's
//     experts one by one on the block's kept input to name the culprit.
//
// On the device (every Device method below that takes a Tensor): embedding
// lookup, RMSNorm, every matrix product with fused dequantization, full
// attention (QK-norm, RoPE, KV-cache append, causal GQA softmax attention,
// output gate), the GatedDeltaNet core (causal conv, gates, delta rule, gated
// norm), SwiGLU MLPs, the routed experts' FFNs and their weighted combine, and
// residual adds. Activations never leave the device between those steps.
//
// # Data model
//
// A Tensor is a row-major float32 matrix [Rows × Cols] in device memory; in
// every operation a row is one token, so T (the number of tokens of a step)
// is the Rows of the tensors involved, and all tensors of one call must have
// the same Rows unless the method says otherwise. NewTensor allocates a zeroed
// tensor; Slice gives a view of a row range (sharing memory), which is how the
// model uses workspace tensors sized for the largest chunk on a shorter one,
// and the last row alone for the final logits. Weight vectors (norm weights,
// conv taps, decay parameters) are Tensors too, uploaded once with Upload, of
// shape [1 × n] unless stated otherwise.
//
// A Matrix is a weight matrix [Rows × Cols] (y = W·x, x of Cols elements) in a
// stored format, MatrixDesc: F32, BF16, F16, or MLX affine groups of 2, 3, 4,
// 5, 6 or 8 bits. Dense weights are bound once (BindDense) from the
// memory-mapped model file; a backend may keep referencing those bytes (the CPU
// does, zero-copy) or copy them to device memory (a GPU). Affine element c of
// row r is scale[r, c/G]·q + bias[r, c/G], q being the Bits-wide code at bit
// c·Bits of the row's little-endian least-significant-bit-first bit stream
// (rows start on byte boundaries; scales and biases are [Rows × Cols/G] in
// ScaleFormat). Products dequantize on the fly: a backend must not require the
// expanded float32 matrix in memory.
//
// An Expert is one routed expert's three SwiGLU matrices bound from one
// expert file (ExpertLayout says where each matrix's parts are in the file).
//
// A State is one sequence's memory for every layer: the KV cache of a
// full-attention layer, the conv state and recurrent state of a GatedDeltaNet
// layer. It lives on the device; its layout is the backend's business.
//
// # Operations
//
// The operations are coarse on purpose: one Attention call is the QK-norm,
// RoPE, cache append, attention and gate of a layer; one DeltaNet call is the
// whole recurrent core. A GPU wants few launches per layer, and the CPU wants
// freedom to block loops for its caches. Each method's comment gives its exact
// semantics (shapes, what is overwritten or accumulated, what may alias).
// Numerics: activations are float32; backends may accumulate in higher
// precision and in any order. The conformance suite compares every operation
// with a float64 reference at tolerances set for float32 arithmetic; the golden
// tests then compare whole models with transformers' logits.
//
// Optional interfaces let a backend take bigger steps where it has them, the
// model falling back to the plain methods otherwise: ExpertBatcher (a
// layer's experts in one call), ExpertCache and RAMExpertCache (experts kept
// resident in the device's form), SharedMatMuler (the products that read one
// x in one call), UploadMeter (the host-to-device ceiling for bench), Rester
// (the model is about to wait for an expert read: workers kept polling may
// sleep).
//
// # Errors
//
// Misuse — shapes that do not match, a Tensor of another Device, a position
// that is not the cache length — is a programming error in the caller and
// panics, like an index out of range. Device failures (a kernel launch, an
// out-of-memory in the middle of a step) may surface asynchronously: a backend
// records the first one and returns it from the next synchronizing call
// (Download, NonFinite, Sync); after such an error every later synchronizing
// call returns it too and results are undefined. Allocating and binding
// methods return their errors directly.
//
// # Asynchrony and concurrency
//
// Operations may run asynchronously: they are issued, and a backend may return
// before the device has finished. Download, NonFinite and Sync synchronize
// (and so does Marks.Read when scans were marked after the last of them):
// when they return, every operation issued before the call began (in the
// happens-before sense) has completed. Upload copies its source before it
// returns, so the caller may reuse it at once.
//
// A Device is safe for concurrent use by multiple goroutines. The operations of
// one goroutine take effect in the order it issues them. Operations of
// different goroutines are unordered, so the ordinary Go rule applies to device
// memory: two goroutines must not issue operations that touch the same Tensor
// (or State) while one of them writes it, without synchronizing between them.
// A goroutine that hands a Tensor to another after writing it must call Sync
// first (or otherwise order the two on the device). Matrices, Experts and
// uploaded parameter Tensors are read-only once bound and may be used by any
// number of goroutines and States at once. A CUDA backend meets this contract
// with one stream guarded by a mutex.
//
// A State may be used by one goroutine at a time (the model's one Forward per
// sequence); different States of one Device may be used concurrently. Clone
// reads its State and is ordered like an operation of the calling goroutine.
//
// # Memory and lifetimes
//
// NewTensor, BindDense, BindExpert and NewState allocate device memory.
// Release frees it early; a backend must also reclaim objects that become
// unreachable without Release (runtime.AddCleanup), because the model does not
// own its States' lifetimes (the engine and the HTTP server do). After Release
// the object and its views must not be used. Views (Slice) do not own memory:
// their Release does nothing.
//
// ExpertBuffer returns host memory that the expert store reads files into. The
// bytes handed to BindExpert must stay unchanged until the Expert's Release
// returns: a GPU may still be copying them (Release waits for that copy); the
// CPU computes straight from them. The bytes handed to BindDense must stay
// valid as long as the Matrix is used (the model keeps the file mapped).
package backend
