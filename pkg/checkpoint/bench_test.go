package checkpoint

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/fm-moe/fm/pkg/safetensors"
)

// writeSynthetic writes a qwen3_moe checkpoint with random bf16 weights:
// hidden 1024, moe_intermediate 512 (3 MiB per expert), one shard per layer,
// plus the golden tiny tokenizer. Its size is about layers·experts·3 MiB.
func writeSynthetic(dir string, layers, experts int) error {
	const H, I, V, heads, kv, D = 1024, 512, 512, 8, 2, 128
	cfg := map[string]any{
		"model_type": "qwen3_moe", "vocab_size": V, "hidden_size": H, "num_hidden_layers": layers,
		"num_attention_heads": heads, "num_key_value_heads": kv, "head_dim": D, "num_experts": experts,
		"num_experts_per_tok": 2, "moe_intermediate_size": I, "rms_norm_eps": 1e-6, "eos_token_id": 1,
		"rope_parameters": map[string]any{"rope_type": "default", "rope_theta": 1e6},
	}
	b, _ := json.Marshal(cfg)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644); err != nil {
		return err
	}
	tok, err := os.ReadFile(testdata + "golden/tokenizer-tiny/tokenizer.json")
	if err != nil {
		return err
	}
	os.WriteFile(filepath.Join(dir, "tokenizer.json"), tok, 0o644)
	rng := rand.New(rand.NewPCG(1, 2))
	random := func(n int) []byte {
		out := make([]byte, 2*n)
		for i := 0; i < n; i++ {
			// bf16 of a small normal value: sign, exponent ~ 2^-7..2^-4, random mantissa.
			v := uint16(rng.Uint32()&0x807f) | uint16(120+rng.IntN(4))<<7
			out[2*i], out[2*i+1] = byte(v), byte(v>>8)
		}
		return out
	}
	bf := func(name string, shape ...int64) safetensors.WriteTensor {
		n := int64(1)
		for _, d := range shape {
			n *= d
		}
		return safetensors.WriteTensor{Name: name, DType: safetensors.BF16, Shape: shape, Data: random(int(n))}
	}
	weightMap := map[string]string{}
	writeShard := func(name string, ts []safetensors.WriteTensor) error {
		var buf bytes.Buffer
		if err := safetensors.Write(&buf, ts, map[string]string{"format": "pt"}); err != nil {
			return err
		}
		for _, t := range ts {
			weightMap[t.Name] = name
		}
		return os.WriteFile(filepath.Join(dir, name), buf.Bytes(), 0o644)
	}
	dense := []safetensors.WriteTensor{bf("model.embed_tokens.weight", V, H), bf("lm_head.weight", V, H), bf("model.norm.weight", H)}
	for l := range layers {
		p := fmt.Sprintf("model.layers.%d.", l)
		dense = append(dense, bf(p+"input_layernorm.weight", H), bf(p+"post_attention_layernorm.weight", H),
			bf(p+"self_attn.q_proj.weight", heads*D, H), bf(p+"self_attn.k_proj.weight", kv*D, H),
			bf(p+"self_attn.v_proj.weight", kv*D, H), bf(p+"self_attn.o_proj.weight", H, heads*D),
			bf(p+"self_attn.q_norm.weight", D), bf(p+"self_attn.k_norm.weight", D), bf(p+"mlp.gate.weight", int64(experts), H))
	}
	if err := writeShard("model-dense.safetensors", dense); err != nil {
		return err
	}
	// Random data is slow to make; experts of one layer share a few blocks.
	pool := [][]byte{random(I * H), random(I * H), random(I * H), random(I * H), random(I * H)}
	for l := range layers {
		var ts []safetensors.WriteTensor
		for e := range experts {
			p := fmt.Sprintf("model.layers.%d.mlp.experts.%d.", l, e)
			ts = append(ts,
				safetensors.WriteTensor{Name: p + "gate_proj.weight", DType: safetensors.BF16, Shape: []int64{I, H}, Data: pool[(e+l)%5]},
				safetensors.WriteTensor{Name: p + "up_proj.weight", DType: safetensors.BF16, Shape: []int64{I, H}, Data: pool[(e+l+1)%5]},
				safetensors.WriteTensor{Name: p + "down_proj.weight", DType: safetensors.BF16, Shape: []int64{H, I}, Data: pool[(e+l+2)%5]})
		}
		if err := writeShard(fmt.Sprintf("model-layer%03d.safetensors", l), ts); err != nil {
			return err
		}
	}
	idx, _ := json.Marshal(map[string]any{"weight_map": weightMap})
	return os.WriteFile(filepath.Join(dir, safetensors.IndexName), idx, 0o644)
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// TestWriteSynthetic writes a synthetic checkpoint to $FM_SYNTH_DIR for
// measuring by hand (FM_SYNTH_LAYERS × FM_SYNTH_EXPERTS × 3 MiB of experts):
//
//	FM_SYNTH_DIR=/tmp/synth FM_SYNTH_LAYERS=4 FM_SYNTH_EXPERTS=176 go test -run WriteSynthetic ./pkg/checkpoint
func TestWriteSynthetic(t *testing.T) {
	dir := os.Getenv("FM_SYNTH_DIR")
	if dir == "" {
		t.Skip("set FM_SYNTH_DIR to write a synthetic checkpoint")
	}
	os.MkdirAll(dir, 0o755)
	if err := writeSynthetic(dir, envInt("FM_SYNTH_LAYERS", 4), envInt("FM_SYNTH_EXPERTS", 176)); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkRepack measures fm-repack's copy path (bf16, --bits 16) on a
// synthetic checkpoint of FM_BENCH_EXPERTS experts × 2 layers × 3 MiB (default
// 16: 96 MiB), page cache warm, against BenchmarkCopyCeiling: the same bytes
// read with one pread each and written to one file, the ceiling of any copy.
// Report repack/ceiling.
func BenchmarkRepack(b *testing.B) {
	src, out, size := benchSetup(b)
	b.SetBytes(size)
	for b.Loop() {
		os.RemoveAll(filepath.Join(out, "packed_experts"))
		if _, err := Repack(context.Background(), src, out, Options{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRepackQuantize4 is the --bits 4 path (CPU-bound quantization).
func BenchmarkRepackQuantize4(b *testing.B) {
	src, out, size := benchSetup(b)
	b.SetBytes(size)
	for b.Loop() {
		os.RemoveAll(filepath.Join(out, "packed_experts"))
		if _, err := Repack(context.Background(), src, out, Options{Bits: 4}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCopyCeiling(b *testing.B) {
	src, out, size := benchSetup(b)
	shards, _ := filepath.Glob(filepath.Join(src, "model-layer*.safetensors"))
	buf := make([]byte, 8<<20)
	b.SetBytes(size)
	for b.Loop() {
		w, err := os.Create(filepath.Join(out, "copy.bin"))
		if err != nil {
			b.Fatal(err)
		}
		for _, s := range shards {
			r, _ := os.Open(s)
			for {
				n, err := r.Read(buf)
				w.Write(buf[:n])
				if err != nil {
					break
				}
			}
			r.Close()
		}
		w.Sync()
		w.Close()
	}
}

func benchSetup(b *testing.B) (src, out string, expertBytes int64) {
	b.Helper()
	experts := envInt("FM_BENCH_EXPERTS", 16)
	src, out = b.TempDir(), b.TempDir()
	if err := writeSynthetic(src, 2, experts); err != nil {
		b.Fatal(err)
	}
	if _, err := Extract(context.Background(), src, out, Options{}); err != nil {
		b.Fatal(err)
	}
	return src, out, int64(2*experts) * 3 << 20
}
