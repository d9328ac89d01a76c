package main

import (
	"testing"

	"github.com/fm-moe/fm/pkg/cli/clitest"
)

// TestVersion: --version names the build, the format and the architectures.
func TestVersion(t *testing.T) { clitest.Version(t, newRootCmd()) }
