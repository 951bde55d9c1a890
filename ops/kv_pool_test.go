package ops_test

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand"
	"testing"

	"github.com/wgllm/wgllm/internal/gputest"
	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/ops/ref"
	"github.com/wgllm/wgllm/runtime/gguf"
	"github.com/wgllm/wgllm/runtime/half"
	"github.com/wgllm/wgllm/runtime/quant"
)

// tolQ8KV is attention over q8_0-stored K/V against the unrounded values:
// each value is off by up to half a step of amax/127 (about 0.4% of the
// block's largest value), which the softmax and the weighted sum average.
var tolQ8KV = gputest.Tol{RelL2: 1e-2, Atol: 2e-2, Rtol: 5e-2}

// ggmlQ8 is ggml's quantize_row_q8_0_ref of one row (34-byte blocks).
func ggmlQ8(t testing.TB, row []float32) []byte {
	t.Helper()
	b, err := quant.Quantize(gguf.Q8_0, row)
	must(t, err)
	return b
}

// q8Planes splits a q8_0 pool's raw bytes of n values into its quants and
// f16 scale bits.
func q8Planes(raw []byte, n int) (q []int8, d []uint16) {
	q = make([]int8, n)
	for i := range q {
		q[i] = int8(raw[i])
	}
	d = make([]uint16, n/32)
	for b := range d {
		d[b] = binary.LittleEndian.Uint16(raw[n+2*b:])
	}
	return q, d
}

func readRaw(t testing.TB, p ops.Tensor) []byte {
	t.Helper()
	raw, err := p.Buf.Read(0, p.Buf.Size())
	must(t, err)
	return raw
}

// The host copy of a q8_0 pool is ggml's Q8_0 blocks, planar: value i's
// quant at byte i, block b's scale at byte n + 2b, and it reads back as
// ggml's dequantisation.
func TestKVPoolQ8Layout(t *testing.T) {
	ctx := gputest.Ctx(t)
	rng := rand.New(rand.NewSource(17))
	n := 7 * 96 // 21 blocks: an odd count, a half-used last scale word
	vals := gputest.Rand(rng, n, 3)
	copy(vals[32:64], make([]float32, 32)) // an all-zero block: scale 0
	p, err := ops.New(ctx, "pool", ops.Q8_0, 7, 96)
	must(t, err)
	defer p.Buf.Destroy()
	gputest.Poison(t, p)
	must(t, ops.WriteKVPool(p, vals))
	blocks := ggmlQ8(t, vals)
	q, d := q8Planes(readRaw(t, p), n)
	for b := 0; b < n/32; b++ {
		if got, want := d[b], binary.LittleEndian.Uint16(blocks[34*b:]); got != want {
			t.Fatalf("block %d: scale %#04x, ggml %#04x", b, got, want)
		}
		for j := 0; j < 32; j++ {
			if got, want := q[32*b+j], int8(blocks[34*b+2+j]); got != want {
				t.Fatalf("value %d: quant %d, ggml %d", 32*b+j, got, want)
			}
		}
	}
	got, err := ops.ReadKVPool(p)
	must(t, err)
	want, err := quant.Dequantize(gguf.Q8_0, blocks, n)
	must(t, err)
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("value %d reads %v, ggml dequantises %v", i, got[i], want[i])
		}
	}
	if err := ops.WriteKVPool(p.View(96, 6, 96), vals[96:]); err == nil {
		t.Error("a q8_0 pool view past its start was written")
	}
}

