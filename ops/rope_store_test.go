package ops_test

import (
	"fmt"
	"math"
	"math/rand"
	"testing"

	"github.com/wgllm/wgllm/internal/gputest"
	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/ops/ref"
	"github.com/wgllm/wgllm/runtime/half"
)

// RoPEStore against float64 rotations at the kernel's specified f32 angles
// (RoPEOpts.Angle): q and an f32 pool's k rows within TolF32, v rows exact;
// with an f16 pool, k and v within TolF16 (one rounding to f16). q must
// also equal ops.RoPE's result bit for bit, and pool rows no slot names
// (and the skipped token's) stay as they were.
func TestRoPEStore(t *testing.T) {
	ctx := gputest.Ctx(t)
	cases := []struct {
		n, heads, kvh, hd, nRot int
		posOff                  uint32
		positions               bool
	}{
		{n: 1, heads: 4, kvh: 2, hd: 64, nRot: 64, posOff: 37},
		{n: 5, heads: 6, kvh: 3, hd: 80, nRot: 32, posOff: 1000}, // partial rotary
		{n: 3, heads: 2, kvh: 2, hd: 128, nRot: 128, positions: true},
		{n: 7, heads: 8, kvh: 1, hd: 34, nRot: 34, posOff: 0}, // MQA, odd pair count, position 0
	}
	for ci, c := range cases {
		for _, mode := range []ops.RoPEMode{ops.RoPENormal, ops.RoPENeox} {
			for _, pool := range []ops.DType{ops.F32, ops.F16} {
				name := fmt.Sprintf("%s/%s/n%d_h%d_kv%d_d%d_rot%d", mode, pool, c.n, c.heads, c.kvh, c.hd, c.nRot)
				t.Run(name, func(t *testing.T) {
					seed := int64(9000 + 10*ci + int(mode))
					rng := rand.New(rand.NewSource(seed))
					qn, kn := c.n*c.heads*c.hd, c.n*c.kvh*c.hd
					pad := 5
					all := gputest.Rand(rng, pad+qn+2*kn, 1)
					buf, err := ops.FromFloat32(ctx, "qkv", ops.F32, all, len(all))
					must(t, err)
					defer buf.Buf.Destroy()
					q := buf.View(pad, c.n, c.heads, c.hd)
					k := buf.View(pad+qn, c.n, c.kvh, c.hd)
					v := buf.View(pad+qn+kn, c.n, c.kvh, c.hd)
					rows := 3*c.n + 2
					row := c.kvh * c.hd
					kp, err := ops.New(ctx, "kpool", pool, rows, row)
					must(t, err)
					defer kp.Buf.Destroy()
					vp, err := ops.New(ctx, "vpool", pool, rows, row)
					must(t, err)
					defer vp.Buf.Destroy()
					gputest.Poison(t, kp)
					gputest.Poison(t, vp)
					kBefore, _ := kp.Read()
					vBefore, _ := vp.Read()
					perm := rng.Perm(rows)
					slots := make([]uint32, c.n)
					for i := range slots {
						slots[i] = uint32(perm[i])
					}
					if c.n > 1 {
						slots[1] = ops.ScatterSkip
					}
					st, err := ops.FromUint32(ctx, "slots", slots, c.n)
					must(t, err)
					defer st.Buf.Destroy()
					o := ops.RoPEOpts{Mode: mode, NRot: c.nRot, Base: 10000, PosOffset: c.posOff}
					pos := make([]uint32, c.n)
					for i := range pos {
						pos[i] = c.posOff + uint32(i)
					}
					if c.positions {
						for i := range pos {
							pos[i] = uint32(rng.Intn(5000))
						}
						pt, err := ops.FromUint32(ctx, "pos", pos, c.n)
						must(t, err)
						defer pt.Buf.Destroy()
						o.Positions, o.PosOffset = &pt, 0
					}
					// ops.RoPE on a copy of q, for the bit-for-bit comparison.
					qcopy, err := ops.FromFloat32(ctx, "qcopy", ops.F32, all[pad:pad+qn], c.n, c.heads, c.hd)
					must(t, err)
					defer qcopy.Buf.Destroy()
					enc := newEncoder(t, ctx)
					must(t, ops.RoPEStore(enc, q, k, v, kp, vp, st, o))
					must(t, ops.RoPE(enc, qcopy, qcopy, o))
					must(t, enc.SubmitAndWait())

					angle := func(tok, i int) float64 { return float64(o.Angle(pos[tok], i)) }
					wantQ := make([]float64, qn)
					ref.RoPE(wantQ, gputest.F64(all[pad:pad+qn]), c.n, c.heads, c.hd, c.nRot, mode == ops.RoPENeox, angle)
					gotQ, _ := q.Read()
					gputest.Check(t, "q", seed, gotQ, wantQ, gputest.TolF32)
					viaRoPE, _ := qcopy.Read()
					for i := range gotQ {
						if math.Float32bits(gotQ[i]) != math.Float32bits(viaRoPE[i]) {
							t.Fatalf("q[%d] = %v, ops.RoPE gives %v", i, gotQ[i], viaRoPE[i])
						}
					}
					wantK := make([]float64, kn)
					ref.RoPE(wantK, gputest.F64(all[pad+qn:pad+qn+kn]), c.n, c.kvh, c.hd, c.nRot, mode == ops.RoPENeox, angle)
					wantV := gputest.F64(all[pad+qn+kn : pad+qn+2*kn])
					gotK, _ := kp.Read()
					gotV, _ := vp.Read()
					tol := gputest.TolF32
					if pool == ops.F16 {
						tol = gputest.TolF16
					}
					written := map[uint32]int{}
					for tok, s := range slots {
						if s == ops.ScatterSkip {
							continue
						}
						written[s] = tok
						gputest.Check(t, fmt.Sprintf("k of token %d", tok), seed, gotK[int(s)*row:int(s+1)*row], wantK[tok*row:(tok+1)*row], tol)
						gputest.Check(t, fmt.Sprintf("v of token %d", tok), seed, gotV[int(s)*row:int(s+1)*row], wantV[tok*row:(tok+1)*row], tol)
						if pool == ops.F32 {
							for i := 0; i < row; i++ {
								if gotV[int(s)*row+i] != all[pad+qn+kn+tok*row+i] {
									t.Fatalf("v of token %d element %d: %v, want the copy %v", tok, i, gotV[int(s)*row+i], all[pad+qn+kn+tok*row+i])
								}
							}
						} else {
							for i := 0; i < row; i++ {
								want := half.ToFloat32(half.FromFloat32(all[pad+qn+kn+tok*row+i]))
								if d := math.Abs(float64(gotV[int(s)*row+i] - want)); d > math.Abs(float64(want))*1e-3 {
									t.Fatalf("v of token %d element %d: %v, want about %v", tok, i, gotV[int(s)*row+i], want)
								}
							}
						}
					}
					for r := 0; r < rows; r++ {
						if _, ok := written[uint32(r)]; ok {
							continue
						}
						for i := r * row; i < (r+1)*row; i++ {
							if math.Float32bits(gotK[i]) != math.Float32bits(kBefore[i]) || math.Float32bits(gotV[i]) != math.Float32bits(vBefore[i]) {
								t.Fatalf("pool row %d, named by no slot, was written", r)
							}
						}
					}
				})
			}
		}
	}
}
