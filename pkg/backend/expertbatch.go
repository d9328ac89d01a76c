package backend

// ExpertBatcher is an optional Device interface: several routed experts' FFNs
// as one operation, so that a device can spread whole experts over its
// workers instead of splitting each of an expert's three small products
// (a CPU decode step otherwise pays a hand-off per product, 3·K per layer).
//
// ExpertFFNs(out, x, es, rows, weights) must leave out exactly as the calls
// ExpertFFN(out, x, es[i], rows[i], weights[i]) for i = 0, 1, … in order
// would: same values, bit for bit, so the sum's order does not depend on how
// the experts were grouped. The model groups the experts whose files are in
// (all of a decode step's when the files are mapped) and calls it instead of
// ExpertFFN when the Device implements it. Concurrency: as ExpertFFN (the
// model never calls it concurrently on the same out).
type ExpertBatcher interface {
	ExpertFFNs(out, x Tensor, es []Expert, rows [][]int, weights [][]float32)
}