// checkQ8Rows compares the q8_0 rows the GPU wrote (raw pool bytes) with
// ggml's quantisation of the same f32 values (want, one row each) and with
// the float64 values they came from (exact). The GPU divides with WGSL's
// precision (2.5 ulp), so a scale may differ by one f16 ulp and a quant by
// one where x/d lies at a rounding boundary; at most 1% may. Every value
// must dequantise within 0.6 steps (amax/127) of exact: half a step of
// rounding plus the scale's f16 rounding (127·2^-11 of a step), plus f32
// error.
func checkQ8Rows(t *testing.T, what string, raw []byte, n, row int, rows []int, want [][]float32, exact [][]float64) {
	t.Helper()
	q, d := q8Planes(raw, n)
	diffs, total := 0, 0
	for i, r := range rows {
		blocks := ggmlQ8(t, want[i])
		for b := 0; b < row/32; b++ {
			pb := r*row/32 + b
			wd := binary.LittleEndian.Uint16(blocks[34*b:])
			if dd := int(d[pb]) - int(wd); dd < -1 || dd > 1 {
				t.Fatalf("%s row %d block %d: scale %#04x, ggml %#04x", what, r, b, d[pb], wd)
			} else if dd != 0 {
				diffs++
			}
			amax := 0.0
			for j := 0; j < 32; j++ {
				amax = math.Max(amax, math.Abs(exact[i][32*b+j]))
			}
			step := half.ToFloat32(d[pb])
			for j := 0; j < 32; j++ {
				e := 32*b + j
				gq, wq := int(q[r*row+e]), int(int8(blocks[34*b+2+j]))
				total++
				if gq-wq < -1 || gq-wq > 1 {
					t.Fatalf("%s row %d value %d: quant %d, ggml %d", what, r, e, gq, wq)
				} else if gq != wq {
					diffs++
				}
				if err := math.Abs(float64(float32(gq)*step) - exact[i][e]); err > 0.6*amax/127+1e-5*amax {
					t.Fatalf("%s row %d value %d: %v dequantised, exact %v (amax %v)", what, r, e, float32(gq)*step, exact[i][e], amax)
				}
			}
		}
	}
	if diffs*100 > total {
		t.Errorf("%s: %d of %d quants and scales differ from ggml's by one", what, diffs, total)
	}
	t.Logf("%s: %d of %d quants and scales differ from ggml's by one", what, diffs, total)
}

// checkUntouched fails if any byte of the pool rows not in written (quants
// and their scale halves) changed from before.
func checkUntouched(t *testing.T, what string, before, after []byte, n, row, nRows int, written map[int]bool) {
	t.Helper()
	for r := 0; r < nRows; r++ {
		if written[r] {
			continue
		}
		for i := r * row; i < (r+1)*row; i++ {
			if before[i] != after[i] {
				t.Fatalf("%s: pool row %d, named by no slot: quant byte %d changed", what, r, i)
			}
		}
		for b := r * row / 32; b < (r+1)*row/32; b++ {
			if before[n+2*b] != after[n+2*b] || before[n+2*b+1] != after[n+2*b+1] {
				t.Fatalf("%s: pool row %d, named by no slot: scale of block %d changed", what, r, b)
			}
		}
	}
}

