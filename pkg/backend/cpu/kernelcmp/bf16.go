package kernelcmp

import "math"

// bf16 widens a bfloat16 to float32 (its upper 16 bits).
func bf16(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }
