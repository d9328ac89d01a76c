//go:build cuda

package main

// The GPU build (go build -tags cuda) registers the CUDA backend; the default
// build stays static and pure Go (pkg/internal/deptest).
import _ "github.com/fm-moe/fm/pkg/backend/cuda"
