package synth

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/fm-moe/fm/pkg/internal/half"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/fm-moe/fm/pkg/quant"
	"github.com/fm-moe/fm/pkg/safetensors"
)

// EOS is the end-of-sequence id written to the configs (the tiny tokenizer's
// <|im_end|>, as in the goldens).
const EOS = 4002

// WriteHF writes the spec as a HuggingFace checkpoint into dir (created if
// needed): config.json, generation_config.json, the tokenizer files and bf16
// safetensors (sharded with model.safetensors.index.json when Spec.Shards > 1).
func WriteHF(dir string, s Spec) error {
	if err := s.Validate(); err != nil {
		return err
	}
	text := "model."
	if s.ModelType == Qwen35MoE {
		text = "model.language_model."
	}
	var out []safetensors.WriteTensor
	var fused map[string][]float32 // per sparse layer prefix: gate_up, down being assembled
	for _, t := range s.tensors() {
		name := text + t.name
		switch {
		case t.name == "lm_head.weight" || strings.HasPrefix(t.name, "mtp."):
			name = t.name
		case strings.HasPrefix(t.name, "visual."):
			name = "model." + t.name
		}
		if s.FusedExperts {
			if layer, e, proj, ok := expertName(t.name); ok {
				if fused == nil {
					fused = map[string][]float32{}
				}
				I, H := s.MoEInter, s.Hidden
				p := fmt.Sprintf("%slayers.%d.mlp.experts.", text, layer)
				gu, down := p+"gate_up_proj", p+"down_proj"
				if fused[gu] == nil {
					fused[gu] = make([]float32, s.Experts*2*I*H)
					fused[down] = make([]float32, s.Experts*H*I)
				}
				switch proj {
				case "gate_proj":
					copy(fused[gu][e*2*I*H:], t.data)
				case "up_proj":
					copy(fused[gu][e*2*I*H+I*H:], t.data)
				case "down_proj":
					copy(fused[down][e*H*I:], t.data)
				}
				if e == s.Experts-1 && proj == "down_proj" {
					E := int64(s.Experts)
					out = append(out,
						s.floatTensor(gu, []int64{E, int64(2 * I), int64(H)}, fused[gu]),
						s.floatTensor(down, []int64{E, int64(H), int64(I)}, fused[down]))
					delete(fused, gu)
					delete(fused, down)
				}
				continue
			}
		}
		if s.F32Params && t.kind.small() {
			out = append(out, f32Tensor(name, t.shape, t.data))
			continue
		}
		out = append(out, s.floatTensor(name, t.shape, t.data))
	}
	cfg := s.config()
	return writeCheckpoint(dir, &s, cfg, out, "pt")
}

// MLXGroupSize is the group size WriteMLX quantizes with.
const MLXGroupSize = 64

