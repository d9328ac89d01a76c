package backend

// Tensor is a row-major float32 matrix [Rows × Cols] in a Device's memory; a
// row is one token's activations (or one weight vector, for parameters).
type Tensor interface {
	Rows() int
	Cols() int
	// Slice returns the view of rows [r0, r1), sharing memory with the tensor.
	// 0 ≤ r0 < r1 ≤ Rows.
	Slice(r0, r1 int) Tensor
	// Release frees a tensor made by NewTensor (views: nothing).
	Release()
}

// Matrix is a weight matrix bound to a Device (BindDense).
type Matrix interface {
	Desc() MatrixDesc
	// Release frees the device's copy, if it made one.
	Release()
}

// Expert is one routed expert bound from its file's bytes (BindExpert).
type Expert interface {
	// Release ends the binding: once it returns, the device no longer reads
	// the bytes given to BindExpert, and the caller may reuse them. The Expert
	// must not be used afterwards.
	Release()
}

// State is one sequence's per-layer memory on a Device (NewState): the KV
// cache of each attention layer, the conv and recurrent states of each
// GatedDeltaNet layer. See the package doc for its concurrency rules.
type State interface {
	// Clone returns an independent copy holding the same sequence (prefix
	// reuse: keep a prompt's state and continue it several times).
	Clone() (State, error)
	// Reset empties every layer (KV caches to length 0, conv and recurrent
	// states to zero), keeping allocations where the backend can.
	Reset()
	// Bytes is the device memory the state holds now.
	Bytes() int64
	// Release frees the state's memory.
	Release()
}

// LayerSpec says what state one layer keeps: an attention layer a KV cache of
// Attention.KVHeads·Attention.HeadDim floats per position (keys after QK-norm
// and RoPE, values as projected), a GatedDeltaNet layer a conv state of
// (ConvKernel−1)·(2·KeyHeads·KeyDim + ValueHeads·ValueDim) floats and a
// recurrent state of ValueHeads·KeyDim·ValueDim floats. Both nil: no state.
type LayerSpec struct {
	Attention *AttentionParams
	DeltaNet  *DeltaNetParams
}

// AttentionParams are one full-attention layer's fixed parameters.
type AttentionParams struct {
	Heads, KVHeads, HeadDim int // Heads is a multiple of KVHeads
	// RotaryDim is the number of leading dimensions of each head that RoPE
	// rotates (even, ≤ HeadDim; 0: none), with base RopeTheta.
	RotaryDim int
	RopeTheta float64
	// Gated: each head's q_proj output is followed by as many gate values, and
	// the attention output is multiplied by sigmoid(gate) (qwen3_5 / next).
	Gated bool
	// QNorm and KNorm are the per-head RMSNorm weights [1 × HeadDim].
	QNorm, KNorm Tensor
	Eps          float64 // RMSNorm epsilon
}

// DeltaNetParams are one GatedDeltaNet layer's fixed parameters.
type DeltaNetParams struct {
	KeyHeads, ValueHeads int // ValueHeads is a multiple of KeyHeads
	KeyDim, ValueDim     int // per head
	ConvKernel           int // causal conv taps, ≥ 1
	// Conv holds the depthwise conv taps [Channels × ConvKernel], tap
	// ConvKernel−1 applying to the current token (conv1d.weight [C, 1, K]).
	Conv Tensor
	// NegA is −exp(A_log) per value head [1 × ValueHeads], computed in float32
	// by the model; DtBias is dt_bias [1 × ValueHeads].
	NegA, DtBias Tensor
	// Norm is the gated RMSNorm weight [1 × ValueDim], shared by the heads.
	Norm Tensor
	Eps  float64 // RMSNorm epsilon
}

// Channels is the width of the conv: q, k and v together.
func (p *DeltaNetParams) Channels() int {
	return 2*p.KeyHeads*p.KeyDim + p.ValueHeads*p.ValueDim
}

