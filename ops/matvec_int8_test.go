package ops_test

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand"
	"strings"
	"testing"

	"github.com/wgllm/wgllm/internal/gputest"
	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/ops/ref"
	"github.com/wgllm/wgllm/runtime/gpu"
)

// int8Types are the weight types with an int8 matvec decoder.
var int8Types = []ops.DType{ops.Q4_0, ops.Q4_1, ops.Q5_0, ops.Q5_1, ops.Q8_0, ops.Q2_K, ops.Q3_K, ops.Q4_K, ops.Q5_K, ops.Q6_K}

// int8Ctx is the test context with the int8 matvec switched on (restored
// at the end), or a skip where the device has no dot4I8Packed.
func int8Ctx(t *testing.T) *gpu.Context {
	t.Helper()
	ctx := gputest.Ctx(t)
	if !ctx.Features.DotI8Packed {
		t.Skipf("%s (%s) has no dot4I8Packed: no int8 matvec to test", ctx.Adapter.Name, ctx.Adapter.Impl)
	}
	ops.SetKernelOptions(ctx, ops.KernelOptions{Int8Dot: true})
	t.Cleanup(func() { ops.SetKernelOptions(ctx, ops.KernelOptions{}) })
	return ctx
}

// q8Rows is x as the int8 matvec sees it: each row quantised by
// ref.QuantizeQ8 and dequantised again.
func q8Rows(x []float64, m, k int) []float64 {
	out := make([]float64, 0, m*k)
	for r := 0; r < m; r++ {
		out = append(out, ref.DequantizeQ8(ref.QuantizeQ8(x[r*k:(r+1)*k]))...)
	}
	return out
}

// refMatVec64 is refMatVec for float64 x.
func refMatVec64(w []float32, x []float64, n, k, m int) (want, mag []float64) {
	want, mag = make([]float64, m*n), make([]float64, m*n)
	for r := 0; r < m; r++ {
		for j := 0; j < n; j++ {
			s, a := 0.0, 0.0
			for i := 0; i < k; i++ {
				p := float64(w[j*k+i]) * x[r*k+i]
				s, a = s+p, a+math.Abs(p)
			}
			want[r*n+j], mag[r*n+j] = s, a
		}
	}
	return want, mag
}

// QuantizeQ8 matches ref.QuantizeQ8 bit for bit: quants, scales, the sums
// of 16 quants; also a block of zeros, exact halves (ties away from zero)
// and a block whose values span many binades (subnormal-free).
func TestQuantizeQ8(t *testing.T) {
	ctx := gputest.Ctx(t)
	for ci, c := range []struct{ m, k int }{{1, 32}, {3, 96}, {2, 4096}, {1, 14336}} {
		t.Run(fmt.Sprintf("%dx%d", c.m, c.k), func(t *testing.T) {
			seed := int64(9100 + ci)
			rng := rand.New(rand.NewSource(seed))
			xv := gputest.Rand(rng, c.m*c.k, 3)
			if c.k >= 96 {
				for i := 0; i < 32; i++ {
					xv[32+i] = 0 // a zero block
				}
				xv[64] = 127 // amax 127: halves are ties
				for i := 1; i < 32; i++ {
					xv[64+i] = float32(i%8) - 3.5
				}
				if c.m > 1 {
					for i := 0; i < 32; i++ {
						xv[c.k+i] = float32(math.Ldexp(rng.Float64()+0.5, -rng.Intn(30)))
					}
				}
			}
			x, err := ops.FromFloat32(ctx, "x", ops.F32, xv, c.m, c.k)
			must(t, err)
			defer x.Buf.Destroy()
			words := ops.Q8RowWords(c.k)
			d, err := ops.New(ctx, "q8", ops.U32, c.m*words)
			must(t, err)
			defer d.Buf.Destroy()
			enc := newEncoder(t, ctx)
			must(t, ops.QuantizeQ8(enc, d, x, nil, 0))
			must(t, enc.SubmitAndWait())
			raw, err := d.Buf.Read(0, uint64(4*c.m*words))
			must(t, err)
			miss := 0
			for r := 0; r < c.m; r++ {
				row := raw[4*r*words:]
				q, sc := ref.QuantizeQ8(gputest.F64(xv[r*c.k : (r+1)*c.k]))
				for i, want := range q {
					if got := int(int8(row[i])); got != want && miss < 10 {
						miss++
						t.Errorf("seed %d row %d quant %d (x %v): got %d want %d", seed, r, i, xv[r*c.k+i], got, want)
					}
				}
				for b, want := range sc {
					got := math.Float32frombits(binary.LittleEndian.Uint32(row[c.k+4*b:]))
					if got != float32(want) && miss < 10 {
						miss++
						t.Errorf("seed %d row %d scale %d: got %v want %v", seed, r, b, got, want)
					}
				}
				for h := 0; h < c.k/16; h++ {
					want := 0
					for _, v := range q[16*h : 16*h+16] {
						want += v
					}
					got := math.Float32frombits(binary.LittleEndian.Uint32(row[c.k+c.k/8+4*h:]))
					if got != float32(want) && miss < 10 {
						miss++
						t.Errorf("seed %d row %d sum %d: got %v want %d", seed, r, h, got, want)
					}
				}
			}
		})
	}
}

