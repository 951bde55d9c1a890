package ops_test

import (
	"fmt"
	"math"
	"math/rand"
	"testing"

	"github.com/wgllm/wgllm/internal/gputest"
	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/ops/ref"
	"github.com/wgllm/wgllm/runtime/gpu"
	"github.com/wgllm/wgllm/runtime/half"
)

// fusedWeight uploads a random [n, k] weight of type dt and returns the
// values the GPU sees (f16-rounded, or dequantised).
func fusedWeight(t *testing.T, ctx *gpu.Context, rng *rand.Rand, dt ops.DType, n, k int) (ops.Tensor, []float32) {
	t.Helper()
	switch dt {
	case ops.F32, ops.F16:
		v := gputest.Rand(rng, n*k, 1)
		if dt == ops.F16 {
			for i := range v {
				v[i] = half.ToFloat32(half.FromFloat32(v[i]))
			}
		}
		w, err := ops.FromFloat32(ctx, "w", dt, v, n, k)
		must(t, err)
		return w, v
	}
	raw := quantised(t, rng, dt, n*k, 1)
	w, err := ops.FromBytes(ctx, "w", dt, raw, n, k)
	must(t, err)
	return w, hostDecode(t, dt, raw, n*k)
}

// Tolerance: the fused kernels sum each dot product exactly as the plain
// matvec does, so the dots get the matvec's bound; the RMS scale, SiLU and
// the residual add each add a few f32 roundings: relative L2 3e-5 and
// absolute 3e-5·sqrt(k/64) (gputest.TolDot's form, three times wider).
func fusedTol(k int) gputest.Tol {
	tol := gputest.TolDot(k)
	tol.RelL2 *= 3
	tol.Atol *= 3
	tol.Rtol *= 3
	return tol
}

