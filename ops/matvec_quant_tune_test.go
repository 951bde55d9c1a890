package ops_test

import (
	"fmt"
	"math/rand"
	"testing"

	"github.com/wgllm/wgllm/internal/gputest"
	"github.com/wgllm/wgllm/ops"
)

// TestMatVecQuantShapesAgree: only the lanes per row (TPR) fix a quantised
// matvec output's reduction order, so every other workgroup shape (rows per
// lane, workgroup size, staged x or not, two pieces in flight) gives the
// same bits; the tuning benchmark below may then pick any of them.
func TestMatVecQuantShapesAgree(t *testing.T) {
	ctx := gputest.Ctx(t)
	shapes := []struct {
		rpt, wg, u     int
		noStage, ahead bool
	}{{4, 128, 1, true, false}, {2, 64, 1, false, false}, {4, 128, 1, true, true}, {1, 256, 2, false, false}, {2, 128, 1, true, true}}
	for ti, dt := range []ops.DType{ops.Q4_0, ops.Q4_K, ops.Q6_K, ops.Q8_0, ops.MXFP4, ops.BF16} {
		for _, m := range []int{1, 3} {
			t.Run(fmt.Sprintf("%s/m%d", dt, m), func(t *testing.T) {
				n, k := 37, 1280 // odd rows; 5 K-quant blocks, 40 of 32
				rng := rand.New(rand.NewSource(int64(300 + 10*ti + m)))
				w, err := ops.FromBytes(ctx, "w", dt, randomBlocks(rng, dt, n*k), n, k)
				must(t, err)
				defer w.Buf.Destroy()
				x, err := ops.FromFloat32(ctx, "x", ops.F32, gputest.Rand(rng, m*k, 1), m, k)
				must(t, err)
				defer x.Buf.Destroy()
				run := func() []float32 {
					d, err := ops.New(ctx, "d", ops.F32, m, n)
					must(t, err)
					defer d.Buf.Destroy()
					gputest.Poison(t, d)
					enc, err := ctx.NewEncoder()
					must(t, err)
					must(t, ops.MatVecQuant(enc, d, w, x))
					must(t, enc.SubmitAndWait())
					out, err := d.Read()
					must(t, err)
					return out
				}
				want := run()
				for _, s := range shapes {
					restore := ops.TuneMatVecQuant(32, s.rpt, s.wg, s.u, s.noStage, s.ahead)
					got := run()
					restore()
					for i := range want {
						if got[i] != want[i] {
							t.Fatalf("shape %+v: output %d is %v, the default shape gives %v", s, i, got[i], want[i])
						}
					}
				}
			})
		}
	}
}

// BenchmarkMatVecQuantTuning sweeps the quantised matvec's workgroup shape
// (rows per lane, workgroup size, x staged or read directly, two pieces in
// flight) at TinyLlama's and Llama-3-8B's shapes, reporting GB/s of weight
// bytes, to choose the constants on a GPU:
//
//	go test ./ops -run '^$' -bench MatVecQuantTuning
func BenchmarkMatVecQuantTuning(b *testing.B) {
	for _, dt := range []ops.DType{ops.Q4_K, ops.Q4_0, ops.Q6_K, ops.Q8_0} {
		for _, sh := range [][2]int{{2048, 2048}, {4096, 4096}, {14336, 4096}} {
			for _, rpt := range []int{1, 2, 4} {
				for _, wg := range []int{64, 128, 256} {
					for _, v := range []string{"stage", "direct", "ahead"} {
						b.Run(fmt.Sprintf("%s/%dx%d/r%d_wg%d_%s", dt, sh[0], sh[1], rpt, wg, v), func(b *testing.B) {
							defer ops.TuneMatVecQuant(32, rpt, wg, 1, v != "stage", v == "ahead")()
							benchMatVecQuant(b, dt, sh[0], sh[1], 1)
						})
					}
				}
			}
		}
	}
}