// Tolerance: against a reference on the dequantised weights and x rounded
// exactly as QuantizeQ8 rounds it, only f32 accumulation is left: relative
// L2 1e-5 and each value within 1e-5 * sum|w x| (checkMatVec). Against the
// unrounded x, the 8-bit rounding of x (a relative error of about 0.4% per
// element) bounds the relative L2 error by 1e-2.
func TestMatVecInt8(t *testing.T) {
	int8Ctx(t)
	for ti, dt := range int8Types {
		ks := []int{256, 2048}
		if dt.BlockSize() == 32 {
			ks = append(ks, 96)
		}
		for ki, k := range ks {
			for _, m := range []int{1, 4, 3} {
				name := fmt.Sprintf("%s/57x%d/m%d", dt, k, m)
				if m == 3 { // the GPUs' unrolled code, once per type
					if ki > 0 {
						continue
					}
					name += "_unrolled"
				}
				t.Run(name, func(t *testing.T) {
					defer ops.SetMatVecQuantUnroll(m == 3)()
					seed := int64(9200 + 100*ti + 10*ki + m)
					rng := rand.New(rand.NewSource(seed))
					n := 57
					raw := quantised(t, rng, dt, n*k, 1)
					wf := hostDecode(t, dt, raw, n*k)
					xv := gputest.Rand(rng, m*k, 1)
					got := runMatVecQuant(t, dt, raw, xv, n, k, m)
					want, mag := refMatVec64(wf, q8Rows(gputest.F64(xv), m, k), n, k, m)
					checkMatVec(t, "int8 matvec vs q8 x", seed, got, want, mag)
					plain, _ := refMatVec(wf, xv, n, k, m)
					gputest.Check(t, "int8 matvec vs f32 x", seed, got, plain, gputest.Tol{RelL2: 1e-2, Atol: math.Inf(1)})
				})
			}
		}
	}
}

// A row's int8 result is bit-identical alone (M=1), in four or in eight
// (N past 8192: 2, 2 and 1 weight rows per lane).
func TestMatVecInt8BatchInvariant(t *testing.T) {
	ctx := int8Ctx(t)
	for ti, dt := range []ops.DType{ops.Q4_0, ops.Q8_0, ops.Q4_K, ops.Q6_K} {
		t.Run(dt.String(), func(t *testing.T) {
			seed := int64(9300 + ti)
			rng := rand.New(rand.NewSource(seed))
			n, k := 8195, 256
			raw := randomBlocks(rng, dt, n*k)
			w, err := ops.FromBytes(ctx, "w", dt, raw, n, k)
			must(t, err)
			defer w.Buf.Destroy()
			xv := gputest.Rand(rng, 8*k, 1)
			x, err := ops.FromFloat32(ctx, "x", ops.F32, xv, 8, k)
			must(t, err)
			defer x.Buf.Destroy()
			d, err := ops.New(ctx, "d", ops.F32, 8+4+8, n)
			must(t, err)
			defer d.Buf.Destroy()
			gputest.Poison(t, d)
			enc := newEncoder(t, ctx)
			for r := 0; r < 8; r++ {
				must(t, ops.MatVecQuant(enc, d.View(r*n, 1, n), w, x.View(r*k, 1, k)))
			}
			must(t, ops.MatVecQuant(enc, d.View(8*n, 4, n), w, x.View(2*k, 4, k)))
			must(t, ops.MatVecQuant(enc, d.View(12*n, 8, n), w, x))
			must(t, enc.SubmitAndWait())
			got, err := d.Read()
			must(t, err)
			alone := got[:8*n]
			checkBits(t, "M=4 vs M=1", seed, got[8*n:12*n], alone[2*n:6*n])
			checkBits(t, "M=8 vs M=1", seed, got[12*n:20*n], alone)
			want, mag := refMatVec64(hostDecode(t, dt, raw, n*k), q8Rows(gputest.F64(xv), 8, k), n, k, 8)
			checkMatVec(t, "M=1 rows", seed, alone, want, mag)
		})
	}
}