// WriteMLX writes the spec the way mlx_lm.convert writes a 4-bit (or MLXBits)
// mlx-community checkpoint (reference-math.md §2.5, §4.5): experts stacked as
// mlp.switch_mlp.{gate,up,down}_proj, every linear or embedding whose input
// width is a multiple of 64 quantized (affine, group 64, bf16 scales and
// biases; mlp.gate and mlp.shared_expert_gate at 8 bits, recorded as per-module
// overrides in config.json "quantization"), zero-centred norms stored as 1+w,
// conv1d as [C, K, 1], A_log as F32, mtp.* dropped, language_model. prefixes
// for qwen3_5_moe. The weights are those WriteHF writes for the same spec,
// before quantization.
func WriteMLX(dir string, s Spec) error {
	if err := s.Validate(); err != nil {
		return err
	}
	if s.ModelType == Qwen35MoEText {
		return fmt.Errorf("synth: MLX output for %s is not defined (mlx-lm converts the %s checkpoints)", Qwen35MoEText, Qwen35MoE)
	}
	text, head := "model.", "lm_head."
	if s.ModelType == Qwen35MoE {
		text, head = "language_model.model.", "language_model.lm_head."
	}
	overrides := map[string]any{}
	var out []safetensors.WriteTensor
	stacks := map[string][]float32{}
	quantize := func(module string, shape []int64, data []float32, bits int) error {
		in := shape[len(shape)-1]
		if in%MLXGroupSize != 0 {
			if s.MLXLegacy {
				overrides[module] = false
			}
			out = append(out, bf16Tensor(module+".weight", shape, data))
			return nil
		}
		rows := len(data) / int(in)
		p, err := quant.Quantize(data, rows, int(in), bits, MLXGroupSize)
		if err != nil {
			return fmt.Errorf("synth: %s: %w", module, err)
		}
		lead := shape[:len(shape)-1]
		words := make([]byte, 4*len(p.Codes))
		for i, w := range p.Codes {
			binary.LittleEndian.PutUint32(words[4*i:], w)
		}
		out = append(out,
			safetensors.WriteTensor{Name: module + ".weight", DType: safetensors.U32,
				Shape: append(append([]int64{}, lead...), in*int64(bits)/32), Data: words},
			bf16Tensor(module+".scales", append(append([]int64{}, lead...), in/MLXGroupSize), p.Scales),
			bf16Tensor(module+".biases", append(append([]int64{}, lead...), in/MLXGroupSize), p.Biases))
		switch {
		case bits != s.mlxBits():
			overrides[module] = map[string]any{"group_size": MLXGroupSize, "bits": bits}
		case s.MLXLegacy:
			overrides[module] = true
		}
		return nil
	}
	for _, t := range s.tensors() {
		if t.kind == kindOther && !strings.HasPrefix(t.name, "visual.") {
			continue // mtp.* is dropped by mlx-lm
		}
		name := text + t.name
		switch {
		case t.name == "lm_head.weight":
			name = head + "weight"
		case strings.HasPrefix(t.name, "visual."):
			name = "vision_tower." + strings.TrimPrefix(t.name, "visual.")
		}
		module := strings.TrimSuffix(name, ".weight")
		switch {
		case t.kind == kindOther:
			out = append(out, bf16Tensor(name, t.shape, t.data))
		case t.kind == kindCentredNorm:
			shifted := make([]float32, len(t.data))
			for i, v := range t.data {
				shifted[i] = 1 + v
			}
			out = append(out, bf16Tensor(name, t.shape, shifted))
		case t.kind == kindPlainNorm || t.kind == kindDtBias:
			out = append(out, bf16Tensor(name, t.shape, t.data))
		case t.kind == kindALog && s.family() == Qwen35MoE:
			// mlx-lm's qwen3_5 cast_predicate keeps A_log out of the bf16
			// cast (the goldens hold it as F32); qwen3_next casts it.
			out = append(out, f32Tensor(name, t.shape, t.data))
		case t.kind == kindALog:
			out = append(out, bf16Tensor(name, t.shape, t.data))
		case t.kind == kindConv:
			out = append(out, bf16Tensor(name, []int64{t.shape[0], t.shape[2], 1}, t.data))
		default:
			if layer, e, proj, ok := expertName(t.name); ok {
				m := fmt.Sprintf("%slayers.%d.mlp.switch_mlp.%s", text, layer, proj)
				stacks[m] = append(stacks[m], t.data...)
				if e == s.Experts-1 {
					if err := quantize(m, append([]int64{int64(s.Experts)}, t.shape...), stacks[m], s.mlxBits()); err != nil {
						return err
					}
					delete(stacks, m)
				}
				continue
			}
			bits := s.mlxBits()
			if !s.MLXLegacy && (strings.HasSuffix(module, ".mlp.gate") || strings.HasSuffix(module, ".mlp.shared_expert_gate")) {
				bits = 8
			}
			if err := quantize(module, t.shape, t.data, bits); err != nil {
				return err
			}
		}
	}
	cfg := s.config()
	q := map[string]any{"group_size": MLXGroupSize, "bits": s.mlxBits(), "mode": "affine"}
	if s.MLXLegacy {
		delete(q, "mode")
	}
	for k, v := range overrides {
		q[k] = v
	}
	cfg["quantization"] = q
	cfg["quantization_config"] = q
	return writeCheckpoint(dir, &s, cfg, out, "mlx")
}

