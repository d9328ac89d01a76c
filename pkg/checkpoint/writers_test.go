package checkpoint

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fm-moe/fm/pkg/layout"
)

const hfTiny = "../../testdata/golden/qwen3moe-tiny/hf"

// TestRepackDefaultsToExtractBits is defect 3 of issue 9: "fm-extract SRC
// OUT --bits 4; fm-repack SRC OUT" wrote 16-bit experts (4× the disk). The
// experts now take the precision fm-extract recorded, and the log says so.
func TestRepackDefaultsToExtractBits(t *testing.T) {
	out := t.TempDir()
	if _, err := Extract(context.Background(), hfTiny, out, Options{Bits: 4, GroupSize: 32}); err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	if _, err := Repack(context.Background(), hfTiny, out, Options{Log: &log}); err != nil {
		t.Fatal(err)
	}
	m, err := layout.ReadManifest(out)
	if err != nil {
		t.Fatal(err)
	}
	set := m.ExpertSet(layout.ExpertsDir)
	if m.Source.Bits != 4 || m.Source.GroupSize != 32 || set.Bits != 4 || set.GroupSize != 32 {
		t.Fatalf("recorded %d/%d, experts %d-bit group %d; want 4-bit group 32", m.Source.Bits, m.Source.GroupSize, set.Bits, set.GroupSize)
	}
	if !strings.Contains(log.String(), "as fm-extract recorded") {
		t.Errorf("the log does not say where the bits came from:\n%s", log.String())
	}
	// An explicit --bits still wins, with a note.
	log.Reset()
	if _, err := Repack(context.Background(), hfTiny, out, Options{Bits: 8, Log: &log}); err != nil {
		t.Fatal(err)
	}
	if m, _ = layout.ReadManifest(out); m.ExpertSet(layout.ExpertsDir).Bits != 8 || !strings.Contains(log.String(), "differs") {
		t.Fatalf("--bits 8 after --bits 4: %d-bit experts, log %q", m.ExpertSet(layout.ExpertsDir).Bits, log.String())
	}
}

// TestWritersLock is defect 6 of issue 9: two writers on one directory at
// once interleaved their manifest updates. The second now fails at once.
func TestWritersLock(t *testing.T) {
	out := t.TempDir()
	if _, err := Extract(context.Background(), hfTiny, out, Options{}); err != nil {
		t.Fatal(err)
	}
	unlock, err := layout.Lock(out, "test")
	if err != nil {
		t.Fatal(err)
	}
	_, err = Repack(context.Background(), hfTiny, out, Options{})
	if !errors.Is(err, layout.ErrLocked) || !strings.Contains(err.Error(), "test pid") {
		t.Errorf("Repack while locked: %v", err)
	}
	if _, err := Extract(context.Background(), hfTiny, out, Options{}); !errors.Is(err, layout.ErrLocked) {
		t.Errorf("Extract while locked: %v", err)
	}
	unlock()
	if _, err := Repack(context.Background(), hfTiny, out, Options{}); err != nil {
		t.Fatalf("after unlock: %v", err)
	}
}

// TestRepackNamesMissingSource is defect 7 of issue 9: a missing SRC was
// reported as a problem of OUT.
func TestRepackNamesMissingSource(t *testing.T) {
	out := t.TempDir()
	if _, err := Extract(context.Background(), hfTiny, out, Options{}); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "nope")
	_, err := Repack(context.Background(), missing, out, Options{})
	if err == nil || !strings.Contains(err.Error(), missing) || strings.Contains(err.Error(), out) {
		t.Fatalf("missing SRC: %v", err)
	}
}

// TestRepackRemovesStaleDerivedSet is defect 8 of issue 9: new experts made
// the 2-bit set stale; it left the manifest but stayed on disk.
func TestRepackRemovesStaleDerivedSet(t *testing.T) {
	out := t.TempDir()
	if _, err := Extract(context.Background(), hfTiny, out, Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := Repack(context.Background(), hfTiny, out, Options{Bits: 16}); err != nil {
		t.Fatal(err)
	}
	// A derived set as fm-requant2bit lists it (its contents do not matter here).
	stale := filepath.Join(out, layout.Experts2BitDir)
	m, err := layout.ReadManifest(out)
	if err != nil {
		t.Fatal(err)
	}
	derived := *m.ExpertSet(layout.ExpertsDir)
	derived.Dir = layout.Experts2BitDir
	m.Experts = append(m.Experts, derived)
	if err := layout.WriteManifest(out, m, layout.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(stale, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(stale, "layer_00_expert_0000.bin"), []byte("x"), 0o644)
	var log strings.Builder
	if _, err := Repack(context.Background(), hfTiny, out, Options{Bits: 8, Log: &log}); err != nil {
		t.Fatal(err)
	}
	if m, _ = layout.ReadManifest(out); m.ExpertSet(layout.Experts2BitDir) != nil {
		t.Error("the stale set is still in the manifest")
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the stale set's files are still on disk: %v", err)
	}
	if !strings.Contains(log.String(), "removed "+layout.Experts2BitDir) {
		t.Errorf("log %q does not say what was removed", log.String())
	}
}