// Device is one backend instance: its memory and its operations. See the
// package doc for asynchrony, errors, concurrency and lifetimes.
type Device interface {
	// Name is the registry name ("cpu", "cuda") and, after a colon, what the
	// backend wants a user to see (e.g. "cuda:0 NVIDIA H200").
	Name() string
	// Close releases the device; nothing made by it may be used afterwards.
	Close() error

	// NewTensor allocates a zeroed [rows × cols] tensor.
	NewTensor(rows, cols int) (Tensor, error)
	// Upload copies len(src) = Rows·Cols floats into dst.
	Upload(dst Tensor, src []float32)
	// Download waits for the operations issued before it and copies src
	// (Rows·Cols floats, len(dst) of them) to the host. It returns any
	// deferred device error.
	Download(dst []float32, src Tensor) error
	// Sync waits for the operations issued before it and returns any deferred
	// device error.
	Sync() error
	// NonFinite waits like Download and returns the first row of x that holds
	// a NaN or an infinity, or −1 when every value is finite.
	NonFinite(x Tensor) (row int, err error)

	// BindDense binds a weight matrix whose bytes are in the mapped model file:
	// data holds desc.DataBytes() bytes, scales and biases desc.ScaleBytes()
	// each (nil unless Affine). It validates sizes and formats.
	BindDense(desc MatrixDesc, data, scales, biases []byte) (Matrix, error)
	// ExpertBuffer allocates size bytes of host memory, aligned to 4096 bytes,
	// that expert files are read into before BindExpert (pinned memory for a
	// GPU). FreeExpertBuffer gives it back; buffers still allocated when the
	// Device closes are freed by Close.
	ExpertBuffer(size int) ([]byte, error)
	FreeExpertBuffer(buf []byte)
	// BindExpert binds one expert from the file bytes buf (len ≥
	// layout.FileSize), normally memory from ExpertBuffer; any other []byte
	// must work too, possibly slower (an mmapped file, a test checkpoint in
	// memory). The parts may start at any byte offset: fm's expert files
	// align them to 4096, in-memory sources need not. buf must stay unchanged
	// until the Expert's Release returns.
	BindExpert(layout *ExpertLayout, buf []byte) (Expert, error)

	// NewState allocates an empty state (every KV cache of length 0, conv and
	// recurrent states zero) for layers with the given specs, one per layer
	// index used by Attention and DeltaNet.
	NewState(layers []LayerSpec) (State, error)

	// Embed sets row t of dst [T × Cols] to row ids[t] of table (dequantized),
	// T = len(ids), 0 ≤ ids[t] < table.Rows.
	Embed(dst Tensor, table Matrix, ids []int)

	// MatMul sets y [T × w.Rows] to x [T × w.Cols] times wᵀ: y[t, r] =
	// Σ_c w[r, c]·x[t, c], dequantizing w on the fly. y must not alias x.
	MatMul(y Tensor, w Matrix, x Tensor)

	// RMSNorm sets each row of dst to x_t / sqrt(mean(x_t²) + eps) · w, w
	// [1 × Cols]. dst may be x. (Norms with a +1 offset — qwen3_next,
	// qwen3_5 — are stored with the 1 already added, in float32, so one form
	// serves every architecture.)
	RMSNorm(dst, x, w Tensor, eps float64)

	// Clear sets every element of x to zero.
	Clear(x Tensor)

	// Add sets dst += x elementwise (the residual connection).
	Add(dst, x Tensor)

	// AddSigmoidScaled sets dst[t] += sigmoid(g[t, 0])·src[t] for each row t;
	// g is [T × 1] (the shared expert's gate).
	AddSigmoidScaled(dst, src, g Tensor)

	// MLP sets y [T × down.Rows] to the SwiGLU feed-forward of x [T × H]:
	// y = down·(silu(gate·x) ⊙ (up·x)), silu(a) = a·sigmoid(a); gate and up
	// are [I × H], down [H × I]. y must not alias x.
	MLP(y, x Tensor, gate, up, down Matrix)

	// ExpertFFN adds one routed expert's weighted output to the tokens routed
	// to it: for i in order, out[rows[i]] += weights[i]·y_i with y_i the SwiGLU
	// feed-forward of x[rows[i]] through the expert's gate, up and down
	// matrices (as MLP). rows are distinct, increasing row indices of x and
	// out (both [T × H]); len(weights) = len(rows) ≥ 1. The model calls it for
	// every expert of a layer, in increasing expert id, after clearing out
	// (MLP/AddSigmoidScaled of the shared expert first), so the sum has a
	// fixed order whatever the I/O timing. out must not alias x.
	ExpertFFN(out, x Tensor, e Expert, rows []int, weights []float32)

	// Attention is the core of a full-attention layer for T tokens at
	// positions pos…pos+T−1 (pos must equal the layer's KV-cache length):
	//
	//   q [T × Heads·HeadDim·(2 if Gated else 1)]: q_proj output; with Gated,
	//     head h occupies columns [2hD, 2hD+D) for q and [2hD+D, 2hD+2D) for
	//     its gate, else [hD, hD+D).
	//   k, v [T × KVHeads·HeadDim]: k_proj and v_proj outputs.
	//   out [T × Heads·HeadDim]: written (o_proj is the caller's MatMul).
	//
	// For each token t (position p = pos+t), every q head and every k head is
	// RMS-normed with QNorm / KNorm (eps), then its first RotaryDim dims are
	// rotated NeoX style: with R = RotaryDim, for i < R/2, inv_i = 1 /
	// float32(θ^(float32(2i)/float32(R))), a_i = float32(float32(p)·inv_i),
	// (x_i, x_{i+R/2}) ← (x_i cos a_i − x_{i+R/2} sin a_i, x_{i+R/2} cos a_i +
	// x_i sin a_i). The normed, rotated keys and the values v are appended to
	// the cache of layer. Head h attends with KV head g = h/(Heads/KVHeads)
	// over cache positions 0…p: o_h = Σ_s softmax_s(q_h·k_s/√HeadDim)·v_s;
	// with Gated, o_h ⊙= sigmoid(gate_h). q, k and v may be overwritten
	// (their contents afterwards are unspecified).
	Attention(out, q, k, v Tensor, st State, layer, pos int, p *AttentionParams)

	// DeltaNet is the core of a GatedDeltaNet layer for T tokens, continuing
	// the layer's conv and recurrent states:
	//
	//   qkv [T × C], C = p.Channels(): in_proj_qkv output, columns q (KeyHeads
	//     × KeyDim) | k (KeyHeads × KeyDim) | v (ValueHeads × ValueDim).
	//   z [T × ValueHeads·ValueDim]: in_proj_z; b, a [T × ValueHeads]:
	//     in_proj_b, in_proj_a.
	//   out [T × ValueHeads·ValueDim]: written (out_proj is the caller's).
	//
	// Per token t, with K = ConvKernel and the conv state holding the previous
	// K−1 rows of qkv (oldest first, zero at the start):
	//  1. u[c] = silu(Σ_{j<K−1} Conv[c, j]·state[j, c] + Conv[c, K−1]·qkv[t, c]);
	//     the state then drops its oldest row and appends qkv[t].
	//  2. per key head i: q̂_i = q_i / sqrt(Σq_i² + 1e−6) / sqrt(KeyDim) and
	//     k̂_i = k_i / sqrt(Σk_i² + 1e−6) (from u).
	//  3. per value head j, with key head i = j / (ValueHeads/KeyHeads):
	//     β = sigmoid(b[t, j]), g = NegA[j]·softplus(a[t, j] + DtBias[j])
	//     (softplus(x) = x above 20), α = exp(g); on the recurrent state S_j
	//     [KeyDim × ValueDim]: S_j ← α·S_j; δ = β·(v_j − S_jᵀk̂_i);
	//     S_j ← S_j + k̂_i δᵀ; o = S_jᵀq̂_i.
	//  4. out[t, head j] = o / sqrt(mean(o²) + eps) · Norm ⊙ silu(z[t, head j]).
	//
	// The backend may run step 3 token by token or in the chunked closed form
	// (equal in exact arithmetic). qkv, z, b and a may be overwritten.
	DeltaNet(out, qkv, z, b, a Tensor, st State, layer int, p *DeltaNetParams)
}
