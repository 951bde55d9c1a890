package ops_test

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand"
	"path/filepath"
	"testing"

	"github.com/wgllm/wgllm/internal/gputest"
	"github.com/wgllm/wgllm/internal/sharedfiles"
	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/runtime/gguf"
	"github.com/wgllm/wgllm/runtime/gpu"
	"github.com/wgllm/wgllm/runtime/half"
	"github.com/wgllm/wgllm/runtime/quant"
)

// The block-quantised weight types, in ggml's order.
var quantTypes = []ops.DType{ops.Q4_0, ops.Q4_1, ops.Q5_0, ops.Q5_1, ops.Q8_0,
	ops.Q2_K, ops.Q3_K, ops.Q4_K, ops.Q5_K, ops.Q6_K, ops.IQ4_NL, ops.IQ4_XS, ops.MXFP4}

var ggmlTypes = map[ops.DType]gguf.GGMLType{
	ops.F16: gguf.F16, ops.BF16: gguf.BF16,
	ops.Q4_0: gguf.Q4_0, ops.Q4_1: gguf.Q4_1, ops.Q5_0: gguf.Q5_0, ops.Q5_1: gguf.Q5_1, ops.Q8_0: gguf.Q8_0,
	ops.Q2_K: gguf.Q2_K, ops.Q3_K: gguf.Q3_K, ops.Q4_K: gguf.Q4_K, ops.Q5_K: gguf.Q5_K, ops.Q6_K: gguf.Q6_K,
	ops.IQ4_NL: gguf.IQ4_NL, ops.IQ4_XS: gguf.IQ4_XS, ops.MXFP4: gguf.MXFP4,
}

// halfFields are the byte offsets of each block's f16 scales (ggml-common.h).
var halfFields = map[ops.DType][]int{
	ops.Q4_0: {0}, ops.Q4_1: {0, 2}, ops.Q5_0: {0}, ops.Q5_1: {0, 2}, ops.Q8_0: {0},
	ops.Q2_K: {80, 82}, ops.Q3_K: {108}, ops.Q4_K: {0, 2}, ops.Q5_K: {0, 2}, ops.Q6_K: {208},
	ops.IQ4_NL: {0}, ops.IQ4_XS: {0},
}

// randomBlocks returns n elements of dt as random bytes: every quant and
// scale bit pattern occurs, and the f16 scales are finite, of either sign,
// in [2^-12, 1), with every fifth block's first scale an f16 subnormal.
// MXFP4's E8M0 exponents are in [2^-14, 2^1] (real weights' range; e < 2 would
// be f32 subnormals, which a GPU may flush). bf16 and f16 get random finite
// values in [-2, 2].
func randomBlocks(rng *rand.Rand, dt ops.DType, n int) []byte {
	if dt == ops.BF16 || dt == ops.F16 {
		return ops.Encode(dt, gputest.Rand(rng, n, 2))
	}
	bb := dt.BlockBytes()
	raw := make([]byte, n/dt.BlockSize()*bb)
	rng.Read(raw)
	for b := 0; b*bb < len(raw); b++ {
		for i, off := range halfFields[dt] {
			v := float32(math.Ldexp(1+rng.Float64(), -1-rng.Intn(12)))
			if rng.Intn(2) == 0 {
				v = -v
			}
			h := half.FromFloat32(v)
			if i == 0 && b%5 == 3 {
				h = uint16(1+rng.Intn(0x3ff)) | uint16(rng.Intn(2))<<15
			}
			binary.LittleEndian.PutUint16(raw[b*bb+off:], h)
		}
		if dt == ops.MXFP4 {
			raw[b*bb] = byte(127 - 14 + rng.Intn(16))
		}
	}
	return raw
}

// quantised returns n random values in [-scale, scale] quantised to dt by
// the CPU reference quantiser.
func quantised(t testing.TB, rng *rand.Rand, dt ops.DType, n int, scale float64) []byte {
	t.Helper()
	raw, err := quant.Quantize(ggmlTypes[dt], gputest.Rand(rng, n, scale))
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// hostDecode is the CPU reference: ggml's dequantize_row_* in float32.
func hostDecode(t testing.TB, dt ops.DType, raw []byte, n int) []float32 {
	t.Helper()
	v, err := quant.Dequantize(ggmlTypes[dt], raw, n)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// checkBits wants got to equal want bit for bit.
func checkBits(t testing.TB, name string, seed int64, got, want []float32) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s (seed %d): %d values, want %d", name, seed, len(got), len(want))
	}
	miss, first := 0, -1
	for i := range got {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			if first < 0 {
				first = i
			}
			miss++
		}
	}
	if miss > 0 {
		t.Errorf("%s (seed %d): %d of %d values differ; first at %d: got %v (%#08x) want %v (%#08x)",
			name, seed, miss, len(got), first, got[first], math.Float32bits(got[first]), want[first], math.Float32bits(want[first]))
	}
}

