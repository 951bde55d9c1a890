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
)

func TestWeightedSum(t *testing.T) {
	ctx := gputest.Ctx(t)
	cases := []struct {
		name                       string
		heads, kvHeads, nq, nk, hd int
		rowStride, headStride      int // 0: packed head-major
		vTokenStride               int // 0: packed
		v                          ops.DType
	}{
		{"tiny_1x1x2x8", 1, 1, 1, 2, 8, 0, 0, 0, ops.F32}, // the small case a comparable engine got wrong
		{"one_key", 2, 2, 3, 1, 8, 0, 0, 0, ops.F32},
		{"gqa_odd", 6, 2, 5, 57, 48, 0, 0, 0, ops.F32},
		{"mqa_strided", 4, 1, 7, 130, 64, 133, 0, 0, ops.F32},
		{"query_major_probs", 4, 2, 3, 33, 40, 4 * 35, 35, 0, ops.F32},
		{"fused_qkv_v", 8, 2, 2, 19, 64, 0, 0, (8 + 2 + 2) * 64, ops.F32}, // V read inside a QKV row
		{"f16_v", 8, 2, 4, 1001, 128, 0, 0, 0, ops.F16},
		{"f16_v_odd", 3, 3, 2, 11, 7, 0, 0, 23, ops.F16}, // odd head dim and stride: halves straddle words
	}
	for n, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			seed := int64(400 + n)
			rng := rand.New(rand.NewSource(seed))
			pl := ops.ScoreLayout{Heads: c.heads, Queries: c.nq, Keys: c.nk, RowStride: c.rowStride, HeadStride: c.headStride}
			rs, hs := c.rowStride, c.headStride
			if rs == 0 {
				rs = c.nk
			}
			if hs == 0 {
				hs = c.nq * rs
			}
			pSpan := (c.heads-1)*hs + (c.nq-1)*rs + c.nk
			ts := c.vTokenStride
			if ts == 0 {
				ts = c.kvHeads * c.hd
			}
			vSpan := (c.nk-1)*ts + c.kvHeads*c.hd
			// Probabilities are non-negative with rows summing to about 1;
			// signed weights would test f32 cancellation, not the kernel.
			pv := gputest.Rand(rng, pSpan, 2/float64(c.nk))
			for i := range pv {
				pv[i] = float32(math.Abs(float64(pv[i])))
			}
			vv := gputest.Rand(rng, vSpan, 2)
			probs, err := ops.FromFloat32(ctx, "probs", ops.F32, pv, pSpan)
			must(t, err)
			defer probs.Buf.Destroy()
			v, err := ops.FromFloat32(ctx, "v", c.v, vv, vSpan)
			must(t, err)
			defer v.Buf.Destroy()
			out, err := ops.New(ctx, "out", ops.F32, c.nq, c.heads, c.hd)
			must(t, err)
			defer out.Buf.Destroy()
			gputest.Poison(t, out)

			enc, err := ctx.NewEncoder()
			must(t, err)
			must(t, ops.WeightedSum(enc, out, probs, pl, v, ops.TokenLayout{Tokens: c.nk, Heads: c.kvHeads, HeadDim: c.hd, TokenStride: c.vTokenStride}))
			must(t, enc.SubmitAndWait())
			got, err := out.Read()
			must(t, err)
			vq, err := v.Read() // as stored (f16 rounding included)
			must(t, err)
			want := make([]float64, c.nq*c.heads*c.hd)
			ref.WeightedSum(want, gputest.F64(pv), gputest.F64(vq), c.heads, c.kvHeads, c.nq, c.nk, c.hd, rs, hs, ts)
			gputest.Check(t, "wsum", seed, got, want, gputest.TolF32)
		})
	}
}

