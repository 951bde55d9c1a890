// Package buildinfo says which build of wgllm is running: the release
// scripts inject Version and Commit with -ldflags -X; a plain `go build`
// falls back to the commit Go's VCS stamping records.
package buildinfo

import (
	"runtime"
	"runtime/debug"
)

// Set at link time by scripts/release.sh:
//
//	-X github.com/wgllm/wgllm/internal/buildinfo.Version=$(git describe --tags --always --dirty)
//	-X github.com/wgllm/wgllm/internal/buildinfo.Commit=$(git rev-parse HEAD)
var (
	Version = ""
	Commit  = ""
)

// Info is what `wgllm version` prints.
type Info struct {
	Version   string // release version, or "dev" for an unreleased build
	Commit    string // full commit hash, "+dirty" when built from a modified tree; "unknown" without VCS data
	GoVersion string
	Platform  string // GOOS/GOARCH
}

// Get combines the injected values with the binary's own build information.
func Get() Info {
	info := Info{Version: Version, Commit: Commit, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	bi, ok := debug.ReadBuildInfo()
	if info.Commit == "" && ok {
		info.Commit = vcsCommit(bi.Settings)
	}
	if info.Version == "" {
		info.Version = "dev"
	}
	if info.Commit == "" {
		info.Commit = "unknown"
	}
	return info
}

func vcsCommit(settings []debug.BuildSetting) string {
	var rev string
	dirty := false
	for _, s := range settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev != "" && dirty {
		rev += "+dirty"
	}
	return rev
}

// ModuleVersion is the version of a Go module linked into this binary
// (e.g. the WebGPU binding), or "" when it is not.
func ModuleVersion(path string) string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	for _, m := range bi.Deps {
		if m.Path == path {
			if m.Replace != nil {
				return m.Replace.Version
			}
			return m.Version
		}
	}
	return ""
}
