//go:build cuda && linux

package cuda

import (
	"testing"

	"github.com/fm-moe/fm/pkg/backend"
	"github.com/fm-moe/fm/pkg/backend/backendtest"
)

// TestConformance runs the backend contract's suite on the GPU (skipped
// where no CUDA device opens).
func TestConformance(t *testing.T) {
	if _, err := Open(); err != nil {
		t.Skipf("no CUDA device: %v", err)
	}
	backendtest.Run(t, func() (backend.Device, error) { return backend.Open("cuda", backend.Options{}) })
}
