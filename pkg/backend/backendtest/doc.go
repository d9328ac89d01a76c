// Package backendtest is the conformance suite every backend.Device must
// pass (the idea of Pebble's vfstest): Run checks each operation of the
// contract against a float64 reference twin in this package, on random
// inputs, with shapes that include odd sizes and every stored weight format
// (F32, BF16, F16, and 2- to 8-bit affine groups with each scale format,
// quantized with pkg/quant), and checks the State's cache, Clone and Reset
// semantics and concurrent use.
//
// A backend's own tests call it:
//
//	func TestConformance(t *testing.T) {
//		backendtest.Run(t, func() (backend.Device, error) { return mybackend.Open(...) })
//	}
//
// Tolerances are relative errors sized for float32 arithmetic in any
// accumulation order; each subtest logs the error it measured, so a backend
// that passes near the limit is visible.
package backendtest
