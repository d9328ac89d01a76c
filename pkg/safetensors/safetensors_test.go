package safetensors

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func image(t *testing.T, tensors []WriteTensor) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := Write(&b, tensors, map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestRoundTrip(t *testing.T) {
	img := image(t, []WriteTensor{
		{Name: "a", DType: F32, Shape: []int64{2}, Data: []byte{1, 2, 3, 4, 5, 6, 7, 8}},
		{Name: "b", DType: BF16, Shape: []int64{1, 2}, Data: []byte{9, 10, 11, 12}},
		{Name: "s", DType: I64, Shape: nil, Data: make([]byte, 8)},
	})
	f, err := Parse(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	if f.Metadata["format"] != "pt" || len(f.Tensors) != 3 {
		t.Fatalf("metadata %v, %d tensors", f.Metadata, len(f.Tensors))
	}
	got, err := f.Tensor("b").ReadAll()
	if err != nil || !bytes.Equal(got, []byte{9, 10, 11, 12}) {
		t.Fatalf("b = %v, %v", got, err)
	}
	if f.Tensor("s").NumElements() != 1 {
		t.Fatal("scalar has one element")
	}
}

// F8 tensors must parse (they are only rejected at conversion); an unknown dtype
// marks that tensor only.
func TestF8AndUnknownDType(t *testing.T) {
	hdr := `{"w":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]},"x":{"dtype":"F4","shape":[2],"data_offsets":[2,3]},"y":{"dtype":"U8","shape":[1],"data_offsets":[3,4]}}`
	img := make([]byte, 8)
	binary.LittleEndian.PutUint64(img, uint64(len(hdr)))
	img = append(img, hdr...)
	img = append(img, 1, 2, 3, 4)
	f, err := Parse(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	if f.Tensor("w").Err != nil || f.Tensor("w").DType != F8E4M3 {
		t.Fatalf("F8 tensor: %+v", f.Tensor("w"))
	}
	if f.Tensor("x").Err == nil {
		t.Fatal("unknown dtype must set Tensor.Err")
	}
	if b, _ := f.Tensor("y").ReadAll(); len(b) != 1 || b[0] != 4 {
		t.Fatalf("y = %v", b)
	}
}

func TestBadInput(t *testing.T) {
	good := image(t, []WriteTensor{{Name: "w", DType: F32, Shape: []int64{4}, Data: make([]byte, 16)}})
	hdrLen := binary.LittleEndian.Uint64(good)
	cases := map[string]struct {
		img  []byte
		want string
	}{
		"short":           {good[:4], "too short"},
		"header past end": {append(binary.LittleEndian.AppendUint64(nil, 1<<20), good[8:]...), "past the end"},
		"truncated data":  {good[:len(good)-4], "outside"},
		"malformed json":  {append(binary.LittleEndian.AppendUint64(nil, 3), []byte("{x}")...), "malformed header JSON"},
		"size mismatch": {func() []byte {
			h := `{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}`
			b := binary.LittleEndian.AppendUint64(nil, uint64(len(h)))
			return append(append(b, h...), make([]byte, 16)...)
		}(), "needs 12 bytes"},
		// 2^62 · 4 elements wrap int64 to 0, which would match empty data offsets.
		"shape overflow": {func() []byte {
			h := `{"w":{"dtype":"U8","shape":[4611686018427387904,4],"data_offsets":[0,0]}}`
			b := binary.LittleEndian.AppendUint64(nil, uint64(len(h)))
			return append(append(b, h...), make([]byte, 16)...)
		}(), "needs more than the 16-byte data section"},
	}
	_ = hdrLen
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Parse(bytes.NewReader(c.img), int64(len(c.img)))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want %q", err, c.want)
			}
		})
	}
}

func TestOpenDirIndex(t *testing.T) {
	dir := t.TempDir()
	a := image(t, []WriteTensor{{Name: "x", DType: U8, Shape: []int64{1}, Data: []byte{7}}})
	os.WriteFile(filepath.Join(dir, "model-00001-of-00002.safetensors"), a, 0o644)
	os.WriteFile(filepath.Join(dir, IndexName), []byte(`{"weight_map":{"x":"model-00001-of-00002.safetensors","y":"model-00002-of-00002.safetensors"}}`), 0o644)
	if _, err := OpenDir(dir); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("missing shard: err = %v", err)
	}
	b := image(t, []WriteTensor{{Name: "z", DType: U8, Shape: []int64{1}, Data: []byte{8}}})
	os.WriteFile(filepath.Join(dir, "model-00002-of-00002.safetensors"), b, 0o644)
	if _, err := OpenDir(dir); err == nil || !strings.Contains(err.Error(), `"y"`) {
		t.Fatalf("tensor missing from shard: err = %v", err)
	}
	os.WriteFile(filepath.Join(dir, IndexName), []byte(`{"weight_map":{"x":"model-00001-of-00002.safetensors","z":"model-00002-of-00002.safetensors"}}`), 0o644)
	c, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got, _ := c.Tensor("z").ReadAll(); got[0] != 8 || len(c.Names()) != 2 {
		t.Fatalf("z = %v names %v", got, c.Names())
	}
}

func TestGoldenCheckpoint(t *testing.T) {
	c, err := OpenDir("../../testdata/golden/qwen35moe-tiny/hf")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tt := c.Tensor("model.language_model.layers.0.linear_attn.in_proj_qkv.weight")
	if tt == nil || tt.DType != BF16 || tt.Shape[0] != 320 || tt.Shape[1] != 128 {
		t.Fatalf("in_proj_qkv: %+v", tt)
	}
}

func FuzzParse(f *testing.F) {
	var b bytes.Buffer
	Write(&b, []WriteTensor{{Name: "w", DType: F32, Shape: []int64{2}, Data: make([]byte, 8)}}, nil)
	f.Add(b.Bytes())
	f.Add([]byte{2, 0, 0, 0, 0, 0, 0, 0, '{', '}'})
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return
		}
		for _, tt := range file.Tensors {
			if tt.Err != nil {
				continue
			}
			if tt.Offset < 8 || tt.Offset+tt.Size > int64(len(data)) {
				t.Fatalf("tensor %q [%d,+%d) outside %d bytes", tt.Name, tt.Offset, tt.Size, len(data))
			}
		}
	})
}
