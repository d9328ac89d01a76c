package model_test

import (
	"context"
	"path/filepath"
	"slices"
	"testing"

	"github.com/fm-moe/fm/pkg/internal/hfload"
	"github.com/fm-moe/fm/pkg/model"
)

// TestStateLifecycle: Err tells a usable state from one Forward refuses (a
// step cut by cancellation, a released state); Reset revives a refused
// state; Shrink keeps the sequence.
func TestStateLifecycle(t *testing.T) {
	ck, err := hfload.Load(filepath.Join(goldenDir, "qwen35moe-tiny", "hf"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.New(&ck.Config, ck, ck, model.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	ids := []int{17, 400, 3, 999}
	st := m.NewState()
	if _, err := m.Forward(ctx, st, ids, false); err != nil || st.Err() != nil {
		t.Fatalf("Forward: %v, Err %v", err, st.Err())
	}
	// Shrink drops the workspace, not the sequence.
	ref := st.Clone()
	st.Shrink()
	want, err := m.Forward(ctx, ref, []int{5}, false)
	if err != nil {
		t.Fatal(err)
	}
	got, err := m.Forward(ctx, st, []int{5}, false)
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("after Shrink: %v, logits equal %v", err, slices.Equal(got, want))
	}
	// A step cut by cancellation leaves the state refused until Reset.
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := m.Forward(cancelled, st, []int{6}, false); err == nil || st.Err() == nil {
		t.Errorf("cancelled step: %v, Err %v; want both errors", err, st.Err())
	}
	if _, err := m.Forward(ctx, st, []int{6}, false); err == nil {
		t.Error("Forward accepted a half-stepped state")
	}
	st.Reset()
	if _, err := m.Forward(ctx, st, ids, false); err != nil || st.Err() != nil {
		t.Errorf("after Reset: %v, Err %v", err, st.Err())
	}
	// A released state is refused, and so is its clone; a second Release
	// is harmless.
	st.Release()
	st.Release()
	if st.Err() == nil {
		t.Error("released state: Err nil")
	}
	if _, err := m.Forward(ctx, st, []int{7}, false); err == nil {
		t.Error("Forward accepted a released state")
	}
	if _, err := m.Forward(ctx, st.Clone(), []int{7}, false); err == nil {
		t.Error("Forward accepted the clone of a released state")
	}
	ref.Release()
}