// checkF16 wants each got value to be want rounded to an f16 neighbour: the
// nearest, or the other one of the two f16 values bracketing want (WGSL
// leaves pack2x16float's rounding to the implementation).
func checkF16(t testing.TB, name string, seed int64, got, want []float32) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s (seed %d): %d values, want %d", name, seed, len(got), len(want))
	}
	miss, first := 0, -1
	for i := range got {
		w := want[i]
		lo, hi := f16Bracket(w)
		if got[i] != lo && got[i] != hi {
			if first < 0 {
				first = i
			}
			miss++
		}
	}
	if miss > 0 {
		t.Errorf("%s (seed %d): %d of %d values are not an f16 rounding of the reference; first at %d: got %v want %v",
			name, seed, miss, len(got), first, got[first], want[first])
	}
}

// f16Bracket returns the f16 values just below and above v (equal when v is
// an f16 value).
func f16Bracket(v float32) (float32, float32) {
	r := half.ToFloat32(half.FromFloat32(v))
	if r == v {
		return r, r
	}
	h := half.FromFloat32(v)
	// The neighbour on the other side of v, one f16 step away.
	var other uint16
	if (r < v) == (h&0x8000 == 0) {
		other = h + 1
	} else {
		other = h - 1
	}
	o := half.ToFloat32(other)
	return min(r, o), max(r, o)
}

func newEncoder(t testing.TB, ctx *gpu.Context) *gpu.Encoder {
	t.Helper()
	enc, err := ctx.NewEncoder()
	must(t, err)
	return enc
}

func TestDequantize(t *testing.T) {
	ctx := gputest.Ctx(t)
	types := append(append([]ops.DType{}, quantTypes...), ops.BF16, ops.F16)
	for ti, dt := range types {
		ks := []int{256, 512}
		if dt.BlockSize() == 32 {
			ks = append(ks, 96)
		}
		if dt.BlockSize() == 1 {
			ks = append(ks, 57)
		}
		for ki, k := range ks {
			for _, src := range []string{"quantised", "random-blocks"} {
				if src == "quantised" && !dt.Quantized() {
					continue
				}
				t.Run(fmt.Sprintf("%s/%s/3x%d", dt, src, k), func(t *testing.T) {
					seed := int64(1000 + 10*ti + ki)
					rng := rand.New(rand.NewSource(seed))
					rows := 3
					var raw []byte
					if src == "quantised" {
						raw = quantised(t, rng, dt, rows*k, 1.5)
					} else {
						raw = randomBlocks(rng, dt, rows*k)
					}
					want := hostDecode(t, dt, raw, rows*k)
					w, err := ops.FromBytes(ctx, "w", dt, raw, rows, k)
					must(t, err)
					defer w.Buf.Destroy()
					for _, out := range []ops.DType{ops.F32, ops.F16} {
						d, err := ops.New(ctx, "d", out, rows, k)
						must(t, err)
						defer d.Buf.Destroy()
						gputest.Poison(t, d)
						enc := newEncoder(t, ctx)
						must(t, ops.Dequantize(enc, d, w))
						must(t, enc.SubmitAndWait())
						got, err := d.Read()
						must(t, err)
						if out == ops.F32 {
							checkBits(t, "dequantize f32", seed, got, want)
						} else {
							checkF16(t, "dequantize f16", seed, got, want)
						}
					}
					// A row range: the middle row alone.
					d, err := ops.New(ctx, "d1", ops.F32, 1, k)
					must(t, err)
					defer d.Buf.Destroy()
					gputest.Poison(t, d)
					enc := newEncoder(t, ctx)
					must(t, ops.Dequantize(enc, d, w.View(k, 1, k)))
					must(t, enc.SubmitAndWait())
					got, err := d.Read()
					must(t, err)
					checkBits(t, "dequantize row 1", seed, got, want[k:2*k])
				})
			}
		}
	}
}