// attnCase is one flash-attention test: shapes, options and inputs.
type attnCase struct {
	name                  string
	batch, nq, heads, kvh int
	hd, cap, kvLen        int
	causal                bool
	qOffset               int
	kv                    ops.DType
	qScale                float64 // input range of q (k is in [-2, 2]): larger means peakier softmax
	threeD                bool    // pass q/k/v/out as 3-D (batch 1)
	maxSmem               int     // AttentionOptions.MaxWorkgroupStorage
	softCap               float32
	window                int
	sinks                 bool // testSinks(heads)
	splitOnly             bool // long decode caches: not through the prefill kernel (lavapipe takes seconds a dispatch)
}

// attnInputs holds one case's host data and GPU tensors.
type attnInputs struct {
	qv, kv, vv []float32
	q, k, v    ops.Tensor
	kq, vq     []float32 // k and v as stored (f16-rounded for f16)
}

func newAttnInputs(t *testing.T, ctx *gpu.Context, c attnCase, seed int64) *attnInputs {
	t.Helper()
	rng := rand.New(rand.NewSource(seed))
	in := &attnInputs{}
	qScale := c.qScale
	if qScale == 0 {
		qScale = 2
	}
	in.qv = gputest.Rand(rng, c.batch*c.nq*c.heads*c.hd, qScale)
	in.kv = gputest.Rand(rng, c.batch*c.cap*c.kvh*c.hd, 2)
	in.vv = gputest.Rand(rng, c.batch*c.cap*c.kvh*c.hd, 1)
	// Cache slots past kvLen hold NaN: they must never be read into the result.
	for b := 0; b < c.batch; b++ {
		for i := (b*c.cap + c.kvLen) * c.kvh * c.hd; i < (b+1)*c.cap*c.kvh*c.hd; i++ {
			in.kv[i], in.vv[i] = nanBits, nanBits
		}
	}
	qShape := []int{c.batch, c.nq, c.heads, c.hd}
	kvShape := []int{c.batch, c.cap, c.kvh, c.hd}
	if c.threeD {
		qShape, kvShape = qShape[1:], kvShape[1:]
	}
	var err error
	in.q, err = ops.FromFloat32(ctx, "q", ops.F32, in.qv, qShape...)
	must(t, err)
	in.k, err = ops.FromFloat32(ctx, "k", c.kv, in.kv, kvShape...)
	must(t, err)
	in.v, err = ops.FromFloat32(ctx, "v", c.kv, in.vv, kvShape...)
	must(t, err)
	in.kq, err = in.k.Read()
	must(t, err)
	in.vq, err = in.v.Read()
	must(t, err)
	return in
}

func (in *attnInputs) destroy() {
	in.q.Buf.Destroy()
	in.k.Buf.Destroy()
	in.v.Buf.Destroy()
}

// runAttention dispatches Attention into a poisoned output and reads it.
func runAttention(t *testing.T, ctx *gpu.Context, c attnCase, in *attnInputs, variant ops.AttentionVariant) []float32 {
	t.Helper()
	out, err := ops.New(ctx, "out", ops.F32, in.q.Shape...)
	must(t, err)
	defer out.Buf.Destroy()
	gputest.Poison(t, out)
	opt := ops.AttentionOptions{
		Causal: c.causal, QOffset: c.qOffset, KVLen: c.kvLen, Variant: variant, MaxWorkgroupStorage: c.maxSmem,
		SoftCap: c.softCap, Window: c.window,
	}
	if c.sinks {
		sinks, err := ops.FromFloat32(ctx, "sinks", ops.F32, testSinks(c.heads), c.heads)
		must(t, err)
		defer sinks.Buf.Destroy()
		opt.Sinks = &sinks
	}
	enc, err := ctx.NewEncoder()
	must(t, err)
	must(t, ops.Attention(enc, out, in.q, in.k, in.v, opt))
	must(t, enc.SubmitAndWait())
	got, err := out.Read()
	must(t, err)
	return got
}

