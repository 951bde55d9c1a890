package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"github.com/wgllm/wgllm/internal/buildinfo"
	"github.com/wgllm/wgllm/runtime/gpu"
)

// webgpuModule is the Go binding whose static libraries are wgpu-native.
const webgpuModule = "github.com/cogentcore/webgpu"

func versionCmd(*app) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the wgllm version, commit, Go version and wgpu-native version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			bi := buildinfo.Get()
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintf(w, "wgllm\t%s\n", bi.Version)
			fmt.Fprintf(w, "commit\t%s\n", bi.Commit)
			fmt.Fprintf(w, "go\t%s %s\n", bi.GoVersion, bi.Platform)
			fmt.Fprintf(w, "wgpu-native\t%s\n", nativeVersion())
			fmt.Fprintf(w, "backends\t%s\n", joinBackends(gpu.BuiltBackends()))
			return w.Flush()
		},
	}
}

// nativeVersion names the wgpu-native build. The libraries shipped in the
// binding are built from wgpu-native's main branch without a version, so
// the binding's module version identifies them then.
func nativeVersion() string {
	v := gpu.NativeVersion()
	mod := buildinfo.ModuleVersion(webgpuModule)
	switch {
	case mod == "":
		return v
	case v == "unknown":
		return fmt.Sprintf("unknown (the static library from %s %s carries no version)", webgpuModule, mod)
	}
	return fmt.Sprintf("%s (from %s %s)", v, webgpuModule, mod)
}

func joinBackends(bs []gpu.Backend) string {
	s := ""
	for i, b := range bs {
		if i > 0 {
			s += ", "
		}
		s += string(b)
	}
	if s == "" {
		return "none for this OS"
	}
	return s
}
