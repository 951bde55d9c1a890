package main

import (
	"fmt"
	"io"
	"runtime"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/runtime/gpu"
)

func devicesCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "devices",
		Short: "List WebGPU adapters and backends, and mark the adapter wgllm would use",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts := a.gpuOptions()
			descs, chosen, err := gpu.ListAdapters(opts)
			if len(descs) > 0 {
				printDevices(cmd.OutOrStdout(), descs, chosen)
				fmt.Fprintln(cmd.OutOrStdout())
			}
			printBackends(cmd.OutOrStdout(), gpu.ProbeBackends(), opts.Backend)
			printImpls(cmd.OutOrStdout(), opts, descs, chosen)
			if err == nil && chosen >= 0 {
				printKernels(cmd.OutOrStdout(), a, opts)
			}
			return err
		},
	}
}

// printBackends shows every backend wgllm knows: whether this binary's
// wgpu-native has it for this OS, and how many adapters it finds here.
func printBackends(w io.Writer, backends []gpu.BackendStatus, selected string) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "backend\tbuilt for %s\tadapters\n", runtime.GOOS)
	for _, b := range backends {
		switch {
		case !b.Built:
			fmt.Fprintf(tw, "%s\tno\t-\n", b.Backend)
		case b.Err != nil:
			fmt.Fprintf(tw, "%s\tyes\terror: %v\n", b.Backend, b.Err)
		default:
			fmt.Fprintf(tw, "%s\tyes\t%d\n", b.Backend, b.Adapters)
		}
	}
	tw.Flush()
	if selected == "" {
		selected = "auto (vulkan, metal or dx12; gl only when named)"
	}
	fmt.Fprintf(w, "backend in use: %s; choose one with WGLLM_BACKEND, --backend or gpu.backend\n", selected)
}

func printDevices(w io.Writer, descs []gpu.AdapterDesc, chosen int) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, d := range descs {
		mark := " "
		if d.Index == chosen {
			mark = "*"
		}
		fmt.Fprintf(tw, "%s %d\t%s\n", mark, d.Index, d.Name)
		fmt.Fprintf(tw, "   \timplementation\t%s\n", d.Impl)
		fmt.Fprintf(tw, "   \tbackend\t%s\n", d.Backend)
		fmt.Fprintf(tw, "   \ttype\t%s\n", d.Type)
		fmt.Fprintf(tw, "   \tvendor\t%s\n", d.Vendor)
		fmt.Fprintf(tw, "   \tdriver\t%s\n", d.Driver)
		fmt.Fprintf(tw, "   \tshader-f16\t%v\n", d.ShaderF16)
		fmt.Fprintf(tw, "   \ttimestamp-query\t%v\n", d.Timestamps)
		fmt.Fprintf(tw, "   \tsubgroups\t%s\n", subgroups(d))
		fmt.Fprintf(tw, "   \tsubgroup-matrix\t%v\n", d.SubgroupMatrix)
		fmt.Fprintf(tw, "   \tdot4I8Packed\t%v\n", d.DotI8Packed)
		fmt.Fprintf(tw, "   \tmaxStorageBufferBindingSize\t%s\n", bytesHuman(d.MaxBinding))
		fmt.Fprintf(tw, "   \tmaxBufferSize\t%s\n", bytesHuman(d.MaxBuffer))
		fmt.Fprintf(tw, "   \tmaxComputeWorkgroupStorageSize\t%s\n", bytesHuman(uint64(d.MaxWGStorage)))
		fmt.Fprintf(tw, "   \tmaxComputeInvocationsPerWorkgroup\t%d\n", d.MaxInvocs)
		fmt.Fprintf(tw, "   \tmaxComputeWorkgroupsPerDimension\t%d\n", d.MaxWGPerDim)
		fmt.Fprintf(tw, "   \tmaxStorageBuffersPerShaderStage\t%d\n", d.MaxStorageBuffers)
	}
	tw.Flush()
	if chosen >= 0 {
		fmt.Fprintf(w, "* chosen: %d (%s)\n", chosen, descs[chosen].Name)
	}
}

func subgroups(d gpu.AdapterDesc) string {
	switch {
	case !d.Subgroups:
		return "false"
	case d.SubgroupMinSize == d.SubgroupMaxSize:
		return fmt.Sprintf("true (size %d)", d.SubgroupMinSize)
	}
	return fmt.Sprintf("true (sizes %d..%d)", d.SubgroupMinSize, d.SubgroupMaxSize)
}

// printImpls says which WebGPU implementation the adapters above come
// from, and where Dawn's library loads from or why it does not.
func printImpls(w io.Writer, opts gpu.Options, descs []gpu.AdapterDesc, chosen int) {
	impl, err := gpu.ParseImpl(opts.Impl)
	if err != nil {
		return
	}
	inUse := string(impl)
	if chosen >= 0 && chosen < len(descs) {
		inUse = string(descs[chosen].Impl)
		if impl == gpu.ImplAuto {
			inUse += " (auto)"
		}
	}
	fmt.Fprintf(w, "implementation in use: %s; choose one with WGLLM_GPU_IMPL, --gpu-impl or gpu.impl (wgpu, dawn, auto)\n", inUse)
	if path, err := gpu.DawnLibrary(opts); err != nil {
		fmt.Fprintf(w, "dawn: %v\n", err)
	} else {
		fmt.Fprintf(w, "dawn: %s\n", path)
	}
}

// printKernels opens the chosen adapter (the subgroup layout is checked
// on the device) and says which kernel variants run on it.
func printKernels(w io.Writer, a *app, opts gpu.Options) {
	ctx, err := a.openGPU(opts)
	if err != nil {
		fmt.Fprintf(w, "kernels: cannot open the chosen adapter: %v\n", err)
		return
	}
	defer ctx.Close()
	fmt.Fprintf(w, "kernels on %s (%s):\n", ctx.Adapter.Name, ctx.Adapter.Impl)
	for _, v := range ops.KernelVariants(ctx) {
		fmt.Fprintf(w, "  %s\n", v)
	}
}

func bytesHuman(n uint64) string {
	const unit = 1024
	switch {
	case n >= 1<<40:
		return fmt.Sprintf("%.1f TiB", float64(n)/(1<<40))
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= unit:
		return fmt.Sprintf("%.1f KiB", float64(n)/unit)
	}
	return fmt.Sprintf("%d B", n)
}
