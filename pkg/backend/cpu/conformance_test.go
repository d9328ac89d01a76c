package cpu

import (
	"testing"

	"github.com/fm-moe/fm/pkg/backend"
	"github.com/fm-moe/fm/pkg/backend/backendtest"
)

// TestConformance runs the backend conformance suite on the CPU backend, as
// registered, with one thread (every loop inline), and with the pure-Go
// matrix kernels instead of the SIMD ones.
func TestConformance(t *testing.T) {
	for _, tc := range []struct {
		name string
		open func() (backend.Device, error)
	}{
		{"registered", func() (backend.Device, error) { return backend.Open(Name, backend.Options{}) }},
		{"one thread", func() (backend.Device, error) { return NewDevice(1), nil }},
		{"generic matmul", func() (backend.Device, error) { return &Device{pool: newPool(0, false)}, nil }},
	} {
		t.Run(tc.name, func(t *testing.T) { backendtest.Run(t, tc.open) })
	}
}
