package ops_test

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand"
	"testing"

	"github.com/wgllm/wgllm/internal/gputest"
	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/runtime/half"
)

// refMatVec is the float64 reference: want[m, n] = sum_k w[n, k] x[m, k]
// over the dequantised weights w [n, k]; mag[m, n] = sum_k |w[n, k] x[m, k]|
// bounds how much f32 rounding any summation order can accumulate.
func refMatVec(w, x []float32, n, k, m int) (want, mag []float64) {
	want = make([]float64, m*n)
	mag = make([]float64, m*n)
	for r := 0; r < m; r++ {
		xr := x[r*k : (r+1)*k]
		for j := 0; j < n; j++ {
			wr := w[j*k : (j+1)*k]
			s, a := 0.0, 0.0
			for i, v := range wr {
				p := float64(v) * float64(xr[i])
				s += p
				a += math.Abs(p)
			}
			want[r*n+j], mag[r*n+j] = s, a
		}
	}
	return want, mag
}

// checkMatVec: relative L2 error at most 1e-5 over the output, every value
// written and finite, and each |got - want| at most 1e-5 * sum_k |w x| (an
// f32 sum of K terms in any fixed order is that close; random blocks with
// large scales cancel heavily, so a bound relative to |want| would not hold).
func checkMatVec(t testing.TB, name string, seed int64, got []float32, want, mag []float64) {
	t.Helper()
	gputest.Check(t, name, seed, got, want, gputest.Tol{RelL2: 1e-5, Atol: math.Inf(1)})
	miss, worst, worstR := 0, -1, 0.0
	for i := range got {
		e := math.Abs(float64(got[i]) - want[i])
		if r := e / (1e-5 * mag[i]); e > 1e-5*mag[i] {
			miss++
			if r > worstR {
				worst, worstR = i, r
			}
		}
	}
	if miss > 0 {
		t.Errorf("%s (seed %d): %d of %d values differ by more than 1e-5 * sum|w x|; worst %d: got %v want %v (sum|w x| %v)",
			name, seed, miss, len(got), worst, got[worst], want[worst], mag[worst])
	}
}

// Tolerance: the GPU and the reference see the same dequantised weights, so
// only f32 accumulation separates them: gputest.TolF32 (relative L2 1e-5).
func TestMatVecQuant(t *testing.T) {
	_ = gputest.Ctx(t)
	types := append(append([]ops.DType{}, quantTypes...), ops.BF16)
	for ti, dt := range types {
		ks := []int{256, 512, 2048}
		if dt.BlockSize() == 32 {
			ks = append(ks, 96)
		}
		if dt == ops.BF16 {
			ks = append(ks, 96, 57, 60) // a tail piece, and x rows that are not vec4-aligned
		}
		for ki, k := range ks {
			for _, m := range []int{1, 4} {
				t.Run(fmt.Sprintf("%s/57x%d/m%d", dt, k, m), func(t *testing.T) {
					seed := int64(2000 + 100*ti + 10*ki + m)
					rng := rand.New(rand.NewSource(seed))
					n := 57
					var raw []byte
					if dt.Quantized() && m == 1 {
						raw = quantised(t, rng, dt, n*k, 1)
					} else {
						raw = randomBlocks(rng, dt, n*k)
					}
					wf := hostDecode(t, dt, raw, n*k)
					xv := gputest.Rand(rng, m*k, 1)
					got := runMatVecQuant(t, dt, raw, xv, n, k, m)
					want, mag := refMatVec(wf, xv, n, k, m)
					checkMatVec(t, "matvec", seed, got, want, mag)
				})
			}
		}
	}
}

func runMatVecQuant(t *testing.T, dt ops.DType, raw []byte, xv []float32, n, k, m int) []float32 {
	t.Helper()
	ctx := gputest.Ctx(t)
	w, err := ops.FromBytes(ctx, "w", dt, raw, n, k)
	must(t, err)
	defer w.Buf.Destroy()
	x, err := ops.FromFloat32(ctx, "x", ops.F32, xv, m, k)
	must(t, err)
	defer x.Buf.Destroy()
	d, err := ops.New(ctx, "d", ops.F32, m, n)
	must(t, err)
	defer d.Buf.Destroy()
	gputest.Poison(t, d)
	enc := newEncoder(t, ctx)
	must(t, ops.MatVecQuant(enc, d, w, x))
	must(t, enc.SubmitAndWait())
	got, err := d.Read()
	must(t, err)
	return got
}