// attnReference computes batch element b alone (its own slices of q, k, v).
func attnReference(c attnCase, in *attnInputs, b int, k, v []float32) []float64 {
	qn, kn := c.nq*c.heads*c.hd, c.cap*c.kvh*c.hd
	want := make([]float64, qn)
	ref.Attention(want, gputest.F64(in.qv[b*qn:(b+1)*qn]), gputest.F64(k[b*kn:(b+1)*kn]), gputest.F64(v[b*kn:(b+1)*kn]),
		ref.AttentionShape{
			Batch: 1, Queries: c.nq, Heads: c.heads, KVHeads: c.kvh, HeadDim: c.hd,
			KVCap: c.cap, KVLen: c.kvLen, Causal: c.causal, QOffset: c.qOffset,
			Scale: 1 / math.Sqrt(float64(c.hd)), SoftCap: float64(c.softCap), Window: c.window,
			Sinks: pagedCase{heads: c.heads, sinks: c.sinks}.refSinks(),
		})
	return want
}

var attnCases = []attnCase{
	{name: "noncausal_32x32", batch: 1, nq: 32, heads: 4, kvh: 4, hd: 64, cap: 32, kvLen: 32, kv: ops.F32}, // the case a comparable engine got wrong
	{name: "causal_prefill_1", batch: 1, nq: 1, heads: 4, kvh: 2, hd: 64, cap: 1, kvLen: 1, causal: true, kv: ops.F32},
	{name: "causal_prefill_57", batch: 1, nq: 57, heads: 4, kvh: 2, hd: 64, cap: 57, kvLen: 57, causal: true, kv: ops.F32},
	{name: "causal_prefill_130_hd128", batch: 1, nq: 130, heads: 2, kvh: 2, hd: 128, cap: 130, kvLen: 130, causal: true, kv: ops.F32},
	{name: "causal_appended_block", batch: 1, nq: 19, heads: 4, kvh: 2, hd: 64, cap: 100, kvLen: 90, causal: true, qOffset: 71, kv: ops.F32},
	{name: "causal_block_before_end", batch: 1, nq: 5, heads: 2, kvh: 1, hd: 64, cap: 64, kvLen: 40, causal: true, qOffset: 20, kv: ops.F32},
	{name: "decode_kv1", batch: 1, nq: 1, heads: 8, kvh: 2, hd: 128, cap: 16, kvLen: 1, causal: true, qOffset: 0, kv: ops.F32},
	{name: "decode_kv1001", batch: 1, nq: 1, heads: 8, kvh: 2, hd: 128, cap: 1024, kvLen: 1001, causal: true, qOffset: 1000, kv: ops.F32},
	{name: "decode_kv4099", batch: 1, nq: 1, heads: 8, kvh: 2, hd: 64, cap: 4099, kvLen: 4099, causal: true, qOffset: 4098, kv: ops.F32},
	{name: "decode_noncausal_3d", batch: 1, nq: 1, heads: 4, kvh: 4, hd: 64, cap: 300, kvLen: 257, kv: ops.F32, threeD: true},
	{name: "gqa_8_2_prefill", batch: 1, nq: 40, heads: 8, kvh: 2, hd: 64, cap: 64, kvLen: 64, causal: true, qOffset: 24, kv: ops.F32},
	{name: "mqa_prefill", batch: 1, nq: 33, heads: 8, kvh: 1, hd: 64, cap: 33, kvLen: 33, causal: true, kv: ops.F32},
	{name: "mqa_decode", batch: 1, nq: 1, heads: 8, kvh: 1, hd: 128, cap: 700, kvLen: 700, causal: true, qOffset: 699, kv: ops.F32},
	{name: "mqa_batch2_nq3", batch: 2, nq: 3, heads: 4, kvh: 1, hd: 64, cap: 20, kvLen: 17, causal: true, qOffset: 14, kv: ops.F32}, // a comparable engine's MQA mixed batch and sequence
	{name: "batch3_prefill", batch: 3, nq: 45, heads: 4, kvh: 2, hd: 64, cap: 50, kvLen: 45, causal: true, kv: ops.F32},
	{name: "f16kv_prefill", batch: 1, nq: 70, heads: 4, kvh: 2, hd: 128, cap: 80, kvLen: 70, causal: true, kv: ops.F16},
	{name: "f16kv_decode", batch: 2, nq: 1, heads: 8, kvh: 2, hd: 64, cap: 2048, kvLen: 1500, causal: true, qOffset: 1499, kv: ops.F16},
	{name: "hd8_prefill", batch: 1, nq: 37, heads: 4, kvh: 2, hd: 8, cap: 40, kvLen: 37, causal: true, kv: ops.F32},
	{name: "hd8_decode_f16", batch: 2, nq: 1, heads: 4, kvh: 4, hd: 8, cap: 300, kvLen: 299, causal: true, qOffset: 298, kv: ops.F16},
	{name: "hd48_gqa", batch: 1, nq: 29, heads: 6, kvh: 2, hd: 48, cap: 64, kvLen: 61, causal: true, qOffset: 32, kv: ops.F32},
	{name: "hd256", batch: 1, nq: 21, heads: 2, kvh: 1, hd: 256, cap: 40, kvLen: 40, causal: true, qOffset: 19, kv: ops.F32},
	{name: "peaky_scores", batch: 1, nq: 24, heads: 2, kvh: 2, hd: 64, cap: 300, kvLen: 300, causal: true, qOffset: 276, kv: ops.F32, qScale: 40},
	{name: "small_tiles_16KiB", batch: 1, nq: 50, heads: 4, kvh: 2, hd: 128, cap: 200, kvLen: 190, causal: true, qOffset: 140, kv: ops.F32, maxSmem: 16 << 10},
	{name: "small_tiles_8KiB_f16", batch: 1, nq: 3, heads: 8, kvh: 2, hd: 64, cap: 500, kvLen: 333, causal: true, qOffset: 330, kv: ops.F16, maxSmem: 8 << 10},
	// Long decode caches: the Llama-3-8B shape over two sequences, head dim 256 with a window.
	{name: "decode_llama3_kv4097_f16", batch: 2, nq: 1, heads: 32, kvh: 8, hd: 128, cap: 4100, kvLen: 4097, causal: true, qOffset: 4096, kv: ops.F16, splitOnly: true},
	{name: "decode_hd256_kv2001_swa", batch: 1, nq: 1, heads: 4, kvh: 2, hd: 256, cap: 2001, kvLen: 2001, causal: true, qOffset: 2000, kv: ops.F16, window: 777},
	// Score modifications (more in the paged tests, which share the kernels).
	{name: "swa_decode_batch2", batch: 2, nq: 1, heads: 8, kvh: 2, hd: 64, cap: 2048, kvLen: 1500, causal: true, qOffset: 1499, kv: ops.F16, window: 300},
	{name: "swa_prefill_past_window", batch: 2, nq: 45, heads: 4, kvh: 2, hd: 64, cap: 120, kvLen: 111, causal: true, qOffset: 66, kv: ops.F32, window: 20},
	{name: "swa_noncausal_offset", batch: 1, nq: 7, heads: 4, kvh: 4, hd: 64, cap: 300, kvLen: 257, qOffset: 150, kv: ops.F32, window: 64, threeD: true},
	{name: "softcap_sinks_prefill", batch: 1, nq: 50, heads: 4, kvh: 1, hd: 128, cap: 64, kvLen: 60, causal: true, qOffset: 10, kv: ops.F32, qScale: 30, softCap: 30, sinks: true},
	{name: "softcap_sinks_decode", batch: 3, nq: 1, heads: 8, kvh: 8, hd: 32, cap: 900, kvLen: 899, causal: true, qOffset: 898, kv: ops.F32, qScale: 30, softCap: 8, sinks: true},
}

