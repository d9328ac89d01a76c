package cpu

import "encoding/binary"

// ReadSum returns the wrapping sum of b's little-endian 64-bit words (a
// trailing partial word is zero-padded). It reads every byte once with the
// widest loads the CPU has and does nothing else, so its speed on a buffer far
// larger than the caches is the memory-read ceiling that the matrix-vector
// kernels, which only read their weights, are measured against (split it
// over the same workers).
func ReadSum(b []byte) uint64 {
	if haveAVX2 {
		return readSumSIMD(b)
	}
	return readSumGo(b)
}

// readSumGo is ReadSum's generic twin.
func readSumGo(b []byte) uint64 {
	var s0, s1, s2, s3 uint64
	for len(b) >= 32 {
		s0 += binary.LittleEndian.Uint64(b)
		s1 += binary.LittleEndian.Uint64(b[8:])
		s2 += binary.LittleEndian.Uint64(b[16:])
		s3 += binary.LittleEndian.Uint64(b[24:])
		b = b[32:]
	}
	for len(b) >= 8 {
		s0 += binary.LittleEndian.Uint64(b)
		b = b[8:]
	}
	if len(b) > 0 {
		var last [8]byte
		copy(last[:], b)
		s0 += binary.LittleEndian.Uint64(last[:])
	}
	return (s0 + s1) + (s2 + s3)
}