// The fused int8 matvec: x * g quantised, 1 / rms applied after the sums
// (the reference models exactly that), QKV segments, gate/up pairs and the
// residual add. Tolerance: fusedTol, as the f32 fused kernels.
func TestMatVecInt8Fused(t *testing.T) {
	ctx := int8Ctx(t)
	for ci, c := range []struct {
		dt        ops.DType
		m, k      int
		segs      []int
		pair, acc bool
		bias      bool
	}{
		{ops.Q4_K, 2, 256, []int{24, 9, 9}, false, false, false},
		{ops.Q6_K, 1, 512, []int{19}, true, false, false},
		{ops.Q4_0, 3, 96, []int{29}, true, false, false},
		{ops.Q8_0, 2, 256, []int{37}, false, true, false},
		{ops.Q4_K, 2, 256, []int{24, 9, 9}, false, false, true}, // a biased fused QKV
		{ops.Q4_0, 1, 96, []int{33}, false, true, true},         // a biased output projection
	} {
		t.Run(fmt.Sprintf("%s/m%d_k%d_%v_pair%v_acc%v_bias%v", c.dt, c.m, c.k, c.segs, c.pair, c.acc, c.bias), func(t *testing.T) {
			seed := int64(9400 + ci)
			rng := rand.New(rand.NewSource(seed))
			cols := 0
			for _, s := range c.segs {
				cols += s
			}
			rowsW := cols
			if c.pair {
				rowsW *= 2
			}
			w, wv := fusedWeight(t, ctx, rng, c.dt, rowsW, c.k)
			defer w.Buf.Destroy()
			xv := gputest.Rand(rng, c.m*c.k, 2)
			x, err := ops.FromFloat32(ctx, "x", ops.F32, xv, c.m, c.k)
			must(t, err)
			defer x.Buf.Destroy()
			init := gputest.Rand(rng, c.m*cols, 1)
			dbuf, err := ops.FromFloat32(ctx, "d", ops.F32, init, c.m*cols)
			must(t, err)
			defer dbuf.Buf.Destroy()
			if !c.acc {
				gputest.Poison(t, dbuf)
			}
			var dsts []ops.Tensor
			off := 0
			for _, s := range c.segs {
				dsts = append(dsts, dbuf.View(off, c.m, s))
				off += c.m * s
			}
			o := ops.MatVecOpts{Pair: c.pair, Accumulate: c.acc}
			xs := gputest.F64(xv)
			scale := make([]float64, c.m)
			for i := range scale {
				scale[i] = 1
			}
			if !c.acc {
				gv := gputest.Rand(rng, c.k, 1)
				g, err := ops.FromFloat32(ctx, "g", ops.F32, gv, c.k)
				must(t, err)
				defer g.Buf.Destroy()
				o.Norm, o.Eps = &g, 1e-5
				for r := range scale {
					ss := 0.0
					for i := 0; i < c.k; i++ {
						v := xs[r*c.k+i]
						ss += v * v
						xs[r*c.k+i] = float64(xv[r*c.k+i] * gv[i]) // f32 product, as the GPU forms it
					}
					scale[r] = 1 / math.Sqrt(ss/float64(c.k)+1e-5)
				}
			}
			xq := q8Rows(xs, c.m, c.k)
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
					s += float64(wv[row*c.k+k]) * xq[m*c.k+k]
				}
				return s * scale[m]
			}
			row0, off := 0, 0
			for si, d := range dsts {
				got, err := d.Read()
				must(t, err)
				want := make([]float64, len(got))
				for m := 0; m < c.m; m++ {
					for j := 0; j < c.segs[si]; j++ {
						v := dot(row0+j, m)
						if c.pair {
							v = actRef[ops.ActSiLU](dot(j, m), dot(cols+j, m))
						}
						if c.bias {
							v += float64(bv[row0+j])
						}
						if c.acc {
							v += float64(init[off+m*c.segs[si]+j])
						}
						want[m*c.segs[si]+j] = v
					}
				}
				gputest.Check(t, fmt.Sprintf("segment %d", si), seed, got, want, fusedTol(c.k))
				row0 += c.segs[si]
				off += c.m * c.segs[si]
			}
		})
	}
}