// Half-precision sources of odd length into views at odd offsets: the
// elements around the view keep their bits.
func TestDequantizeHalfOddViews(t *testing.T) {
	ctx := gputest.Ctx(t)
	for i, dt := range []ops.DType{ops.F16, ops.BF16} {
		for _, out := range []ops.DType{ops.F32, ops.F16} {
			t.Run(fmt.Sprintf("%s_to_%s", dt, out), func(t *testing.T) {
				seed := int64(1100 + i)
				rng := rand.New(rand.NewSource(seed))
				rows, k := 3, 57
				raw := randomBlocks(rng, dt, (rows+2)*k)
				all := hostDecode(t, dt, raw, (rows+2)*k)
				w, err := ops.FromBytes(ctx, "w", dt, raw, rows+2, k)
				must(t, err)
				defer w.Buf.Destroy()
				total := rows*k + 6
				buf, err := ops.New(ctx, "d", out, total)
				must(t, err)
				defer buf.Buf.Destroy()
				gputest.Poison(t, buf)
				d := buf.View(3, rows, k) // odd start, odd length
				enc := newEncoder(t, ctx)
				must(t, ops.Dequantize(enc, d, w.View(k, rows, k)))
				must(t, enc.SubmitAndWait())
				got, err := buf.Read()
				must(t, err)
				for _, j := range []int{0, 1, 2, total - 3, total - 2, total - 1} {
					if !math.IsNaN(float64(got[j])) {
						t.Errorf("element %d outside the view was overwritten with %v", j, got[j])
					}
				}
				if out == ops.F32 {
					checkBits(t, "half dequantize", seed, got[3:3+rows*k], all[k:k+rows*k])
				} else {
					checkF16(t, "half dequantize", seed, got[3:3+rows*k], all[k:k+rows*k])
				}
			})
		}
	}
}

func TestEmbedQuant(t *testing.T) {
	ctx := gputest.Ctx(t)
	types := append(append([]ops.DType{}, quantTypes...), ops.BF16, ops.F16)
	for ti, dt := range types {
		dim := 512
		if dt.BlockSize() == 1 {
			dim = 57
		}
		t.Run(dt.String(), func(t *testing.T) {
			seed := int64(1200 + ti)
			rng := rand.New(rand.NewSource(seed))
			vocab := 37
			raw := randomBlocks(rng, dt, vocab*dim)
			table := hostDecode(t, dt, raw, vocab*dim)
			tab, err := ops.FromBytes(ctx, "table", dt, raw, vocab, dim)
			must(t, err)
			defer tab.Buf.Destroy()
			idv := []uint32{5, 0, 36, 5, 37, 0xffffffff, 17}
			ids, err := ops.FromUint32(ctx, "ids", idv, len(idv))
			must(t, err)
			defer ids.Buf.Destroy()
			want := make([]float32, len(idv)*dim)
			for i, id := range idv {
				if int(id) < vocab {
					copy(want[i*dim:], table[int(id)*dim:int(id+1)*dim])
				}
			}
			outs := []ops.DType{ops.F32}
			if dt == ops.Q4_0 || dt == ops.Q6_K || !dt.Quantized() {
				outs = append(outs, ops.F16) // the f16 store is the same code for every type
			}
			for _, out := range outs {
				d, err := ops.New(ctx, "d", out, len(idv), dim)
				must(t, err)
				defer d.Buf.Destroy()
				gputest.Poison(t, d)
				enc := newEncoder(t, ctx)
				must(t, ops.EmbedQuant(enc, d, tab, ids))
				must(t, enc.SubmitAndWait())
				got, err := d.Read()
				must(t, err)
				if out == ops.F32 {
					checkBits(t, "embed", seed, got, want)
				} else {
					checkF16(t, "embed f16", seed, got, want)
				}
			}
		})
	}
}