// A row's result is bit-identical whether it is computed alone (M=1), with
// three others (M=4) or as part of eight rows (M=8). N is past 8192, so the
// three runs also compute 2, 2 and 1 weight rows per lane.
func TestMatVecQuantBatchInvariant(t *testing.T) {
	ctx := gputest.Ctx(t)
	types := append(append([]ops.DType{}, quantTypes...), ops.BF16)
	for ti, dt := range types {
		t.Run(dt.String(), func(t *testing.T) {
			seed := int64(3000 + ti)
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
			d, err := ops.New(ctx, "d", ops.F32, 8+4+8, n) // rows: M=1 x8, M=4, M=8
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
			wf := hostDecode(t, dt, raw, n*k)
			want, mag := refMatVec(wf, xv, n, k, 8)
			checkMatVec(t, "M=1 rows", seed, alone, want, mag)
		})
	}
}

// Views: a row range of the weight, x starting at an element that is not a
// multiple of 4 (scalar x loads), and dst inside a bigger buffer.
func TestMatVecQuantViews(t *testing.T) {
	ctx := gputest.Ctx(t)
	for ti, dt := range []ops.DType{ops.Q4_0, ops.Q5_0, ops.Q3_K, ops.Q6_K, ops.IQ4_XS, ops.MXFP4} {
		t.Run(dt.String(), func(t *testing.T) {
			seed := int64(3100 + ti)
			rng := rand.New(rand.NewSource(seed))
			n, k, m, r0, nv := 40, 256, 3, 7, 23
			if dt == ops.MXFP4 {
				k = 96 // 51-byte rows: the view starts at byte 357, inside a word
			}
			raw := randomBlocks(rng, dt, n*k)
			wf := hostDecode(t, dt, raw, n*k)
			w, err := ops.FromBytes(ctx, "w", dt, raw, n, k)
			must(t, err)
			defer w.Buf.Destroy()
			xv := gputest.Rand(rng, m*k+1, 1)
			xb, err := ops.FromFloat32(ctx, "x", ops.F32, xv, m*k+1)
			must(t, err)
			defer xb.Buf.Destroy()
			db, err := ops.New(ctx, "d", ops.F32, m*nv+5)
			must(t, err)
			defer db.Buf.Destroy()
			gputest.Poison(t, db)
			enc := newEncoder(t, ctx)
			must(t, ops.MatVecQuant(enc, db.View(5, m, nv), w.View(r0*k, nv, k), xb.View(1, m, k)))
			must(t, enc.SubmitAndWait())
			got, err := db.Read()
			must(t, err)
			for j := 0; j < 5; j++ {
				if !math.IsNaN(float64(got[j])) {
					t.Errorf("dst element %d before the view was written", j)
				}
			}
			want, mag := refMatVec(wf[r0*k:(r0+nv)*k], xv[1:], nv, k, m)
			checkMatVec(t, "matvec views", seed, got[5:], want, mag)
		})
	}
}