func TestMatVecFused(t *testing.T) {
	ctx := gputest.Ctx(t)
	type fcase struct {
		dt      ops.DType
		m, k    int
		segs    []int // output columns per destination
		pair    bool
		acc     bool
		norm    bool
		bias    bool
		act     ops.Activation
		comment string
	}
	var cases []fcase
	for _, dt := range []ops.DType{ops.F32, ops.F16, ops.Q4_0, ops.Q8_0, ops.Q4_K, ops.Q6_K, ops.IQ4_NL, ops.IQ4_XS, ops.MXFP4} {
		k := 256
		if dt == ops.F32 || dt == ops.F16 {
			k = 200 // not a multiple of 8 chunks: the tail of the f16 loads
		}
		cases = append(cases,
			fcase{dt: dt, m: 1, k: k, segs: []int{37}, acc: true, comment: "residual add"},
			fcase{dt: dt, m: 3, k: k, segs: []int{29}, pair: true, comment: "SwiGLU gate/up pair"},
			fcase{dt: dt, m: 2, k: k, segs: []int{24, 9, 9}, norm: true, comment: "RMSNorm then fused QKV"},
			fcase{dt: dt, m: 1, k: k, segs: []int{19}, pair: true, norm: true, comment: "RMSNorm then gate/up"},
			fcase{dt: dt, m: 6, k: k, segs: []int{13, 5}, acc: true, comment: "two segments, accumulate, M past 4"},
			fcase{dt: dt, m: 2, k: k, segs: []int{21}, pair: true, norm: true, act: ops.ActGELU, comment: "RMSNorm then GeGLU"},
			fcase{dt: dt, m: 3, k: k, segs: []int{17}, pair: true, acc: true, act: ops.ActSwiGLUOAI, comment: "clamped SwiGLU, accumulate"},
		)
		if dt == ops.F32 || dt == ops.F16 || dt == ops.Q4_0 || dt == ops.Q4_K || dt == ops.Q8_0 || dt == ops.MXFP4 {
			cases = append(cases,
				fcase{dt: dt, m: 2, k: k, segs: []int{24, 9, 9}, norm: true, bias: true, comment: "RMSNorm then fused QKV with its biases"},
				fcase{dt: dt, m: 3, k: k, segs: []int{31}, acc: true, bias: true, comment: "biased output projection, accumulate"},
			)
		}
	}
	cases = append(cases,
		fcase{dt: ops.F16, m: 1, k: 2048, segs: []int{2048, 256, 256}, norm: true, comment: "TinyLlama QKV"},
		fcase{dt: ops.Q4_0, m: 1, k: 2048, segs: []int{701}, pair: true, norm: true, comment: "gate/up, rows not a multiple of a workgroup"},
		fcase{dt: ops.MXFP4, m: 2, k: 96, segs: []int{21}, pair: true, norm: true, comment: "51-byte rows: gate and up rows at every byte offset mod 4"},
		fcase{dt: ops.F32, m: 9, k: 64, segs: []int{11}, pair: true, acc: true, comment: "M past 8: two dispatches"},
		fcase{dt: ops.F16, m: 2, k: 203, segs: []int{7, 6}, norm: true, acc: true, comment: "odd K: scalar loads"},
		fcase{dt: ops.F32, m: 1, k: 256, segs: []int{256, 128, 128}, norm: true, comment: "model-sized QKV"},
		fcase{dt: ops.F32, m: 6, k: 256, segs: []int{512}, pair: true, norm: true, comment: "model-sized gate/up, M past 4"},
		fcase{dt: ops.F32, m: 1, k: 203, segs: []int{9}, pair: true, norm: true, comment: "odd K: scalar loads"},
	)
	for i, c := range cases {
		name := fmt.Sprintf("%s/m%d_k%d_%v", c.dt, c.m, c.k, c.segs)
		for _, f := range []struct {
			on bool
			s  string
		}{{c.pair, "pair"}, {c.acc, "acc"}, {c.norm, "norm"}, {c.bias, "bias"}, {c.act != ops.ActSiLU, c.act.String()}} {
			if f.on {
				name += "_" + f.s
			}
		}
		t.Run(name, func(t *testing.T) {
			if c.m > ops.MaxMatVecRows && (c.dt.Quantized() || c.dt == ops.BF16) {
				t.Skip("quantised matvec takes at most 8 rows")
			}
			seed := int64(7000 + i)
			rng := rand.New(rand.NewSource(seed))
			cols := 0
			for _, s := range c.segs {
				cols += s
			}
			rowsW := cols
			if c.pair {
				rowsW = 2 * cols
			}
			w, wv := fusedWeight(t, ctx, rng, c.dt, rowsW, c.k)
			defer w.Buf.Destroy()
			xv := gputest.Rand(rng, c.m*c.k, 2)
			x, err := ops.FromFloat32(ctx, "x", ops.F32, xv, c.m, c.k)
			must(t, err)
			defer x.Buf.Destroy()
			// All destinations in one buffer, apart by a gap, after a pad.
			pad, gap := 3, 5
			total := pad
			for _, s := range c.segs {
				total += c.m*s + gap
			}
			dbuf, err := ops.New(ctx, "d", ops.F32, total)
			must(t, err)
			defer dbuf.Buf.Destroy()
			init := gputest.Rand(rng, total, 1)
			if c.acc {
				dbuf, err = ops.FromFloat32(ctx, "d", ops.F32, init, total)
				must(t, err)
				defer dbuf.Buf.Destroy()
			} else {
				gputest.Poison(t, dbuf)
			}
			before, err := dbuf.Read()
			must(t, err)
			var dsts []ops.Tensor
			off := pad
			for _, s := range c.segs {
				dsts = append(dsts, dbuf.View(off, c.m, s))
				off += c.m*s + gap
			}
			var o ops.MatVecOpts
			o.Pair, o.Accumulate, o.Act = c.pair, c.acc, c.act
			xs := make([]float64, c.m*c.k)
			for i, v := range xv {
				xs[i] = float64(v)
			}
			if c.norm {
				gv := gputest.Rand(rng, c.k, 1)
				g, err := ops.FromFloat32(ctx, "g", ops.F32, gv, c.k)
				must(t, err)
				defer g.Buf.Destroy()
				o.Norm, o.Eps = &g, 1e-5
				ref.RMSNorm(xs, append([]float64(nil), xs...), gputest.F64(gv), c.m, c.k, 1e-5)
			}
			var bv []float32
			if c.bias {
				bv = gputest.Rand(rng, cols, 1)
				bt, err := ops.FromFloat32(ctx, "bias", ops.F32, bv, cols)
				must(t, err)
				defer bt.Buf.Destroy()
				o.Bias = &bt
			}
			enc := newEncoder(t, ctx)
			must(t, ops.MatVecFused(enc, w, x, o, dsts...))
			must(t, enc.SubmitAndWait())

			dot := func(row, m int) float64 {
				s := 0.0
				for k := 0; k < c.k; k++ {
					s += float64(wv[row*c.k+k]) * xs[m*c.k+k]
				}
				return s
			}
			row0 := 0
			for si, d := range dsts {
				got, err := d.Read()
				must(t, err)
				want := make([]float64, len(got))
				for m := 0; m < c.m; m++ {
					for j := 0; j < c.segs[si]; j++ {
						var v float64
						if c.pair {
							v = actRef[c.act](dot(j, m), dot(cols+j, m))
						} else {
							v = dot(row0+j, m)
						}
						if c.bias {
							v += float64(bv[row0+j])
						}
						if c.acc {
							v += float64(init[d.Off+m*c.segs[si]+j])
						}
						want[m*c.segs[si]+j] = v
					}
				}
				gputest.Check(t, fmt.Sprintf("%s segment %d", c.comment, si), seed, got, want, fusedTol(c.k))
				row0 += c.segs[si]
			}
			// The gaps between destinations are untouched.
			all, err := dbuf.Read()
			must(t, err)
			off = pad
			for _, s := range c.segs {
				off += c.m * s
				for i := off; i < off+gap; i++ {
					if math.Float32bits(all[i]) != math.Float32bits(before[i]) {
						t.Fatalf("element %d between destinations was written: %v", i, all[i])
					}
				}
				off += gap
			}
		})
	}
}