// RoPEStore into q8_0 pools: the rows are ggml's quantisation of what the
// same RoPEStore writes into f32 pools (within checkQ8Rows' tolerance) and
// of the float64 rotations; rows no slot names, and the skipped token's,
// are untouched (poisoned bytes stay). The cases have rows of an odd
// block count (neighbouring rows share a scale word) and blocks that
// span two heads (head dim 80).
func TestRoPEStoreQ8(t *testing.T) {
	ctx := gputest.Ctx(t)
	cases := []struct {
		n, heads, kvh, hd, nRot int
		posOff                  uint32
	}{
		{n: 1, heads: 4, kvh: 2, hd: 64, nRot: 64, posOff: 37},
		{n: 5, heads: 6, kvh: 2, hd: 80, nRot: 32, posOff: 1000},
		{n: 3, heads: 2, kvh: 2, hd: 128, nRot: 128, posOff: 4000},
		{n: 7, heads: 8, kvh: 1, hd: 96, nRot: 96, posOff: 0},
	}
	for ci, c := range cases {
		for _, mode := range []ops.RoPEMode{ops.RoPENormal, ops.RoPENeox} {
			t.Run(fmt.Sprintf("%s/n%d_h%d_kv%d_d%d_rot%d", mode, c.n, c.heads, c.kvh, c.hd, c.nRot), func(t *testing.T) {
				seed := int64(9500 + 10*ci + int(mode))
				rng := rand.New(rand.NewSource(seed))
				qn, kn := c.n*c.heads*c.hd, c.n*c.kvh*c.hd
				all := gputest.Rand(rng, qn+2*kn, 2)
				buf, err := ops.FromFloat32(ctx, "qkv", ops.F32, all, len(all))
				must(t, err)
				defer buf.Buf.Destroy()
				q := buf.View(0, c.n, c.heads, c.hd)
				k := buf.View(qn, c.n, c.kvh, c.hd)
				v := buf.View(qn+kn, c.n, c.kvh, c.hd)
				rows, row := 3*c.n+2, c.kvh*c.hd
				pool := func(dt ops.DType) ops.Tensor {
					p, err := ops.New(ctx, "pool", dt, rows*row)
					must(t, err)
					gputest.Poison(t, p)
					return p.View(0, rows, row)
				}
				kq, vq, kf, vf := pool(ops.Q8_0), pool(ops.Q8_0), pool(ops.F32), pool(ops.F32)
				for _, p := range []ops.Tensor{kq, vq, kf, vf} {
					defer p.Buf.Destroy()
				}
				kBefore, vBefore := readRaw(t, kq), readRaw(t, vq)
				slots := make([]uint32, c.n)
				for i, r := range rng.Perm(rows)[:c.n] {
					slots[i] = uint32(r)
				}
				if c.n > 1 {
					slots[1] = ops.ScatterSkip
				}
				st, err := ops.FromUint32(ctx, "slots", slots, c.n)
				must(t, err)
				defer st.Buf.Destroy()
				o := ops.RoPEOpts{Mode: mode, NRot: c.nRot, Base: 10000, PosOffset: c.posOff}
				enc := newEncoder(t, ctx)
				must(t, ops.RoPEStore(enc, q, k, v, kf, vf, st, o))
				must(t, ops.RoPEStore(enc, q, k, v, kq, vq, st, o))
				must(t, enc.SubmitAndWait())

				angle := func(tok, i int) float64 { return float64(o.Angle(c.posOff+uint32(tok), i)) }
				wantK := make([]float64, kn)
				ref.RoPE(wantK, gputest.F64(all[qn:qn+kn]), c.n, c.kvh, c.hd, c.nRot, mode == ops.RoPENeox, angle)
				wantV := gputest.F64(all[qn+kn:])
				gotKF, _ := kf.Read()
				gotVF, _ := vf.Read()
				var used []int
				var fk, fv [][]float32
				var ek, ev [][]float64
				written := map[int]bool{}
				for tok, s := range slots {
					if s == ops.ScatterSkip {
						continue
					}
					r := int(s)
					used, written[r] = append(used, r), true
					fk, fv = append(fk, gotKF[r*row:(r+1)*row]), append(fv, gotVF[r*row:(r+1)*row])
					ek, ev = append(ek, wantK[tok*row:(tok+1)*row]), append(ev, wantV[tok*row:(tok+1)*row])
				}
				kAfter, vAfter := readRaw(t, kq), readRaw(t, vq)
				checkQ8Rows(t, "k", kAfter, rows*row, row, used, fk, ek)
				checkQ8Rows(t, "v", vAfter, rows*row, row, used, fv, ev)
				checkUntouched(t, "k", kBefore, kAfter, rows*row, row, rows, written)
				checkUntouched(t, "v", vBefore, vAfter, rows*row, row, rows, written)
			})
		}
	}
}

// ScatterRows into a q8_0 pool, from f32 and f16 rows: ggml's quantisation
// of the rows (as checkQ8Rows allows), nothing else touched.
func TestScatterRowsQ8(t *testing.T) {
	ctx := gputest.Ctx(t)
	for _, src := range []ops.DType{ops.F32, ops.F16} {
		for _, cols := range []int{32, 96, 256} {
			t.Run(fmt.Sprintf("%s/cols%d", src, cols), func(t *testing.T) {
				seed := int64(300 + cols)
				rng := rand.New(rand.NewSource(seed))
				n, dRows := 6, 11
				vals := gputest.Rand(rng, n*cols, 4)
				if src == ops.F16 {
					for i, x := range vals {
						vals[i] = half.ToFloat32(half.FromFloat32(x))
					}
				}
				s, err := ops.FromFloat32(ctx, "src", src, vals, n, cols)
				must(t, err)
				defer s.Buf.Destroy()
				d, err := ops.New(ctx, "dst", ops.Q8_0, dRows*cols)
				must(t, err)
				defer d.Buf.Destroy()
				gputest.Poison(t, d)
				before := readRaw(t, d)
				idx := make([]uint32, n)
				for i, r := range rng.Perm(dRows)[:n] {
					idx[i] = uint32(r)
				}
				idx[2] = ops.ScatterSkip
				it, err := ops.FromUint32(ctx, "idx", idx, n)
				must(t, err)
				defer it.Buf.Destroy()
				enc := newEncoder(t, ctx)
				must(t, ops.ScatterRows(enc, d.View(0, dRows, cols), s, it))
				must(t, enc.SubmitAndWait())
				var used []int
				var want [][]float32
				var exact [][]float64
				written := map[int]bool{}
				for i, r := range idx {
					if r == ops.ScatterSkip {
						continue
					}
					used, written[int(r)] = append(used, int(r)), true
					want = append(want, vals[i*cols:(i+1)*cols])
					exact = append(exact, gputest.F64(vals[i*cols:(i+1)*cols]))
				}
				after := readRaw(t, d)
				checkQ8Rows(t, "rows", after, dRows*cols, cols, used, want, exact)
				checkUntouched(t, "rows", before, after, dRows*cols, cols, dRows, written)
			})
		}
	}
}