// Where the device has subgroups, the quantised matvec's subgroup
// reduction gives the same bits as the workgroup-memory tree, plain and
// fused with the norm (whose sum still uses workgroup memory).
func TestMatVecQuantSubgroups(t *testing.T) {
	ctx := gputest.Ctx(t)
	if !ctx.Features.Subgroups {
		t.Skipf("%s (%s) has no subgroups (or not in aligned runs): no subgroup variant to test", ctx.Adapter.Name, ctx.Adapter.Impl)
	}
	t.Logf("subgroup sizes %d..%d", ctx.Features.SubgroupMinSize, ctx.Features.SubgroupMaxSize)
	types := append(append([]ops.DType{}, quantTypes...), ops.BF16)
	for ti, dt := range types {
		t.Run(dt.String(), func(t *testing.T) {
			seed := int64(9500 + ti)
			rng := rand.New(rand.NewSource(seed))
			n, k, m := 70, 512, 3
			raw := randomBlocks(rng, dt, 2*n*k)
			w, err := ops.FromBytes(ctx, "w", dt, raw, 2*n, k)
			must(t, err)
			defer w.Buf.Destroy()
			xv := gputest.Rand(rng, m*k, 1)
			x, err := ops.FromFloat32(ctx, "x", ops.F32, xv, m, k)
			must(t, err)
			defer x.Buf.Destroy()
			g, err := ops.FromFloat32(ctx, "g", ops.F32, gputest.Rand(rng, k, 1), k)
			must(t, err)
			defer g.Buf.Destroy()
			run := func(sg bool) []float32 {
				defer ops.SetMatVecSubgroups(sg)()
				d, err := ops.New(ctx, "d", ops.F32, m*2*n+m*n)
				must(t, err)
				defer d.Buf.Destroy()
				gputest.Poison(t, d)
				enc := newEncoder(t, ctx)
				must(t, ops.MatVecQuant(enc, d.View(0, m, 2*n), w, x))
				must(t, ops.MatVecFused(enc, w, x, ops.MatVecOpts{Pair: true, Norm: &g, Eps: 1e-5}, d.View(m*2*n, m, n)))
				must(t, enc.SubmitAndWait())
				got, err := d.Read()
				must(t, err)
				return got
			}
			plain, sg := run(false), run(true)
			if dt == ops.Q4_K || dt == ops.Q6_K || dt == ops.IQ4_XS {
				// The GPUs' unrolled code too.
				restore := ops.SetMatVecQuantUnroll(true)
				checkBits(t, "subgroups vs workgroup memory, unrolled", seed, run(true), run(false))
				restore()
			}
			checkBits(t, "subgroups vs workgroup memory", seed, sg, plain)
			want, mag := refMatVec(hostDecode(t, dt, raw, 2*n*k), xv, 2*n, k, m)
			checkMatVec(t, "subgroup matvec", seed, sg[:m*2*n], want, mag)
		})
	}
}

// KernelVariants says what runs: the int8 matvec only where switched on
// and the device has dot4I8Packed; the reduction by the device's subgroups.
func TestKernelVariants(t *testing.T) {
	ctx := gputest.Ctx(t)
	for _, on := range []bool{false, true} {
		ops.SetKernelOptions(ctx, ops.KernelOptions{Int8Dot: on})
		v := ops.KernelVariants(ctx)
		t.Logf("int8_dot %v: %q", on, v)
		int8Line := v[len(v)-1]
		if got, want := strings.Contains(int8Line, ": on:"), on && ctx.Features.DotI8Packed; got != want {
			t.Errorf("int8_dot %v, dot4I8Packed %v: %q", on, ctx.Features.DotI8Packed, int8Line)
		}
		if got := strings.Contains(v[1], "subgroup reduction"); got != ctx.Features.Subgroups {
			t.Errorf("subgroups %v: %q", ctx.Features.Subgroups, v[1])
		}
	}
	ops.SetKernelOptions(ctx, ops.KernelOptions{})
	for _, s := range []string{"maybe", "auto", "ON"} {
		if _, err := ops.ParseInt8Dot(s); err == nil {
			t.Errorf("ParseInt8Dot(%q) accepted", s)
		}
	}
}
