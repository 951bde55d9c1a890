package buildinfo

import (
	"runtime"
	"runtime/debug"
	"testing"
)

func TestVCSCommit(t *testing.T) {
	cases := []struct {
		settings []debug.BuildSetting
		want     string
	}{
		{nil, ""},
		{[]debug.BuildSetting{{Key: "vcs.revision", Value: "abc"}, {Key: "vcs.modified", Value: "false"}}, "abc"},
		{[]debug.BuildSetting{{Key: "vcs.modified", Value: "true"}, {Key: "vcs.revision", Value: "abc"}}, "abc+dirty"},
		{[]debug.BuildSetting{{Key: "vcs.modified", Value: "true"}}, ""},
	}
	for _, c := range cases {
		if got := vcsCommit(c.settings); got != c.want {
			t.Errorf("vcsCommit(%v) = %q, want %q", c.settings, got, c.want)
		}
	}
}

func TestInjectedValuesWin(t *testing.T) {
	defer func(v, c string) { Version, Commit = v, c }(Version, Commit)
	Version, Commit = "v1.2.3-4-gabc", "abcdef+dirty"
	got := Get()
	if got.Version != "v1.2.3-4-gabc" || got.Commit != "abcdef+dirty" {
		t.Errorf("Get() = %+v, want the injected version and commit", got)
	}
	if got.GoVersion != runtime.Version() || got.Platform != runtime.GOOS+"/"+runtime.GOARCH {
		t.Errorf("Get() = %+v, want this Go and platform", got)
	}
	Version, Commit = "", ""
	if got := Get(); got.Version != "dev" || got.Commit == "" {
		t.Errorf("without injection Get() = %+v, want version dev and a commit or \"unknown\"", got)
	}
}