// TestAttention runs every case through both kernels (and the automatic
// choice) and checks each batch element separately against the float64
// reference: f32 K/V to TolF32; f16 K/V to TolF32 against the f16-rounded
// K/V and TolF16 against the unrounded ones.
func TestAttention(t *testing.T) {
	ctx := gputest.Ctx(t)
	for n, c := range attnCases {
		for _, variant := range []ops.AttentionVariant{ops.AttentionAuto, ops.AttentionPrefill, ops.AttentionSplitK} {
			if c.splitOnly && variant == ops.AttentionPrefill {
				continue
			}
			t.Run(c.name+"/"+variant.String(), func(t *testing.T) {
				seed := int64(500 + n)
				in := newAttnInputs(t, ctx, c, seed)
				defer in.destroy()
				got := runAttention(t, ctx, c, in, variant)
				qn := c.nq * c.heads * c.hd
				for b := 0; b < c.batch; b++ {
					gotB := got[b*qn : (b+1)*qn]
					name := fmt.Sprintf("%s batch %d", c.name, b)
					gputest.Check(t, name, seed, gotB, attnReference(c, in, b, in.kq, in.vq), gputest.TolF32)
					if c.kv == ops.F16 {
						gputest.Check(t, name+" vs unrounded K/V", seed, gotB, attnReference(c, in, b, in.kv, in.vv), gputest.TolF16)
					}
				}
			})
		}
	}
}

