//go:build cuda

package engine

// With -tags cuda the engine's golden test also runs through the CUDA
// backend (skipped where no GPU opens).
import _ "github.com/fm-moe/fm/pkg/backend/cuda"
