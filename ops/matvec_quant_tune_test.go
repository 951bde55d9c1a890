package ops_test

import (
	"fmt"
	"testing"

	"github.com/wgllm/wgllm/ops"
)

// BenchmarkMatVecQuantTuning sweeps the quantised matvec's workgroup shape
// (lanes per row, rows per lane, workgroup size, x staging and pieces per
// pass) at Llama-3-8B's gate/up shape, reporting GB/s of weight bytes, to
// choose the constants on a GPU:
//
//	go test ./ops -run '^$' -bench MatVecQuantTuning
func BenchmarkMatVecQuantTuning(b *testing.B) {
	const n, k = 14336, 4096
	for _, dt := range []ops.DType{ops.Q4_K, ops.Q4_0, ops.Q6_K, ops.Q8_0} {
		for _, tpr := range []int{8, 16, 32} {
			for _, rpt := range []int{1, 2, 4} {
				for _, wg := range []int{128, 256} {
					for _, stage := range []bool{true, false} {
						for _, u := range []int{1, 2} {
							if !stage && u > 1 {
								continue
							}
							b.Run(fmt.Sprintf("%s/t%d_r%d_wg%d_stage%v_u%d", dt, tpr, rpt, wg, stage, u), func(b *testing.B) {
								defer ops.TuneMatVecQuant(tpr, rpt, wg, u, !stage)()
								benchMatVecQuant(b, dt, n, k, 1)
							})
						}
					}
				}
			}
		}
	}
}
