//go:build cuda

package model_test

// With -tags cuda the golden tests also run through the CUDA backend
// (forEachBackend skips it where no GPU opens).
import _ "github.com/fm-moe/fm/pkg/backend/cuda"
