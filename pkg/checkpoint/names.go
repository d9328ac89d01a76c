package checkpoint

import (
	"strconv"
	"strings"
)

// Categories of source tensors that are not converted, as counted in Summary.Skipped.
const (
	SkipVision = "vision"
	SkipMTP    = "mtp"
	SkipRotary = "rotary_inv_freq"
	SkipTied   = "tied_lm_head"
)

// Expert projection names, in expert-file order.
var expertProjs = [3]string{"gate_proj", "up_proj", "down_proj"}

// Expert storage schemes of a checkpoint.
const (
	schemePerExpert = "hf-per-expert" // mlp.experts.E.{gate,up,down}_proj.weight
	schemeFused     = "hf-fused"      // mlp.experts.gate_up_proj [E,2I,H], mlp.experts.down_proj [E,H,I]
	schemeStacked   = "mlx-stacked"   // mlp.switch_mlp.{gate,up,down}_proj.{weight,scales,biases}
)

// parsedName is a source tensor name mapped onto the canonical scheme.
type parsedName struct {
	skip string // non-empty: a skip category

	// module is the canonical module name ("embed_tokens", "layers.3.self_attn.q_proj",
	// "layers.0.linear_attn.A_log"); part is "weight", "scales" or "biases".
	module, part string
	// srcModule is the source name without its part suffix: the key of MLX
	// per-module quantization overrides.
	srcModule string

	// Routed experts (module is empty): layer, scheme, projection (0 gate, 1 up,
	// 2 down; for schemeFused 0 is gate_up) and, for schemePerExpert, the expert.
	expertScheme string
	layer        int
	expert       int
	proj         int
}

// textPrefixes are stripped from text-tower names, longest first.
var textPrefixes = []string{"model.language_model.", "language_model.model.", "language_model.", "model."}

// parseName maps a source tensor name. ok is false for names that fit no
// scheme (the caller reports them).
func parseName(name string) (p parsedName, ok bool) {
	for _, v := range []string{"model.visual.", "visual.", "vision_tower.", "model.vision_tower.", "vision_model.", "model.vision_model."} {
		if strings.HasPrefix(name, v) {
			return parsedName{skip: SkipVision}, true
		}
	}
	for _, m := range []string{"mtp.", "model.mtp.", "language_model.mtp.", "model.language_model.mtp."} {
		if strings.HasPrefix(name, m) {
			return parsedName{skip: SkipMTP}, true
		}
	}
	if strings.HasSuffix(name, "rotary_emb.inv_freq") {
		return parsedName{skip: SkipRotary}, true
	}
	rest := name
	for _, pre := range textPrefixes {
		if strings.HasPrefix(rest, pre) {
			rest = rest[len(pre):]
			break
		}
	}
	p.srcModule, p.part = name, "weight"
	module := rest
	for _, suf := range []string{".weight", ".scales", ".biases"} {
		if strings.HasSuffix(rest, suf) {
			module = rest[:len(rest)-len(suf)]
			p.part = suf[1:]
			p.srcModule = name[:len(name)-len(suf)]
			break
		}
	}
	switch module {
	case "embed_tokens", "norm", "lm_head":
		p.module = module
		return p, true
	}
	if !strings.HasPrefix(module, "layers.") {
		return p, false
	}
	fields := strings.Split(module, ".")
	layer, err := strconv.Atoi(fields[1])
	if err != nil || layer < 0 || len(fields) < 3 {
		return p, false
	}
	p.layer = layer
	// Routed experts.
	if len(fields) >= 4 && fields[2] == "mlp" && (fields[3] == "experts" || fields[3] == "switch_mlp") {
		tail := fields[4:]
		switch {
		case fields[3] == "switch_mlp" && len(tail) == 1:
			p.expertScheme = schemeStacked
			p.proj = projIndex(tail[0])
		case fields[3] == "experts" && len(tail) == 2 && p.part == "weight":
			e, err := strconv.Atoi(tail[0])
			if err != nil || e < 0 {
				return p, false
			}
			p.expertScheme, p.expert, p.proj = schemePerExpert, e, projIndex(tail[1])
		case fields[3] == "experts" && len(tail) == 1 && p.part == "weight":
			p.expertScheme = schemeFused
			switch tail[0] {
			case "gate_up_proj":
				p.proj = 0
			case "down_proj":
				p.proj = 2
			default:
				p.proj = -1
			}
		default:
			return p, false
		}
		return p, p.proj >= 0
	}
	p.module = module
	return p, true
}

func projIndex(s string) int {
	for i, n := range expertProjs {
		if n == s {
			return i
		}
	}
	return -1
}
