package cli

import (
	"fmt"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"

	"github.com/fm-moe/fm/pkg/layout"
)

// Architectures lists the model families fm converts and runs (the
// config.json model_type values, as the manifest records them).
var Architectures = []string{layout.ArchQwen3MoE, layout.ArchQwen3Next, layout.ArchQwen35MoE}

// buildRevision is the VCS revision stamped by the Makefile with -ldflags -X,
// for builds where the go command records none (GOFLAGS=-buildvcs=false, or a
// checkout it cannot read). The go command's own vcs.revision wins.
var buildRevision string

// Version describes this build: the module version, the VCS revision it was
// built from (with "+dirty" for uncommitted changes), the Go version, and the
// prepared-directory format and architectures it supports.
func Version() string {
	mod, rev, goVersion := "(devel)", "unknown", "unknown"
	if buildRevision != "" {
		rev = buildRevision
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		goVersion = bi.GoVersion
		if bi.Main.Version != "" {
			mod = bi.Main.Version
		}
		var dirty bool
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
				if len(rev) > 12 {
					rev = rev[:12]
				}
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if dirty {
			rev += "+dirty"
		}
	}
	return fmt.Sprintf("%s (revision %s, %s); format %s; architectures %s",
		mod, rev, goVersion, layout.FormatVersion, strings.Join(Architectures, ", "))
}

// SetVersion gives root a --version flag printing "name version ..." (Version).
func SetVersion(root *cobra.Command) {
	root.Version = Version()
	root.SetVersionTemplate("{{.Name}} {{.Version}}\n")
}
