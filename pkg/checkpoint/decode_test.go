package checkpoint

import "github.com/fm-moe/fm/pkg/quant"

func decode(dst []float32, b []byte, dtype string) error { return quant.DecodeFloats(dst, b, dtype) }