// CopyRows of u32 words is a raw copy (the KV cache's copy-on-write of
// q8_0 blocks: bytes that would be NaN or subnormal as f32 stay as they
// are), within one buffer too.
func TestCopyRowsU32(t *testing.T) {
	ctx := gputest.Ctx(t)
	words := make([]uint32, 300)
	for i := range words {
		words[i] = uint32(i)*0x9e3779b9 | 0x7f800001 // NaN and other odd patterns
	}
	words[7] = 1 // a subnormal
	b, err := ops.FromUint32(ctx, "words", words, len(words))
	must(t, err)
	defer b.Buf.Destroy()
	enc := newEncoder(t, ctx)
	must(t, ops.CopyRows(enc, b.View(200, 77), b.View(3, 77), 1, 77, 77, 77))
	must(t, enc.SubmitAndWait())
	got, err := b.ReadUint32()
	must(t, err)
	for i, w := range got {
		want := words[i]
		if i >= 200 && i < 277 {
			want = words[i-197]
		}
		if w != want {
			t.Fatalf("word %d: %#x, want %#x", i, w, want)
		}
	}
	f, err := ops.New(ctx, "f", ops.F32, 8)
	must(t, err)
	defer f.Buf.Destroy()
	if err := ops.CopyRows(enc, f, b.View(0, 8), 1, 8, 8, 8); err == nil {
		t.Error("a u32 to f32 copy was accepted")
	}
}

// q8_0 pools that are views, or whose rows are not whole blocks, are
// refused by the writers with an error.
func TestKVPoolQ8WritersRejectBadPools(t *testing.T) {
	ctx := gputest.Ctx(t)
	mk := func(dt ops.DType, n int) ops.Tensor {
		x, err := ops.New(ctx, "x", dt, n)
		must(t, err)
		t.Cleanup(x.Buf.Destroy)
		return x
	}
	qkv := mk(ops.F32, 3*(4+2+2)*48)
	q := qkv.View(0, 3, 4, 48)
	k := qkv.View(3*4*48, 3, 2, 48)
	v := qkv.View(3*6*48, 3, 2, 48)
	slots := mk(ops.U32, 3)
	pool := mk(ops.Q8_0, 10*96)
	o := ops.RoPEOpts{Mode: ops.RoPENormal, NRot: 48, Base: 10000}
	enc := newEncoder(t, ctx)
	defer enc.Release()
	for name, err := range map[string]error{
		"rope_store q8_0 pool view": ops.RoPEStore(enc, q, k, v, pool.View(96, 9, 96), pool.View(96, 9, 96), slots, o),
		"rope_store q8_0 k pool with an f32 v pool": ops.RoPEStore(enc, q, k, v, pool.View(0, 10, 96),
			mk(ops.F32, 10*96).View(0, 10, 96), slots, o),
		"scatter q8_0 rows of 48":  ops.ScatterRows(enc, mk(ops.Q8_0, 10*96).View(0, 20, 48), mk(ops.F32, 3*48).View(0, 3, 48), slots),
		"scatter q8_0 pool view":   ops.ScatterRows(enc, pool.View(96, 9, 96), mk(ops.F32, 3*96).View(0, 3, 96), slots),
		"scatter from q8_0 source": ops.ScatterRows(enc, mk(ops.F32, 10*96).View(0, 10, 96), pool.View(0, 10, 96).View(0, 3, 96), slots),
	} {
		if err == nil {
			t.Errorf("%s accepted", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}