// expertName parses "layers.L.mlp.experts.E.P.weight".
func expertName(name string) (layer, e int, proj string, ok bool) {
	var rest string
	if n, _ := fmt.Sscanf(name, "layers.%d.mlp.experts.%d.%s", &layer, &e, &rest); n != 3 {
		return 0, 0, "", false
	}
	proj, found := strings.CutSuffix(rest, ".weight")
	return layer, e, proj, found
}

func bf16Tensor(name string, shape []int64, data []float32) safetensors.WriteTensor {
	b := make([]byte, 2*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint16(b[2*i:], half.F32ToBF16(v))
	}
	return safetensors.WriteTensor{Name: name, DType: safetensors.BF16, Shape: shape, Data: b}
}

func f32Tensor(name string, shape []int64, data []float32) safetensors.WriteTensor {
	b := make([]byte, 4*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return safetensors.WriteTensor{Name: name, DType: safetensors.F32, Shape: shape, Data: b}
}

// writeCheckpoint writes config.json, generation_config.json, the tokenizer
// files and the tensors, split into s.Shards files of about equal size.
func writeCheckpoint(dir string, s *Spec, cfg map[string]any, tensors []safetensors.WriteTensor, format string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := writeJSON(filepath.Join(dir, "config.json"), cfg); err != nil {
		return err
	}
	if err := writeJSON(filepath.Join(dir, "generation_config.json"), map[string]any{"eos_token_id": EOS}); err != nil {
		return err
	}
	for _, name := range []string{"tokenizer.json", "tokenizer_config.json", "chat_template.jinja"} {
		b, err := os.ReadFile(filepath.Join(s.TokenizerDir, name))
		if errors.Is(err, fs.ErrNotExist) && name != "tokenizer.json" {
			continue
		}
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return err
		}
	}
	meta := map[string]string{"format": format}
	if s.Shards <= 1 {
		return writeShard(filepath.Join(dir, "model.safetensors"), tensors, meta)
	}
	var total int64
	for _, t := range tensors {
		total += int64(len(t.Data))
	}
	// Tensor i goes to the shard its first byte falls in.
	shards := make([][]safetensors.WriteTensor, s.Shards)
	var offset int64
	for _, t := range tensors {
		k := min(int(offset*int64(s.Shards)/total), s.Shards-1)
		shards[k] = append(shards[k], t)
		offset += int64(len(t.Data))
	}
	weightMap := map[string]string{}
	for k, shard := range shards {
		if len(shard) == 0 {
			return fmt.Errorf("synth: shard %d of %d would be empty", k+1, s.Shards)
		}
		name := fmt.Sprintf("model-%05d-of-%05d.safetensors", k+1, s.Shards)
		for _, t := range shard {
			weightMap[t.Name] = name
		}
		if err := writeShard(filepath.Join(dir, name), shard, meta); err != nil {
			return err
		}
	}
	return writeJSON(filepath.Join(dir, "model.safetensors.index.json"), map[string]any{
		"metadata":   map[string]any{"total_size": total},
		"weight_map": weightMap,
	})
}

func writeShard(path string, tensors []safetensors.WriteTensor, meta map[string]string) error {
	var buf bytes.Buffer
	if err := safetensors.Write(&buf, tensors, meta); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// floatTensor encodes an HF tensor in the spec's dtype (BF16 by default).
func (s *Spec) floatTensor(name string, shape []int64, data []float32) safetensors.WriteTensor {
	dtype := s.DType
	if dtype == "" {
		dtype = "BF16"
	}
	size, err := quant.FloatSize(dtype)
	if err != nil {
		panic(err) // Validate accepted only float dtypes
	}
	b := make([]byte, size*len(data))
	if err := quant.EncodeFloats(b, data, dtype); err != nil {
		panic(err)
	}
	return safetensors.WriteTensor{Name: name, DType: safetensors.DType(dtype), Shape: shape, Data: b}
}
