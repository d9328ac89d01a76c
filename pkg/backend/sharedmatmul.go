package backend

// SharedMatMuler is an optional interface of a Device: MatMuls computes
// ys[i] = ws[i]·x for weights that read the same x (an attention layer's q,
// k and v; a delta-net layer's input projections), with the values MatMul
// would give, bit for bit. A device implements it when doing them together
// is faster — the CPU quantizes x once and streams the row-interleaved
// weights as one product, where three short products each pay a start-up of
// their own. The model calls it when the Device implements it, else MatMul
// per weight. Concurrency: as MatMul.
type SharedMatMuler interface {
	MatMuls(ys []Tensor, ws []Matrix, x Tensor)
}
