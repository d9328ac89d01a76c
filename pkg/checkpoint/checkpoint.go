package checkpoint

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/fm-moe/fm/pkg/layout"
	"github.com/fm-moe/fm/pkg/safetensors"
)

// Source formats (layout.Source.Format).
const (
	FormatHF  = "hf"
	FormatMLX = "mlx"
)

// module is one canonical module's source tensors.
type module struct {
	srcName                string // source name of the weight, for messages
	srcModule              string // MLX override key
	weight, scales, biases *safetensors.Tensor
}

// layerExperts are the routed-expert source tensors of one layer.
type layerExperts struct {
	scheme    string
	perExpert map[int]*[3]*safetensors.Tensor // expert → gate, up, down
	fused     [3]*safetensors.Tensor          // [0] gate_up, [2] down
	stacked   [3]*module                      // gate, up, down
}

// Checkpoint is an opened source checkpoint directory.
type Checkpoint struct {
	Dir    string
	Config layout.Config
	// Format is FormatMLX when the experts are MLX-stacked (switch_mlp) and so
	// every MLX convention applies (pre-shifted norms, quantized modules),
	// FormatHF otherwise.
	Format       string
	ConfigSHA256 string
	// Quant is the MLX quantization of config.json, nil when unquantized.
	Quant *Quantization
	// Skipped counts source tensors that are not converted, by category.
	Skipped map[string]int

	st      *safetensors.Checkpoint
	modules map[string]*module
	experts map[int]*layerExperts
}

// Open reads config.json (and generation_config.json when present), opens the
// safetensors files and maps every tensor name. It fails on a config it cannot
// normalize, on unreadable or inconsistent shards and on tensor names that fit
// no scheme; the tensors the config implies are checked by the planners.
func Open(dir string) (*Checkpoint, error) {
	cfgPath := filepath.Join(dir, "config.json")
	cfgJSON, err := os.ReadFile(cfgPath)
	if errors.Is(err, fs.ErrNotExist) {
		if _, derr := os.Stat(dir); errors.Is(derr, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s: no such checkpoint directory", dir)
		}
		return nil, fmt.Errorf("%s: missing: the source must be a HuggingFace or MLX checkpoint directory with config.json and *.safetensors", cfgPath)
	}
	if err != nil {
		return nil, err
	}
	genJSON, err := os.ReadFile(filepath.Join(dir, "generation_config.json"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	cfg, err := ParseConfig(cfgJSON, genJSON)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cfgPath, err)
	}
	q, err := ParseQuantization(cfgJSON)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cfgPath, err)
	}
	sum := sha256.Sum256(cfgJSON)
	st, err := safetensors.OpenDir(dir)
	if err != nil {
		return nil, err
	}
	c := &Checkpoint{
		Dir: dir, Config: cfg, Quant: q, ConfigSHA256: hex.EncodeToString(sum[:]),
		Skipped: map[string]int{}, st: st, modules: map[string]*module{}, experts: map[int]*layerExperts{},
	}
	if err := c.mapNames(); err != nil {
		st.Close()
		return nil, err
	}
	c.Format = FormatHF
	for _, le := range c.experts {
		if le.scheme == schemeStacked {
			c.Format = FormatMLX
		}
	}
	if q != nil && c.Format != FormatMLX {
		st.Close()
		return nil, fmt.Errorf("%s: has an MLX \"quantization\" but no mlp.switch_mlp expert tensors", cfgPath)
	}
	return c, nil
}

// Close closes the shards.
func (c *Checkpoint) Close() error { return c.st.Close() }

// File returns the shard path holding t, for messages.
func (c *Checkpoint) File(t *safetensors.Tensor) string { return c.st.FileOf(t) }

func (c *Checkpoint) mapNames() error {
	for _, name := range c.st.Names() {
		t := c.st.Tensor(name)
		p, ok := parseName(name)
		if !ok {
			return fmt.Errorf("%s: tensor %q: name fits no known scheme of a %s checkpoint", c.File(t), name, c.Config.SourceModelType)
		}
		if p.skip != "" {
			c.Skipped[p.skip]++
			continue
		}
		if p.expertScheme != "" {
			if err := c.addExpertTensor(p, t); err != nil {
				return fmt.Errorf("%s: tensor %q: %w", c.File(t), name, err)
			}
			continue
		}
		m := c.modules[p.module]
		if m == nil {
			m = &module{srcModule: p.srcModule}
			c.modules[p.module] = m
		}
		if m.srcModule != p.srcModule {
			return fmt.Errorf("%s: tensor %q: module %s also comes from %q", c.File(t), name, p.module, m.srcModule)
		}
		slot := map[string]**safetensors.Tensor{"weight": &m.weight, "scales": &m.scales, "biases": &m.biases}[p.part]
		*slot = t
		if p.part == "weight" {
			m.srcName = name
		}
	}
	for name, m := range c.modules {
		if m.weight == nil {
			return fmt.Errorf("%s: module %q has scales or biases but no weight", c.Dir, m.srcModule)
		}
		_ = name
	}
	return nil
}

func (c *Checkpoint) addExpertTensor(p parsedName, t *safetensors.Tensor) error {
	le := c.experts[p.layer]
	if le == nil {
		le = &layerExperts{scheme: p.expertScheme, perExpert: map[int]*[3]*safetensors.Tensor{}}
		c.experts[p.layer] = le
	}
	if le.scheme != p.expertScheme {
		return fmt.Errorf("layer %d mixes expert schemes %s and %s", p.layer, le.scheme, p.expertScheme)
	}
	switch p.expertScheme {
	case schemePerExpert:
		e := le.perExpert[p.expert]
		if e == nil {
			e = &[3]*safetensors.Tensor{}
			le.perExpert[p.expert] = e
		}
		e[p.proj] = t
	case schemeFused:
		le.fused[p.proj] = t
	case schemeStacked:
		m := le.stacked[p.proj]
		if m == nil {
			m = &module{srcModule: p.srcModule}
			le.stacked[p.proj] = m
		}
		switch p.part {
		case "weight":
			m.weight, m.srcName = t, t.Name
		case "scales":
			m.scales = t
		case "biases":
			m.biases = t
		}
	}
	return nil
}

// sortedLayers returns the layers that have expert tensors, ascending.
func (c *Checkpoint) sortedLayers() []int {
	var ls []int
	for l := range c.experts {
		ls = append(ls, l)
	}
	sort.Ints(ls)
	return ls
}

// where names the file that lists the checkpoint's tensors, for messages
// about a tensor that is not there: the shard index, else the only
// safetensors file, else the directory.
func (c *Checkpoint) where() string {
	idx := filepath.Join(c.Dir, safetensors.IndexName)
	if _, err := os.Stat(idx); err == nil {
		return idx
	}
	if len(c.st.Files) == 1 {
		return c.st.Files[0].Path
	}
	return c.Dir
}

// sourceName spells a canonical module name ("layers.1.self_attn.k_norm") the
// way this checkpoint names its tensors ("model.language_model.layers.1.
// self_attn.k_norm" + suffix), so that a message about a missing tensor gives
// the name the user would look for in the index or another copy of the model.
func (c *Checkpoint) sourceName(canonical, suffix string) string {
	prefix := "model."
	if m := c.modules["embed_tokens"]; m != nil && strings.HasSuffix(m.srcModule, "embed_tokens") {
		prefix = strings.TrimSuffix(m.srcModule, "embed_tokens")
	}
	if canonical == "lm_head" {
		// lm_head sits beside the text model, not inside it.
		prefix = map[string]string{"language_model.model.": "language_model."}[prefix]
	}
	return prefix + canonical + suffix
}
