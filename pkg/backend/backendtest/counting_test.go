package backendtest_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/fm-moe/fm/pkg/backend"
	"github.com/fm-moe/fm/pkg/backend/backendtest"
	_ "github.com/fm-moe/fm/pkg/backend/cpu"
)

// TestCounting: the wrapper counts live states, reports a second Release
// and a use after Release, and injects Clone failures.
func TestCounting(t *testing.T) {
	dev, err := backend.Open("cpu", backend.Options{})
	if err != nil {
		t.Fatal(err)
	}
	c := backendtest.NewCounting(dev)
	defer c.Close()
	a, err := c.NewState(nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := a.Clone()
	if err != nil {
		t.Fatal(err)
	}
	if c.Live() != 2 || c.Made() != 2 {
		t.Errorf("live %d, made %d; want 2, 2", c.Live(), c.Made())
	}
	oom := errors.New("out of memory")
	c.SetCloneError(oom)
	if _, err := a.Clone(); !errors.Is(err, oom) {
		t.Errorf("Clone with an injected failure: %v", err)
	}
	c.SetCloneError(nil)
	a.Release()
	b.Release()
	if c.Live() != 0 || c.Misuse() != nil {
		t.Errorf("after releasing both: live %d, misuse %v", c.Live(), c.Misuse())
	}
	a.Release()
	a.Reset()
	err = c.Misuse()
	if c.Live() != 0 || err == nil || !strings.Contains(err.Error(), "released twice") || !strings.Contains(err.Error(), "Reset after Release") {
		t.Errorf("after misuse: live %d, misuse %v", c.Live(), err)
	}
}
