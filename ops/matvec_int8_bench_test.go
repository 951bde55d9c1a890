package ops_test

import (
	"fmt"
	"testing"

	"github.com/wgllm/wgllm/ops"
)

// BenchmarkMatVecQuantVariants: the quantised decode matvec (M=1) at
// Llama-3-8B's shapes (q/o 4096x4096, gate/up 14336x4096, down 4096x14336)
// in each feature variant: plain (workgroup-memory reduction), sg
// (subgroup reduction) and int8 (x quantised by QuantizeQ8, then
// dot4I8Packed; with the subgroup reduction where there is one; the
// quantisation dispatch is inside the timing). GB/s counts the weight
// bytes as stored. A variant whose feature the device lacks is skipped.
// On Dawn: WGLLM_GPU_IMPL=dawn WGLLM_DAWN_LIB=third_party/dawn/libwebgpu_wrapper.so
// go test ./ops -run '^$' -bench 'MatVecQuantVariants'
func BenchmarkMatVecQuantVariants(b *testing.B) {
	for _, dt := range []ops.DType{ops.Q4_0, ops.Q4_K, ops.Q6_K, ops.Q8_0} {
		for _, sh := range [][2]int{{4096, 4096}, {14336, 4096}, {4096, 14336}} {
			for _, v := range []string{"plain", "sg", "int8"} {
				n, k := sh[0], sh[1]
				b.Run(fmt.Sprintf("%s/%dx%d/%s", dt, n, k, v), func(b *testing.B) {
					ctx := quantBenchCtx(b, n*k/dt.BlockSize()*dt.BlockBytes())
					switch {
					case v == "sg" && !ctx.Features.Subgroups:
						b.Skipf("%s (%s) has no subgroups", ctx.Adapter.Name, ctx.Adapter.Impl)
					case v == "int8" && !ctx.Features.DotI8Packed:
						b.Skipf("%s (%s) has no dot4I8Packed", ctx.Adapter.Name, ctx.Adapter.Impl)
					}
					defer ops.SetMatVecSubgroups(v != "plain")()
					ops.SetKernelOptions(ctx, ops.KernelOptions{Int8Dot: v == "int8"})
					defer ops.SetKernelOptions(ctx, ops.KernelOptions{})
					benchMatVecQuant(b, dt, n, k, 1)
				})
			}
		}
	}
}