// A fused row's result is bit-identical whatever M is (batch invariance).
func TestMatVecFusedBatchInvariant(t *testing.T) {
	ctx := gputest.Ctx(t)
	for _, dt := range []ops.DType{ops.F16, ops.Q4_K} {
		t.Run(dt.String(), func(t *testing.T) {
			rng := rand.New(rand.NewSource(77))
			k, n := 512, 40
			w, _ := fusedWeight(t, ctx, rng, dt, 2*n, k)
			defer w.Buf.Destroy()
			gv := gputest.Rand(rng, k, 1)
			g, err := ops.FromFloat32(ctx, "g", ops.F32, gv, k)
			must(t, err)
			defer g.Buf.Destroy()
			xv := gputest.Rand(rng, 8*k, 1)
			var first []float32
			for _, m := range []int{1, 3, 8} {
				x, err := ops.FromFloat32(ctx, "x", ops.F32, xv[:m*k], m, k)
				must(t, err)
				d, err := ops.New(ctx, "d", ops.F32, m, n)
				must(t, err)
				enc := newEncoder(t, ctx)
				must(t, ops.MatVecFused(enc, w, x, ops.MatVecOpts{Pair: true, Norm: &g, Eps: 1e-6}, d))
				must(t, enc.SubmitAndWait())
				got, err := d.Read()
				must(t, err)
				x.Buf.Destroy()
				d.Buf.Destroy()
				if first == nil {
					first = got[:n]
					continue
				}
				for j := 0; j < n; j++ {
					if math.Float32bits(got[j]) != math.Float32bits(first[j]) {
						t.Fatalf("M=%d: row 0 output %d is %v, alone %v", m, j, got[j], first[j])
					}
				}
			}
		})
	}
}

func TestMatVecFusedErrors(t *testing.T) {
	ctx := gputest.Ctx(t)
	w, err := ops.New(ctx, "w", ops.F16, 10, 64)
	must(t, err)
	defer w.Buf.Destroy()
	x, err := ops.New(ctx, "x", ops.F32, 1, 64)
	must(t, err)
	defer x.Buf.Destroy()
	d, err := ops.New(ctx, "d", ops.F32, 32)
	must(t, err)
	defer d.Buf.Destroy()
	other, err := ops.New(ctx, "other", ops.F32, 10)
	must(t, err)
	defer other.Buf.Destroy()
	g, err := ops.New(ctx, "g", ops.F32, 63)
	must(t, err)
	defer g.Buf.Destroy()
	for _, c := range []struct {
		name string
		o    ops.MatVecOpts
		dsts []ops.Tensor
	}{
		{"columns do not add up", ops.MatVecOpts{}, []ops.Tensor{d.View(0, 1, 4), d.View(4, 1, 5)}},
		{"destinations in two buffers", ops.MatVecOpts{}, []ops.Tensor{d.View(0, 1, 5), other.View(0, 1, 5)}},
		{"pair with odd weight rows", ops.MatVecOpts{Pair: true}, []ops.Tensor{d.View(0, 1, 10)}},
		{"pair with segments", ops.MatVecOpts{Pair: true}, []ops.Tensor{d.View(0, 1, 3), d.View(3, 1, 2)}},
		{"norm weight of the wrong length", ops.MatVecOpts{Norm: &g, Eps: 1e-5}, []ops.Tensor{d.View(0, 1, 10)}},
		{"four destinations", ops.MatVecOpts{}, []ops.Tensor{d.View(0, 1, 1), d.View(1, 1, 1), d.View(2, 1, 1), d.View(3, 1, 7)}},
	} {
		enc := newEncoder(t, ctx)
		if err := ops.MatVecFused(enc, w, x, c.o, c.dsts...); err == nil {
			t.Errorf("%s: no error", c.name)
		} else {
			t.Logf("%s: %v", c.name, err)
		}
		enc.Release()
	}
}
