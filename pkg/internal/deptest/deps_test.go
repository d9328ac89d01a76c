package deptest

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// forbidden maps an import path to why the commands must not depend on it.
var forbidden = map[string]string{
	"runtime/cgo":                       "the CPU binaries must build and run with CGO_ENABLED=0",
	"github.com/ebitengine/purego":      "dlopen makes the binary dynamically linked; keep it in a tagged GPU backend",
	"github.com/nlpodyssey/safetensors": "needs whole-file buffers; use pkg/safetensors",
}

func TestCommandsStayPureGo(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not on PATH")
	}
	for _, cmd := range []string{"extract", "repack", "requant2bit", "infer"} {
		pkg := "github.com/fm-moe/fm/cmd/" + cmd
		c := exec.Command(goBin, "list", "-deps", pkg)
		// The default build (no tags) with cgo off, as `make build` does: go list
		// fails if any dependency needs cgo.
		c.Env = append(c.Environ(), "CGO_ENABLED=0")
		out, err := c.CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", pkg, err, out)
		}
		for _, dep := range strings.Fields(string(out)) {
			if why, bad := forbidden[dep]; bad {
				t.Errorf("fm-%s depends on %s: %s", cmd, dep, why)
			}
		}
	}
}

// TestModelUsesOnlyTheContract: pkg/model is written against pkg/backend
// alone, so that a new backend touches nothing in it (DESIGN.md §8). A
// dependency on an implementation would let CPU-specific code creep back.
func TestModelUsesOnlyTheContract(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not on PATH")
	}
	const pkg = "github.com/fm-moe/fm/pkg/model"
	out, err := exec.Command(goBin, "list", "-deps", pkg).CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps %s: %v\n%s", pkg, err, out)
	}
	deps := strings.Fields(string(out))
	if !slices.Contains(deps, "github.com/fm-moe/fm/pkg/backend") {
		t.Errorf("%s does not depend on pkg/backend: is the test looking at the right package?", pkg)
	}
	for _, dep := range deps {
		if strings.HasPrefix(dep, "github.com/fm-moe/fm/pkg/backend/") {
			t.Errorf("%s depends on the backend implementation %s; it may use only the contract, pkg/backend", pkg, dep)
		}
	}
}
