package layout

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"os"

	"github.com/zeebo/xxh3"
)

// Checksum returns the manifest form of the XXH3-128 hash of b: 32 lower-case
// hex digits of the hash's canonical 16 bytes, big-endian (high 64 bits first),
// as xxh3.Uint128.Bytes() and the reference xxhsum --tag -H2 print them.
func Checksum(b []byte) string { return formatSum(xxh3.Hash128(b)) }

func formatSum(u xxh3.Uint128) string {
	b := u.Bytes()
	return hex.EncodeToString(b[:])
}

// Hasher computes Checksum over a stream.
type Hasher struct{ h *xxh3.Hasher }

// NewHasher returns an empty Hasher.
func NewHasher() *Hasher { return &Hasher{h: xxh3.New()} }

// Write adds p to the hash; it never fails.
func (h *Hasher) Write(p []byte) (int, error) { return h.h.Write(p) }

// Sum returns the checksum of everything written so far.
func (h *Hasher) Sum() string { return formatSum(h.h.Sum128()) }

// hashChunk is the read size when hashing files: large enough for the disk to
// stream, small enough for progress to move smoothly.
const hashChunk = 4 << 20

// ChecksumFile hashes the file at path and returns its checksum and size.
// progress, when set, is called with the byte count of every chunk read.
func ChecksumFile(ctx context.Context, path string, progress func(n int64)) (sum string, size int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := NewHasher()
	buf := make([]byte, hashChunk)
	for {
		if err := ctx.Err(); err != nil {
			return "", size, err
		}
		n, err := io.ReadFull(f, buf)
		h.Write(buf[:n])
		size += int64(n)
		if progress != nil && n > 0 {
			progress(int64(n))
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return h.Sum(), size, nil
		}
		if err != nil {
			return "", size, fmt.Errorf("%s: %w", path, err)
		}
	}
}