// A Q8_0 weight bigger than one storage binding is split over dispatches by
// rows (lavapipe binds at most 128 MiB); the same tensor as an embedding
// table is looked up across the split, and dequantised to f16 in chunks.
func TestMatVecQuantBeyondBinding(t *testing.T) {
	ctx := gputest.Ctx(t)
	const k = 4096
	rowBytes := k / 32 * 34
	n := int(ctx.MaxBinding())/rowBytes + 1000
	if uint64(n*rowBytes) > 512<<20 {
		t.Skipf("binding limit %d bytes: a weight beyond it is too big for this test", ctx.MaxBinding())
	}
	seed := int64(4000)
	rng := rand.New(rand.NewSource(seed))
	raw := make([]byte, n*rowBytes)
	rng.Read(raw)
	for b := 0; b < len(raw); b += 34 { // finite scales in [2^-8, 2^-4)
		binary.LittleEndian.PutUint16(raw[b:], half.FromFloat32(float32(math.Ldexp(1+rng.Float64(), -8+rng.Intn(4)))))
	}
	w, err := ops.FromBytes(ctx, "big", ops.Q8_0, raw, n, k)
	must(t, err)
	defer w.Buf.Destroy()
	t.Logf("Q8_0 weight [%d, %d]: %d bytes, binding limit %d", n, k, len(raw), ctx.MaxBinding())

	const m = 2
	xv := gputest.Rand(rng, m*k, 1)
	x, err := ops.FromFloat32(ctx, "x", ops.F32, xv, m, k)
	must(t, err)
	defer x.Buf.Destroy()
	d, err := ops.New(ctx, "d", ops.F32, m, n)
	must(t, err)
	defer d.Buf.Destroy()
	gputest.Poison(t, d)
	idv := []uint32{0, uint32(n - 1), 17, uint32(n / 2), uint32(n), uint32(n - 3)}
	ids, err := ops.FromUint32(ctx, "ids", idv, len(idv))
	must(t, err)
	defer ids.Buf.Destroy()
	e, err := ops.New(ctx, "e", ops.F32, len(idv), k)
	must(t, err)
	defer e.Buf.Destroy()
	gputest.Poison(t, e)

	enc := newEncoder(t, ctx)
	must(t, ops.MatVecQuant(enc, d, w, x))
	must(t, ops.EmbedQuant(enc, e, w, ids))
	if enc.Dispatches() < 4 {
		t.Errorf("%d dispatches: the weight was not split", enc.Dispatches())
	}
	must(t, enc.SubmitAndWait())
	got, err := d.Read()
	must(t, err)

	want, mag := make([]float64, m*n), make([]float64, m*n)
	for j := 0; j < n; j++ {
		row := hostDecode(t, ops.Q8_0, raw[j*rowBytes:(j+1)*rowBytes], k)
		wj, mj := refMatVec(row, xv, 1, k, m)
		for r := 0; r < m; r++ {
			want[r*n+j], mag[r*n+j] = wj[r], mj[r]
		}
	}
	checkMatVec(t, "big matvec", seed, got, want, mag)

	ge, err := e.Read()
	must(t, err)
	wantE := make([]float32, len(idv)*k)
	for i, id := range idv {
		if int(id) < n {
			copy(wantE[i*k:], hostDecode(t, ops.Q8_0, raw[int(id)*rowBytes:(int(id)+1)*rowBytes], k))
		}
	}
	checkBits(t, "big embed", seed, ge, wantE)

	// The last rows, through a window into the big buffer.
	last := 5
	dq, err := ops.New(ctx, "dq", ops.F16, last, k)
	must(t, err)
	defer dq.Buf.Destroy()
	enc = newEncoder(t, ctx)
	must(t, ops.Dequantize(enc, dq, w.View((n-last)*k, last, k)))
	must(t, enc.SubmitAndWait())
	gq, err := dq.Read()
	must(t, err)
	checkF16(t, "big dequantize tail", seed, gq, hostDecode(t, ops.Q8_0, raw[(n-last)*rowBytes:], last*k))
}

func TestMatVecQuantRejectsBadShapes(t *testing.T) {
	ctx := gputest.Ctx(t)
	w, _ := ops.New(ctx, "w", ops.Q4_K, 8, 256)
	wf, _ := ops.New(ctx, "wf", ops.F32, 8, 256)
	x, _ := ops.New(ctx, "x", ops.F32, 9, 256)
	d, _ := ops.New(ctx, "d", ops.F32, 9, 8)
	defer func() {
		for _, b := range []ops.Tensor{w, wf, x, d} {
			b.Buf.Destroy()
		}
	}()
	enc := newEncoder(t, ctx)
	defer enc.Release()
	cases := map[string]error{
		"f32 weight":    ops.MatVecQuant(enc, d.View(0, 1, 8), wf, x.View(0, 1, 256)),
		"nine x rows":   ops.MatVecQuant(enc, d, w, x),
		"x width":       ops.MatVecQuant(enc, d.View(0, 1, 8), w, x.View(0, 2, 128)),
		"dst shape":     ops.MatVecQuant(enc, d.View(0, 2, 4), w, x.View(0, 2, 256)),
		"1-D weight":    ops.MatVecQuant(enc, d.View(0, 1, 8), w.View(0, 2048), x.View(0, 1, 256)),
		"f16 x":         ops.MatVecQuant(enc, d.View(0, 1, 8), w, ops.Tensor{Buf: x.Buf, DType: ops.F16, Shape: []int{1, 256}}),
		"weight blocks": ops.MatVecQuant(enc, d.View(0, 1, 16), ops.Tensor{Buf: w.Buf, DType: ops.Q4_K, Shape: []int{16, 128}}, x.View(0, 1, 128)),
	}
	for name, err := range cases {
		if err == nil {
			t.Errorf("%s: accepted", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}
