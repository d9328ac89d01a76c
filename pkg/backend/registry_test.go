package backend

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// withRegistry runs f against a registry holding only the given backends.
func withRegistry(t *testing.T, backends map[string]OpenFunc, f func()) {
	t.Helper()
	mu.Lock()
	saved := registry
	registry = map[string]OpenFunc{}
	mu.Unlock()
	defer func() {
		mu.Lock()
		registry = saved
		mu.Unlock()
	}()
	for n, o := range backends {
		Register(n, o)
	}
	f()
}

// fake is a Device that only has a name; Open never calls its operations.
type fake struct {
	Device
	name string
}

func (f fake) Name() string { return f.name }

func opens(name string) OpenFunc {
	return func(Options) (Device, error) { return fake{name: name}, nil }
}

func fails(Options) (Device, error) { return nil, errors.New("no device here") }

func TestOpen(t *testing.T) {
	for _, tc := range []struct {
		name      string
		backends  map[string]OpenFunc
		open      string
		wantNames []string
		want      string // the opened device's name, or a substring of the error
		wantErr   bool
	}{
		{"auto prefers an accelerator", map[string]OpenFunc{"cpu": opens("cpu"), "cuda": opens("cuda")}, "auto", []string{"cuda", "cpu"}, "cuda", false},
		{"auto falls back to the cpu", map[string]OpenFunc{"cpu": opens("cpu"), "cuda": fails}, "auto", []string{"cuda", "cpu"}, "cpu", false},
		{"empty name is auto", map[string]OpenFunc{"cpu": opens("cpu")}, "", []string{"cpu"}, "cpu", false},
		{"by name", map[string]OpenFunc{"cpu": opens("cpu"), "cuda": opens("cuda")}, "cpu", []string{"cuda", "cpu"}, "cpu", false},
		{"unknown name lists the registered", map[string]OpenFunc{"cpu": opens("cpu")}, "cuda", []string{"cpu"}, `backend "cuda" is not in this build (registered: cpu, auto)`, true},
		{"open error names the backend", map[string]OpenFunc{"cuda": fails}, "cuda", []string{"cuda"}, "backend cuda: no device here", true},
		{"auto with nothing that opens", map[string]OpenFunc{"cuda": fails}, "auto", []string{"cuda"}, "none of cuda opened", true},
		{"auto with nothing registered", map[string]OpenFunc{}, "auto", []string{}, "no backend is registered", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			withRegistry(t, tc.backends, func() {
				if got := Names(); !slices.Equal(got, tc.wantNames) {
					t.Errorf("Names() = %v, want %v", got, tc.wantNames)
				}
				d, err := Open(tc.open, Options{})
				if tc.wantErr {
					if err == nil || !strings.Contains(err.Error(), tc.want) {
						t.Fatalf("Open(%q) error = %v, want one containing %q", tc.open, err, tc.want)
					}
					return
				}
				if err != nil {
					t.Fatalf("Open(%q): %v", tc.open, err)
				}
				if d.Name() != tc.want {
					t.Errorf("Open(%q) opened %q, want %q", tc.open, d.Name(), tc.want)
				}
			})
		})
	}
}

func TestRegisterRejects(t *testing.T) {
	for _, name := range []string{"", "auto", "a b", "cpu"} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Register(%q) did not panic", name)
				}
			}()
			withRegistry(t, map[string]OpenFunc{"cpu": opens("cpu")}, func() { Register(name, opens(name)) })
		}()
	}
}

func TestMatrixDescBytes(t *testing.T) {
	for _, tc := range []struct {
		d            MatrixDesc
		data, scales int
		invalid      bool
	}{
		{MatrixDesc{Rows: 3, Cols: 5, Format: F32}, 60, 0, false},
		{MatrixDesc{Rows: 3, Cols: 5, Format: BF16}, 30, 0, false},
		{MatrixDesc{Rows: 2, Cols: 64, Format: Affine, Bits: 4, GroupSize: 32, ScaleFormat: BF16}, 64, 8, false},
		{MatrixDesc{Rows: 2, Cols: 96, Format: Affine, Bits: 3, GroupSize: 32, ScaleFormat: F32}, 72, 24, false},
		{MatrixDesc{Rows: 2, Cols: 48, Format: Affine, Bits: 4, GroupSize: 32, ScaleFormat: BF16}, 0, 0, true},
		{MatrixDesc{Rows: 2, Cols: 64, Format: Affine, Bits: 7, GroupSize: 32, ScaleFormat: BF16}, 0, 0, true},
		{MatrixDesc{Rows: 0, Cols: 64, Format: F16}, 0, 0, true},
	} {
		err := tc.d.Validate()
		if tc.invalid {
			if err == nil {
				t.Errorf("%v: Validate accepted it", tc.d)
			}
			continue
		}
		if err != nil {
			t.Errorf("%v: %v", tc.d, err)
			continue
		}
		if tc.d.DataBytes() != tc.data || tc.d.ScaleBytes() != tc.scales {
			t.Errorf("%v: %d data / %d scale bytes, want %d / %d", tc.d, tc.d.DataBytes(), tc.d.ScaleBytes(), tc.data, tc.scales)
		}
		if err := tc.d.CheckBytes(make([]byte, tc.data), make([]byte, tc.scales), make([]byte, tc.scales)); err != nil {
			t.Errorf("%v: CheckBytes: %v", tc.d, err)
		}
		if err := tc.d.CheckBytes(make([]byte, tc.data+1), nil, nil); err == nil {
			t.Errorf("%v: CheckBytes accepted a wrong data size", tc.d)
		}
	}
}