// Causal attention of the first query sees only the first key: its output
// is exactly v[0] of its kv head, bit for bit, in both kernels.
func TestAttentionFirstQuerySeesOnlyFirstKey(t *testing.T) {
	ctx := gputest.Ctx(t)
	for _, kv := range []ops.DType{ops.F32, ops.F16} {
		for _, variant := range []ops.AttentionVariant{ops.AttentionPrefill, ops.AttentionSplitK} {
			c := attnCase{batch: 2, nq: 9, heads: 4, kvh: 2, hd: 64, cap: 100, kvLen: 100, causal: true, kv: kv}
			t.Run(kv.String()+"/"+variant.String(), func(t *testing.T) {
				in := newAttnInputs(t, ctx, c, 77)
				defer in.destroy()
				got := runAttention(t, ctx, c, in, variant)
				for b := 0; b < c.batch; b++ {
					for h := 0; h < c.heads; h++ {
						kvh := h / (c.heads / c.kvh)
						for d := 0; d < c.hd; d++ {
							g := got[((b*c.nq+0)*c.heads+h)*c.hd+d]
							w := in.vq[((b*c.cap+0)*c.kvh+kvh)*c.hd+d]
							if math.Float32bits(g) != math.Float32bits(w) {
								t.Fatalf("batch %d head %d dim %d: got %v, want v[0] = %v exactly", b, h, d, g, w)
							}
						}
					}
				}
			})
		}
	}
}

// A sequence's output must not depend on the other sequences of the batch:
// each element of a batch-3 run equals, bit for bit, the same sequence run
// alone.
func TestAttentionBatchInvariant(t *testing.T) {
	ctx := gputest.Ctx(t)
	for _, variant := range []ops.AttentionVariant{ops.AttentionPrefill, ops.AttentionSplitK} {
		c := attnCase{batch: 3, nq: 6, heads: 8, kvh: 2, hd: 64, cap: 200, kvLen: 150, causal: true, qOffset: 144, kv: ops.F32}
		t.Run(variant.String(), func(t *testing.T) {
			in := newAttnInputs(t, ctx, c, 91)
			defer in.destroy()
			all := runAttention(t, ctx, c, in, variant)
			qn, kn := c.nq*c.heads*c.hd, c.cap*c.kvh*c.hd
			for b := 0; b < c.batch; b++ {
				one := c
				one.batch = 1
				solo := &attnInputs{qv: in.qv[b*qn : (b+1)*qn], kv: in.kv[b*kn : (b+1)*kn], vv: in.vv[b*kn : (b+1)*kn]}
				var err error
				solo.q, err = ops.FromFloat32(ctx, "q", ops.F32, solo.qv, 1, c.nq, c.heads, c.hd)
				must(t, err)
				solo.k, err = ops.FromFloat32(ctx, "k", ops.F32, solo.kv, 1, c.cap, c.kvh, c.hd)
				must(t, err)
				solo.v, err = ops.FromFloat32(ctx, "v", ops.F32, solo.vv, 1, c.cap, c.kvh, c.hd)
				must(t, err)
				got := runAttention(t, ctx, one, solo, variant)
				solo.destroy()
				for i := range got {
					if math.Float32bits(got[i]) != math.Float32bits(all[b*qn+i]) {
						t.Fatalf("batch element %d, index %d: alone %v, in the batch %v", b, i, got[i], all[b*qn+i])
					}
				}
			}
		})
	}
}

