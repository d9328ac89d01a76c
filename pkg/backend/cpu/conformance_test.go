package cpu

import (
	"testing"

	"github.com/fm-moe/fm/pkg/backend"
	"github.com/fm-moe/fm/pkg/backend/backendtest"
)

// TestConformance runs the backend conformance suite on the CPU backend, as
// registered and with one thread (every loop inline). make test also runs it
// with -tags noasm, on the generic kernels.
func TestConformance(t *testing.T) {
	for _, tc := range []struct {
		name string
		open func() (backend.Device, error)
	}{
		{"registered", func() (backend.Device, error) { return backend.Open(Name, backend.Options{}) }},
		{"one thread", func() (backend.Device, error) { return NewDevice(1), nil }},
	} {
		t.Run(tc.name, func(t *testing.T) { backendtest.Run(t, tc.open) })
	}
}