func TestDequantizeRejectsBadShapes(t *testing.T) {
	ctx := gputest.Ctx(t)
	w, _ := ops.New(ctx, "w", ops.Q4_0, 4, 64)
	d, _ := ops.New(ctx, "d", ops.F32, 4, 32)
	f, _ := ops.New(ctx, "f", ops.F32, 4, 64)
	u, _ := ops.New(ctx, "u", ops.U32, 4, 64)
	ids, _ := ops.New(ctx, "ids", ops.U32, 3)
	h, _ := ops.New(ctx, "h", ops.F16, 1, 70)
	defer func() {
		for _, x := range []ops.Tensor{w, d, f, u, ids, h} {
			x.Buf.Destroy()
		}
	}()
	enc := newEncoder(t, ctx)
	defer enc.Release()
	cases := map[string]error{
		"dst shape":         ops.Dequantize(enc, d, w),
		"f32 source":        ops.Dequantize(enc, f, f),
		"u32 dst":           ops.Dequantize(enc, u, w),
		"odd f16 dst start": ops.Dequantize(enc, h.View(1, 1, 64), w.View(0, 1, 64)),
		"embed dst rows":    ops.EmbedQuant(enc, f, w, ids),
		"embed f32 ids":     ops.EmbedQuant(enc, f.View(0, 3, 64), w, f.View(0, 3)),
	}
	for name, err := range cases {
		if err == nil {
			t.Errorf("%s: accepted", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

// Real weights: tensors of each type in the kjv-30m GGUF files decode on the
// GPU to exactly the CPU reference's values, and a matvec over them matches
// a float64 matvec of those values.
func TestDequantizeModelTensors(t *testing.T) {
	ctx := gputest.Ctx(t)
	dir := filepath.Join(sharedfiles.SharedDir(t), "models")
	files := map[string][]gguf.GGMLType{
		"kjv-30m-q4_k_m.gguf": {gguf.Q4_K, gguf.Q6_K},
		"kjv-30m-q4_0.gguf":   {gguf.Q4_0},
		"kjv-30m-q8_0.gguf":   {gguf.Q8_0},
		// gpt-oss's expert weights [experts, n_ff, n_embd] as rows of n_embd.
		"zoo/models/gpt-oss-mxfp4.gguf": {gguf.MXFP4},
	}
	dtypes := map[gguf.GGMLType]ops.DType{}
	for dt, g := range ggmlTypes {
		dtypes[g] = dt
	}
	for name, want := range files {
		t.Run(name, func(t *testing.T) {
			g, err := gguf.Open(filepath.Join(dir, name))
			if err != nil {
				t.Skipf("%s: %v", name, err)
			}
			defer g.Close()
			for _, typ := range want {
				var ti gguf.TensorInfo
				found := false
				for _, c := range g.Tensors { // the first matrix (or stack of them) of the type
					if c.Type == typ && len(c.Dims) >= 2 {
						ti, found = c, true
						break
					}
				}
				if !found {
					t.Errorf("%s has no %s matrix", name, typ)
					continue
				}
				raw, err := g.ReadTensor(ti)
				must(t, err)
				k := int(ti.Dims[0]) // GGUF lists the fastest dimension first
				n := int(ti.Elements()) / k
				ref := hostDecode(t, dtypes[typ], raw, n*k)
				w, err := ops.FromBytes(ctx, ti.Name, dtypes[typ], raw, n, k)
				must(t, err)
				d, err := ops.New(ctx, "d", ops.F32, n, k)
				must(t, err)
				gputest.Poison(t, d)
				rng := rand.New(rand.NewSource(7))
				xv := gputest.Rand(rng, 2*k, 1)
				x, err := ops.FromFloat32(ctx, "x", ops.F32, xv, 2, k)
				must(t, err)
				y, err := ops.New(ctx, "y", ops.F32, 2, n)
				must(t, err)
				gputest.Poison(t, y)
				enc := newEncoder(t, ctx)
				must(t, ops.Dequantize(enc, d, w))
				must(t, ops.MatVecQuant(enc, y, w, x))
				must(t, enc.SubmitAndWait())
				got, err := d.Read()
				must(t, err)
				checkBits(t, fmt.Sprintf("%s %s [%d, %d]", ti.Name, typ, n, k), 0, got, ref)
				gy, err := y.Read()
				must(t, err)
				want, mag := refMatVec(ref, xv, n, k, 2)
				checkMatVec(t, fmt.Sprintf("matvec %s %s", ti.Name, typ), 7, gy, want, mag)
				t.Logf("%s %s [%d, %d] decoded exactly", ti.Name, typ, n, k)
				for _, b := range []*gpu.Buffer{w.Buf, d.Buf, x.Buf, y.Buf} {
					b.Destroy()
				}
			}
		})
	}
}