func TestAttentionRejectsBadShapes(t *testing.T) {
	ctx := gputest.Ctx(t)
	mk := func(dt ops.DType, shape ...int) ops.Tensor {
		x, err := ops.New(ctx, "x", dt, shape...)
		must(t, err)
		t.Cleanup(x.Buf.Destroy)
		return x
	}
	q := mk(ops.F32, 1, 4, 8, 64)
	k := mk(ops.F32, 1, 16, 2, 64)
	v := mk(ops.F32, 1, 16, 2, 64)
	out := mk(ops.F32, 1, 4, 8, 64)
	kh := mk(ops.F16, 1, 17, 2, 64)
	vh := mk(ops.F16, 1, 17, 2, 64)
	enc, err := ctx.NewEncoder()
	must(t, err)
	defer enc.Release()
	bad := []struct {
		name         string
		out, q, k, v ops.Tensor
		opt          ops.AttentionOptions
	}{
		{"kv heads do not divide heads", out, q, mk(ops.F32, 1, 16, 3, 64), mk(ops.F32, 1, 16, 3, 64), ops.AttentionOptions{}},
		{"head dim not a multiple of 4", mk(ops.F32, 1, 4, 8, 6), mk(ops.F32, 1, 4, 8, 6), mk(ops.F32, 1, 16, 2, 6), mk(ops.F32, 1, 16, 2, 6), ops.AttentionOptions{}},
		{"head dim too large", mk(ops.F32, 1, 1, 1, 260), mk(ops.F32, 1, 1, 1, 260), mk(ops.F32, 1, 4, 1, 260), mk(ops.F32, 1, 4, 1, 260), ops.AttentionOptions{}},
		{"kvLen beyond the cache", out, q, k, v, ops.AttentionOptions{KVLen: 17}},
		{"causal block past kvLen", out, q, k, v, ops.AttentionOptions{Causal: true, KVLen: 10, QOffset: 7}},
		{"batch mismatch", out, q, mk(ops.F32, 2, 16, 2, 64), mk(ops.F32, 2, 16, 2, 64), ops.AttentionOptions{}},
		{"k and v dtypes differ", out, q, k, mk(ops.F16, 1, 16, 2, 64), ops.AttentionOptions{}},
		{"out aliases q", q, q, k, v, ops.AttentionOptions{}},
		{"out shape", mk(ops.F32, 1, 4, 8, 32), q, k, v, ops.AttentionOptions{}},
		{"f16 view at an odd element", out, q, kh.View(1, 1, 16, 2, 64), vh.View(1, 1, 16, 2, 64), ops.AttentionOptions{}},
		{"nan scale", out, q, k, v, ops.AttentionOptions{Scale: float32(math.NaN())}},
	}
	for _, b := range bad {
		if err := ops.Attention(enc, b.out, b.q, b.k, b.v, b.opt); err == nil {
			t.Errorf("%s: accepted", b.name)
		} else {
			t.Logf("%s: %v", b.name, err)
		}
	}
}
