package ops_test

import (
	"fmt"
	"math"
	"math/rand"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/wgllm/wgllm/internal/gputest"
	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/ops/ref"
	"github.com/wgllm/wgllm/runtime/gpu"
)

// pagedCase is one paged-attention test: one dispatch over len(kvLens)
// sequences. Sequence s has kvLens[s] keys; causal sequences put their nq
// queries at the end (qOffset = kvLen - nq), unless qOffsets says otherwise.
type pagedCase struct {
	name              string
	nq, heads, kvh    int
	hd, bs            int
	kvLens, qOffsets  []int
	causal            bool
	kv                ops.DType
	qScale            float64
	maxSmem           int
	maxKVLen          int // PagedOptions.MaxKVLen
	spareBlocks       int // NaN-filled pool blocks no sequence owns
	spareTableEntries int // NaN-block entries past each sequence's last block
	softCap           float32
	window            int
	sinks             bool // testSinks(heads) as PagedOptions.Sinks
	splitOnly         bool // long decode caches: not through the prefill kernel (lavapipe takes seconds a dispatch)
}

// testSinks are per-head sink logits of either sign, some far above the
// scores (a sink that takes most of the weight) and some far below.
func testSinks(heads int) []float32 {
	s := make([]float32, heads)
	for h := range s {
		s[h] = float32(6 * math.Sin(1.7*float64(h)+0.3))
	}
	return s
}

func (c pagedCase) qOffset(s int) int {
	if c.qOffsets != nil {
		return c.qOffsets[s]
	}
	if c.causal {
		return c.kvLens[s] - c.nq
	}
	return 0
}

// pagedInputs is one case's data: a pool whose blocks are handed to the
// sequences in shuffled order, every slot that holds no key NaN, and a
// block table whose rows are also shuffled (sequence s reads row rows[s]).
type pagedInputs struct {
	qv           []float32
	kv, vv       []float32 // the pools as written (unrounded)
	kq, vq       []float32 // the pools as stored (f16-rounded for f16)
	blocks       [][]int   // per sequence, its pool blocks in order
	rows         []int     // per sequence, its table row
	width, nPool int
	q, k, v      ops.Tensor
	table, info  ops.Tensor
	sinks        ops.Tensor // unset without c.sinks
}

func newPagedInputs(t *testing.T, ctx *gpu.Context, c pagedCase, seed int64) *pagedInputs {
	t.Helper()
	rng := rand.New(rand.NewSource(seed))
	nSeq := len(c.kvLens)
	in := &pagedInputs{blocks: make([][]int, nSeq), rows: rng.Perm(nSeq + 1)[:nSeq]}
	used := 0
	for _, n := range c.kvLens {
		nb := ceilDivInt(n, c.bs)
		used += nb
		in.width = max(in.width, nb+c.spareTableEntries)
	}
	in.width = max(in.width, 1)
	in.nPool = used + c.spareBlocks + 1 // +1: the NaN block spare table entries name
	perm := rng.Perm(in.nPool)
	nanBlock := perm[in.nPool-1]
	next := 0
	for s, n := range c.kvLens {
		for range ceilDivInt(n, c.bs) {
			in.blocks[s] = append(in.blocks[s], perm[next])
			next++
		}
	}
	qScale := c.qScale
	if qScale == 0 {
		qScale = 2
	}
	row := c.kvh * c.hd
	in.qv = gputest.Rand(rng, nSeq*c.nq*c.heads*c.hd, qScale)
	in.kv = make([]float32, in.nPool*c.bs*row)
	in.vv = make([]float32, len(in.kv))
	for i := range in.kv {
		in.kv[i], in.vv[i] = nanBits, nanBits
	}
	for s, n := range c.kvLens {
		kr, vr := gputest.Rand(rng, n*row, 2), gputest.Rand(rng, n*row, 1)
		for j := 0; j < n; j++ {
			slot := in.blocks[s][j/c.bs]*c.bs + j%c.bs
			copy(in.kv[slot*row:(slot+1)*row], kr[j*row:(j+1)*row])
			copy(in.vv[slot*row:(slot+1)*row], vr[j*row:(j+1)*row])
		}
	}
	// Table rows: a sequence's blocks, then NaN-block entries; the row no
	// sequence uses is all NaN blocks.
	table := make([]uint32, (nSeq+1)*in.width)
	for i := range table {
		table[i] = uint32(nanBlock)
	}
	info := make([]uint32, 0, nSeq*ops.SeqInfoFields)
	for s := range c.kvLens {
		for i, b := range in.blocks[s] {
			table[in.rows[s]*in.width+i] = uint32(b)
		}
		info = append(info, uint32(c.kvLens[s]), uint32(c.qOffset(s)), uint32(in.rows[s]))
	}
	var err error
	in.q, err = ops.FromFloat32(ctx, "q", ops.F32, in.qv, nSeq, c.nq, c.heads, c.hd)
	must(t, err)
	in.k = newKVPool(t, ctx, "kpool", c.kv, in.kv, in.nPool, c.bs, c.kvh, c.hd)
	in.v = newKVPool(t, ctx, "vpool", c.kv, in.vv, in.nPool, c.bs, c.kvh, c.hd)
	in.table, err = ops.FromUint32(ctx, "table", table, nSeq+1, in.width)
	must(t, err)
	in.info, err = ops.FromUint32(ctx, "info", info, nSeq, ops.SeqInfoFields)
	must(t, err)
	if c.sinks {
		in.sinks, err = ops.FromFloat32(ctx, "sinks", ops.F32, testSinks(c.heads), c.heads)
		must(t, err)
	}
	in.kq, err = ops.ReadKVPool(in.k)
	must(t, err)
	in.vq, err = ops.ReadKVPool(in.v)
	must(t, err)
	return in
}

// newKVPool allocates a KV pool of dt holding data (a q8_0 pool
// quantised on the host as ggml does, allocated flat: its rows, not its
// head dim, are whole blocks).
func newKVPool(t testing.TB, ctx *gpu.Context, label string, dt ops.DType, data []float32, shape ...int) ops.Tensor {
	t.Helper()
	n := 1
	for _, d := range shape {
		n *= d
	}
	p, err := ops.New(ctx, label, dt, n)
	must(t, err)
	p = p.View(0, shape...)
	must(t, ops.WriteKVPool(p, data))
	return p
}

func (in *pagedInputs) destroy() {
	for _, x := range []ops.Tensor{in.q, in.k, in.v, in.table, in.info} {
		x.Buf.Destroy()
	}
	if in.sinks.Buf != nil {
		in.sinks.Buf.Destroy()
	}
}

// gather is sequence s's keys (or values) in order, [kvLen, kvh, hd].
func (in *pagedInputs) gather(c pagedCase, s int, pool []float32) []float32 {
	row := c.kvh * c.hd
	out := make([]float32, 0, c.kvLens[s]*row)
	for j := 0; j < c.kvLens[s]; j++ {
		slot := in.blocks[s][j/c.bs]*c.bs + j%c.bs
		out = append(out, pool[slot*row:(slot+1)*row]...)
	}
	return out
}

// reference is sequence s's attention in float64 over its gathered K/V.
func (in *pagedInputs) reference(c pagedCase, s int, kPool, vPool []float32) []float64 {
	qn := c.nq * c.heads * c.hd
	want := make([]float64, qn)
	if c.kvLens[s] == 0 {
		return want
	}
	ref.Attention(want, gputest.F64(in.qv[s*qn:(s+1)*qn]), gputest.F64(in.gather(c, s, kPool)), gputest.F64(in.gather(c, s, vPool)),
		ref.AttentionShape{
			Batch: 1, Queries: c.nq, Heads: c.heads, KVHeads: c.kvh, HeadDim: c.hd,
			KVCap: c.kvLens[s], KVLen: c.kvLens[s], Causal: c.causal, QOffset: c.qOffset(s),
			Scale: 1 / math.Sqrt(float64(c.hd)), SoftCap: float64(c.softCap), Window: c.window, Sinks: c.refSinks(),
		})
	return want
}

func (c pagedCase) refSinks() []float64 {
	if !c.sinks {
		return nil
	}
	return gputest.F64(testSinks(c.heads))
}

// options are the case's PagedOptions; runPaged adds the sinks tensor.
func (c pagedCase) options(variant ops.AttentionVariant) ops.PagedOptions {
	return ops.PagedOptions{Causal: c.causal, MaxKVLen: c.maxKVLen, Variant: variant, MaxWorkgroupStorage: c.maxSmem,
		SoftCap: c.softCap, Window: c.window}
}

// runPaged dispatches AttentionPaged into a poisoned output and reads it.
func runPaged(t *testing.T, ctx *gpu.Context, in *pagedInputs, opt ops.PagedOptions) []float32 {
	t.Helper()
	out, err := ops.New(ctx, "out", ops.F32, in.q.Shape...)
	must(t, err)
	defer out.Buf.Destroy()
	gputest.Poison(t, out)
	if in.sinks.Buf != nil {
		opt.Sinks = &in.sinks
	}
	enc, err := ctx.NewEncoder()
	must(t, err)
	must(t, ops.AttentionPaged(enc, out, in.q, in.k, in.v, in.table, in.info, opt))
	must(t, enc.SubmitAndWait())
	got, err := out.Read()
	must(t, err)
	return got
}

var pagedCases = []pagedCase{
	// The lengths around a block boundary, and a long one, in one decode dispatch.
	{name: "decode_bs16_f32", nq: 1, heads: 8, kvh: 2, hd: 128, bs: 16, kvLens: []int{1, 15, 16, 17, 1001}, causal: true, kv: ops.F32, spareBlocks: 3, spareTableEntries: 2},
	{name: "decode_bs32_f32", nq: 1, heads: 8, kvh: 2, hd: 128, bs: 32, kvLens: []int{17, 1001, 1, 16, 15}, causal: true, kv: ops.F32, spareTableEntries: 1},
	{name: "decode_bs16_f16", nq: 1, heads: 8, kvh: 2, hd: 128, bs: 16, kvLens: []int{1001, 16, 1, 17, 15}, causal: true, kv: ops.F16, spareBlocks: 2},
	{name: "decode_bs32_f16", nq: 1, heads: 8, kvh: 2, hd: 64, bs: 32, kvLens: []int{15, 17, 1001, 16, 1}, causal: true, kv: ops.F16, spareTableEntries: 3},
	{name: "decode_one_seq_kv1", nq: 1, heads: 4, kvh: 4, hd: 64, bs: 16, kvLens: []int{1}, causal: true, kv: ops.F32},
	{name: "decode_mqa", nq: 1, heads: 8, kvh: 1, hd: 128, bs: 16, kvLens: []int{700, 33, 2}, causal: true, kv: ops.F32},
	{name: "decode_noncausal", nq: 1, heads: 4, kvh: 2, hd: 64, bs: 32, kvLens: []int{257, 64, 5}, kv: ops.F32},
	{name: "decode_odd_block_size", nq: 1, heads: 6, kvh: 2, hd: 48, bs: 7, kvLens: []int{50, 7, 8, 1}, causal: true, kv: ops.F16},
	{name: "decode_hd8", nq: 1, heads: 4, kvh: 4, hd: 8, bs: 16, kvLens: []int{299, 3}, causal: true, kv: ops.F16},
	{name: "decode_tight_maxkvlen", nq: 1, heads: 8, kvh: 2, hd: 64, bs: 16, kvLens: []int{400, 9, 130}, causal: true, kv: ops.F32, maxKVLen: 400, spareTableEntries: 4},
	{name: "decode_maxkvlen_too_small", nq: 1, heads: 8, kvh: 2, hd: 64, bs: 16, kvLens: []int{2100, 40}, causal: true, kv: ops.F32, maxKVLen: 100},
	{name: "decode_peaky", nq: 1, heads: 4, kvh: 2, hd: 64, bs: 16, kvLens: []int{300, 77}, causal: true, kv: ops.F32, qScale: 40},
	{name: "decode_empty_sequence", nq: 1, heads: 4, kvh: 2, hd: 64, bs: 16, kvLens: []int{0, 20}, qOffsets: []int{0, 19}, causal: true, kv: ops.F32},
	{name: "verify_nq3", nq: 3, heads: 8, kvh: 2, hd: 64, bs: 16, kvLens: []int{40, 3, 100}, causal: true, kv: ops.F32}, // a few queries per sequence (speculative decoding)
	{name: "prefill_one_seq", nq: 57, heads: 4, kvh: 2, hd: 64, bs: 16, kvLens: []int{57}, causal: true, kv: ops.F32},
	{name: "prefill_chunk_after_cache", nq: 40, heads: 4, kvh: 2, hd: 128, bs: 32, kvLens: []int{140}, causal: true, kv: ops.F16, spareBlocks: 2},
	{name: "prefill_two_seqs", nq: 19, heads: 8, kvh: 2, hd: 64, bs: 16, kvLens: []int{90, 19}, causal: true, kv: ops.F32},
	{name: "prefill_padded_queries", nq: 12, heads: 4, kvh: 1, hd: 64, bs: 16, kvLens: []int{50, 30}, qOffsets: []int{38, 25}, causal: true, kv: ops.F32},
	{name: "prefill_hd256", nq: 21, heads: 2, kvh: 1, hd: 256, bs: 16, kvLens: []int{40}, causal: true, kv: ops.F32},
	{name: "small_tiles_8KiB", nq: 3, heads: 8, kvh: 2, hd: 64, bs: 16, kvLens: []int{333, 50}, causal: true, kv: ops.F16, maxSmem: 8 << 10},

	// Long caches: many key tiles and chunks per sequence, lengths around tile
	// and chunk edges, the Llama-3-8B shape (32/8 heads, head dim 128), q8_0,
	// a window, 8 heads a kv head (8 rows a workgroup), head dim 256.
	{name: "decode_long_llama3_f16", nq: 1, heads: 32, kvh: 8, hd: 128, bs: 16, kvLens: []int{4099, 1, 2500, 65}, causal: true, kv: ops.F16, spareBlocks: 2, spareTableEntries: 1, splitOnly: true},
	{name: "decode_long_q8", nq: 1, heads: 8, kvh: 2, hd: 128, bs: 16, kvLens: []int{5003, 129, 7, 1024}, causal: true, kv: ops.Q8_0, spareBlocks: 1, splitOnly: true},
	{name: "decode_long_swa_f16", nq: 1, heads: 8, kvh: 2, hd: 128, bs: 32, kvLens: []int{6001, 300, 1025}, causal: true, kv: ops.F16, window: 1000, splitOnly: true},
	{name: "decode_long_group8", nq: 1, heads: 16, kvh: 2, hd: 64, bs: 16, kvLens: []int{3001, 64, 1}, causal: true, kv: ops.F32},
	{name: "decode_long_hd256_sinks", nq: 1, heads: 4, kvh: 2, hd: 256, bs: 16, kvLens: []int{2049, 31}, causal: true, kv: ops.F16, sinks: true},

	// Sliding windows (gemma2/3 local layers, gpt-oss), also with kv far past the window.
	{name: "decode_swa", nq: 1, heads: 8, kvh: 2, hd: 64, bs: 16, kvLens: []int{1001, 17, 300, 1, 64, 65}, causal: true, kv: ops.F32, window: 64, spareTableEntries: 1},
	{name: "decode_swa_f16_w1", nq: 1, heads: 4, kvh: 2, hd: 128, bs: 16, kvLens: []int{90, 1, 2}, causal: true, kv: ops.F16, window: 1},
	{name: "decode_swa_odd_maxkvlen", nq: 1, heads: 6, kvh: 3, hd: 48, bs: 7, kvLens: []int{2100, 33, 250}, causal: true, kv: ops.F32, window: 237, maxKVLen: 2100},
	{name: "verify_swa_nq3", nq: 3, heads: 8, kvh: 2, hd: 64, bs: 16, kvLens: []int{400, 3, 41}, causal: true, kv: ops.F32, window: 40},
	{name: "prefill_swa_chunk_after_cache", nq: 57, heads: 4, kvh: 2, hd: 64, bs: 16, kvLens: []int{300}, causal: true, kv: ops.F16, window: 45},
	{name: "prefill_swa_two_seqs", nq: 19, heads: 8, kvh: 2, hd: 64, bs: 16, kvLens: []int{90, 19}, causal: true, kv: ops.F32, window: 16},
	{name: "noncausal_swa", nq: 5, heads: 4, kvh: 2, hd: 64, bs: 32, kvLens: []int{257, 64}, qOffsets: []int{200, 3}, kv: ops.F32, window: 30},
	// Soft-capped scores (gemma2): peaky queries so that the cap matters.
	{name: "decode_softcap", nq: 1, heads: 8, kvh: 4, hd: 128, bs: 16, kvLens: []int{500, 7, 1}, causal: true, kv: ops.F32, qScale: 40, softCap: 5},
	{name: "prefill_softcap", nq: 33, heads: 4, kvh: 2, hd: 64, bs: 16, kvLens: []int{70}, causal: true, kv: ops.F32, qScale: 40, softCap: 50},
	// Attention sinks (gpt-oss), with an empty sequence (zeros, not the sink).
	{name: "decode_sinks", nq: 1, heads: 8, kvh: 2, hd: 64, bs: 16, kvLens: []int{700, 0, 5, 1}, qOffsets: []int{699, 0, 4, 0}, causal: true, kv: ops.F32, sinks: true},
	{name: "prefill_sinks", nq: 40, heads: 8, kvh: 1, hd: 64, bs: 16, kvLens: []int{100}, causal: true, kv: ops.F32, sinks: true},
	// Everything at once: gemma2's local layer and gpt-oss's.
	// q8_0 pools, read and dequantised in the kernels: against the float64
	// reference on the q8_0-rounded K/V at TolF32, and on the unrounded ones
	// at TolQ8KV.
	{name: "decode_q8", nq: 1, heads: 8, kvh: 2, hd: 128, bs: 16, kvLens: []int{1001, 16, 1, 17, 15}, causal: true, kv: ops.Q8_0, spareBlocks: 2, spareTableEntries: 1},
	{name: "decode_q8_odd_block_size", nq: 1, heads: 6, kvh: 2, hd: 48, bs: 7, kvLens: []int{50, 7, 8, 1}, causal: true, kv: ops.Q8_0},
	{name: "decode_q8_mqa_hd80", nq: 1, heads: 4, kvh: 2, hd: 80, bs: 16, kvLens: []int{333, 2}, causal: true, kv: ops.Q8_0},
	{name: "prefill_q8_chunk_after_cache", nq: 41, heads: 4, kvh: 2, hd: 64, bs: 16, kvLens: []int{141, 41}, causal: true, kv: ops.Q8_0, spareBlocks: 1},
	{name: "verify_q8_all_mods", nq: 3, heads: 8, kvh: 2, hd: 64, bs: 16, kvLens: []int{500, 3}, causal: true, kv: ops.Q8_0, window: 50, softCap: 10, sinks: true, qScale: 10},
	{name: "prefill_q8_gemma2_tiny", nq: 12, heads: 4, kvh: 2, hd: 64, bs: 16, kvLens: []int{12}, causal: true, kv: ops.Q8_0, window: 8, softCap: 15},
	{name: "decode_gemma2_local", nq: 1, heads: 8, kvh: 4, hd: 128, bs: 16, kvLens: []int{900, 30}, causal: true, kv: ops.F16, window: 128, softCap: 50, qScale: 20},
	{name: "prefill_gptoss_local", nq: 24, heads: 8, kvh: 2, hd: 64, bs: 16, kvLens: []int{333, 24}, causal: true, kv: ops.F32, window: 128, sinks: true},
	{name: "verify_all_mods", nq: 4, heads: 4, kvh: 2, hd: 64, bs: 16, kvLens: []int{600, 4}, causal: true, kv: ops.F32, window: 50, softCap: 10, sinks: true, qScale: 10},
}

// TestAttentionPaged runs every case through both kernels (and the
// automatic choice), checked by checkPaged.
func TestAttentionPaged(t *testing.T) {
	ctx := gputest.Ctx(t)
	for n, c := range pagedCases {
		for _, variant := range []ops.AttentionVariant{ops.AttentionAuto, ops.AttentionPrefill, ops.AttentionSplitK} {
			if c.splitOnly && variant == ops.AttentionPrefill {
				continue
			}
			t.Run(c.name+"/"+variant.String(), func(t *testing.T) { checkPaged(t, ctx, c, int64(900+n), variant) })
		}
	}
}

// On a software adapter the decode kernel cuts a sequence into few
// chunks; this runs the long and windowed decode cases with a GPU's
// chunking too (up to 64 chunks of one or a few key tiles).
func TestAttentionPagedGPUChunking(t *testing.T) {
	ctx := gputest.Ctx(t)
	defer ops.SetAttentionSplitTarget(512)()
	for n, c := range pagedCases {
		if c.nq > 3 || !(strings.Contains(c.name, "long") || strings.Contains(c.name, "swa") || c.kvLens[0] >= 300) {
			continue
		}
		t.Run(c.name, func(t *testing.T) { checkPaged(t, ctx, c, int64(900+n), ops.AttentionSplitK) })
	}
}

// checkPaged runs one case through variant and checks each sequence
// against the float64 reference over its gathered keys and values:
// TolF32 against the pool as stored; for f16 pools also TolF16 against the
// unrounded values (q8_0: tolQ8KV). Every pool slot no sequence owns, and
// every table entry past a sequence's blocks, leads to NaN: one read of
// them would show.
func checkPaged(t *testing.T, ctx *gpu.Context, c pagedCase, seed int64, variant ops.AttentionVariant) {
	t.Helper()
	in := newPagedInputs(t, ctx, c, seed)
	defer in.destroy()
	got := runPaged(t, ctx, in, c.options(variant))
	qn := c.nq * c.heads * c.hd
	for s := range c.kvLens {
		gotS := got[s*qn : (s+1)*qn]
		name := fmt.Sprintf("%s seq %d (kvLen %d)", c.name, s, c.kvLens[s])
		if c.kvLens[s] == 0 {
			for i, g := range gotS {
				if g != 0 {
					t.Fatalf("%s: element %d is %v, want 0 (no key to see)", name, i, g)
				}
			}
			continue
		}
		gputest.Check(t, name, seed, gotS, in.reference(c, s, in.kq, in.vq), gputest.TolF32)
		switch c.kv {
		case ops.F16:
			gputest.Check(t, name+" vs unrounded K/V", seed, gotS, in.reference(c, s, in.kv, in.vv), gputest.TolF16)
		case ops.Q8_0:
			gputest.Check(t, name+" vs unrounded K/V", seed, gotS, in.reference(c, s, in.kv, in.vv), tolQ8KV)
		}
	}
}

// A sequence's output is bit-identical whether it is computed alone, with
// other sequences, with its blocks elsewhere in the pool, with a grid sized
// for longer sequences, or by Attention over the same keys stored
// contiguously; also with a sliding window, a soft-cap and sinks.
func TestAttentionPagedBatchInvariant(t *testing.T) {
	ctx := gputest.Ctx(t)
	for _, tc := range []struct {
		variant ops.AttentionVariant
		nq      int
		kv      ops.DType
		window  int
		softCap float32
		sinks   bool
	}{
		{variant: ops.AttentionSplitK, nq: 1, kv: ops.F32},
		{variant: ops.AttentionSplitK, nq: 1, kv: ops.F16},
		{variant: ops.AttentionSplitK, nq: 4, kv: ops.F32},
		{variant: ops.AttentionPrefill, nq: 6, kv: ops.F32},
		{variant: ops.AttentionSplitK, nq: 1, kv: ops.F16, window: 100, softCap: 20, sinks: true},
		{variant: ops.AttentionSplitK, nq: 4, kv: ops.F32, window: 61, sinks: true},
		{variant: ops.AttentionPrefill, nq: 6, kv: ops.F32, window: 33, softCap: 7},
		{variant: ops.AttentionSplitK, nq: 1, kv: ops.Q8_0},
		{variant: ops.AttentionSplitK, nq: 4, kv: ops.Q8_0, window: 61, sinks: true},
		{variant: ops.AttentionPrefill, nq: 6, kv: ops.Q8_0, softCap: 7},
	} {
		c := pagedCase{nq: tc.nq, heads: 8, kvh: 2, hd: 64, bs: 16, kvLens: []int{300, 1001, 17, 64, 6}, causal: true, kv: tc.kv, spareBlocks: 5,
			window: tc.window, softCap: tc.softCap, sinks: tc.sinks}
		t.Run(fmt.Sprintf("%s/nq%d/%s/w%d_cap%g_sinks%v", tc.variant, tc.nq, tc.kv, tc.window, tc.softCap, tc.sinks), func(t *testing.T) {
			in := newPagedInputs(t, ctx, c, 31)
			defer in.destroy()
			all := runPaged(t, ctx, in, c.options(tc.variant))
			qn := c.nq * c.heads * c.hd
			same := func(what string, s int, got []float32) {
				t.Helper()
				for i := range got {
					if math.Float32bits(got[i]) != math.Float32bits(all[s*qn+i]) {
						t.Fatalf("sequence %d (kvLen %d), index %d: %s %v, in the batch %v", s, c.kvLens[s], i, what, got[i], all[s*qn+i])
					}
				}
			}
			for s := range c.kvLens {
				// Alone, in a fresh arrangement (other blocks, other table
				// row), with the grid sized for exactly its own length.
				one := c
				one.kvLens = []int{c.kvLens[s]}
				one.maxKVLen = c.kvLens[s]
				solo := newPagedInputs(t, ctx, one, int64(100+s))
				must(t, solo.q.Write(in.qv[s*qn:(s+1)*qn]))
				writePool(t, solo, one, in.gather(c, s, in.kv), in.gather(c, s, in.vv))
				same("alone", s, runPaged(t, ctx, solo, one.options(tc.variant)))
				solo.destroy()

				// Contiguous Attention over the gathered keys (for q8_0, their
				// dequantised values in f32: q·d is exact in f32, so the
				// kernels see the same numbers).
				shape := []int{1, c.kvLens[s], c.kvh, c.hd}
				kt, kk, vv := c.kv, in.gather(c, s, in.kv), in.gather(c, s, in.vv)
				if c.kv == ops.Q8_0 {
					kt, kk, vv = ops.F32, in.gather(c, s, in.kq), in.gather(c, s, in.vq)
				}
				k, err := ops.FromFloat32(ctx, "k", kt, kk, shape...)
				must(t, err)
				v, err := ops.FromFloat32(ctx, "v", kt, vv, shape...)
				must(t, err)
				q, err := ops.FromFloat32(ctx, "q", ops.F32, in.qv[s*qn:(s+1)*qn], 1, c.nq, c.heads, c.hd)
				must(t, err)
				out, err := ops.New(ctx, "out", ops.F32, 1, c.nq, c.heads, c.hd)
				must(t, err)
				gputest.Poison(t, out)
				enc, err := ctx.NewEncoder()
				must(t, err)
				aopt := ops.AttentionOptions{
					Causal: true, QOffset: c.qOffset(s), KVLen: c.kvLens[s], Variant: tc.variant,
					SoftCap: c.softCap, Window: c.window,
				}
				if c.sinks {
					aopt.Sinks = &in.sinks
				}
				must(t, ops.Attention(enc, out, q, k, v, aopt))
				must(t, enc.SubmitAndWait())
				got, err := out.Read()
				must(t, err)
				same("contiguous", s, got)
				for _, x := range []ops.Tensor{k, v, q, out} {
					x.Buf.Destroy()
				}
			}
		})
	}
}

// writePool stores one sequence's keys and values (host order) into a
// single-sequence case's pool at its blocks (the whole pool is rewritten:
// q8_0 pools are written whole).
func writePool(t *testing.T, in *pagedInputs, c pagedCase, k, v []float32) {
	t.Helper()
	row := c.kvh * c.hd
	for j := 0; j < c.kvLens[0]; j++ {
		slot := in.blocks[0][j/c.bs]*c.bs + j%c.bs
		copy(in.kv[slot*row:(slot+1)*row], k[j*row:(j+1)*row])
		copy(in.vv[slot*row:(slot+1)*row], v[j*row:(j+1)*row])
	}
	must(t, ops.WriteKVPool(in.k, in.kv))
	must(t, ops.WriteKVPool(in.v, in.vv))
}

// Causal attention of the first query of a sequence sees only its first
// key: the output is exactly that key's value, in both kernels.
func TestAttentionPagedFirstQuerySeesOnlyFirstKey(t *testing.T) {
	ctx := gputest.Ctx(t)
	for _, variant := range []ops.AttentionVariant{ops.AttentionPrefill, ops.AttentionSplitK} {
		c := pagedCase{nq: 9, heads: 4, kvh: 2, hd: 64, bs: 16, kvLens: []int{9, 30}, qOffsets: []int{0, 0}, causal: true, kv: ops.F16}
		t.Run(variant.String(), func(t *testing.T) {
			in := newPagedInputs(t, ctx, c, 5)
			defer in.destroy()
			got := runPaged(t, ctx, in, c.options(variant))
			row := c.kvh * c.hd
			for s := range c.kvLens {
				v0 := in.blocks[s][0] * c.bs * row
				for h := 0; h < c.heads; h++ {
					kvh := h / (c.heads / c.kvh)
					for d := 0; d < c.hd; d++ {
						g := got[((s*c.nq)*c.heads+h)*c.hd+d]
						w := in.vq[v0+kvh*c.hd+d]
						if math.Float32bits(g) != math.Float32bits(w) {
							t.Fatalf("sequence %d head %d dim %d: got %v, want v[0] = %v exactly", s, h, d, g, w)
						}
					}
				}
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestAttentionPagedRejectsBadShapes(t *testing.T) {
	ctx := gputest.Ctx(t)
	mk := func(dt ops.DType, shape ...int) ops.Tensor {
		x, err := ops.New(ctx, "x", dt, shape...)
		must(t, err)
		t.Cleanup(x.Buf.Destroy)
		return x
	}
	q := mk(ops.F32, 3, 1, 8, 64)
	out := mk(ops.F32, 3, 1, 8, 64)
	k := mk(ops.F32, 10, 16, 2, 64)
	v := mk(ops.F32, 10, 16, 2, 64)
	table := mk(ops.U32, 4, 5)
	info := mk(ops.U32, 3, ops.SeqInfoFields)
	kh := mk(ops.F16, 11, 16, 2, 64)
	kq := mk(ops.Q8_0, 11, 16, 2, 64) // one block more than the views
	enc, err := ctx.NewEncoder()
	must(t, err)
	defer enc.Release()
	bad := []struct {
		name                      string
		out, q, k, v, table, info ops.Tensor
		opt                       ops.PagedOptions
	}{
		{"q not 4-D", mk(ops.F32, 3, 8, 64), mk(ops.F32, 3, 8, 64), k, v, table, info, ops.PagedOptions{}},
		{"pool not 4-D", out, q, mk(ops.F32, 160, 2, 64), mk(ops.F32, 160, 2, 64), table, info, ops.PagedOptions{}},
		{"kv heads do not divide heads", out, q, mk(ops.F32, 10, 16, 3, 64), mk(ops.F32, 10, 16, 3, 64), table, info, ops.PagedOptions{}},
		{"head dims differ", out, q, mk(ops.F32, 10, 16, 2, 32), mk(ops.F32, 10, 16, 2, 32), table, info, ops.PagedOptions{}},
		{"pools differ", out, q, k, mk(ops.F32, 9, 16, 2, 64), table, info, ops.PagedOptions{}},
		{"pool dtypes differ", out, q, k, kh.View(0, 10, 16, 2, 64), table, info, ops.PagedOptions{}},
		{"f32 table", out, q, k, v, mk(ops.F32, 4, 5), info, ops.PagedOptions{}},
		{"table not 2-D", out, q, k, v, mk(ops.U32, 20), info, ops.PagedOptions{}},
		{"info rows differ from nSeq", out, q, k, v, table, mk(ops.U32, 2, ops.SeqInfoFields), ops.PagedOptions{}},
		{"info of two fields", out, q, k, v, table, mk(ops.U32, 3, 2), ops.PagedOptions{}},
		{"maxKVLen beyond the table", out, q, k, v, table, info, ops.PagedOptions{MaxKVLen: 81}},
		{"out aliases the pool", k.View(0, 3, 1, 8, 64), q, k, v, table, info, ops.PagedOptions{}},
		{"out shape", mk(ops.F32, 3, 2, 8, 64), q, k, v, table, info, ops.PagedOptions{}},
		{"f16 pool at an odd element", out, q, kh.View(1, 10, 16, 2, 64), kh.View(1, 10, 16, 2, 64), table, info, ops.PagedOptions{}},
		{"nan scale", out, q, k, v, table, info, ops.PagedOptions{Scale: float32(math.NaN())}},
		{"unknown variant", out, q, k, v, table, info, ops.PagedOptions{Variant: 7}},
		{"negative soft-cap", out, q, k, v, table, info, ops.PagedOptions{SoftCap: -1}},
		{"infinite soft-cap", out, q, k, v, table, info, ops.PagedOptions{SoftCap: float32(math.Inf(1))}},
		{"negative window", out, q, k, v, table, info, ops.PagedOptions{Window: -3}},
		{"sinks per kv head", out, q, k, v, table, info, ops.PagedOptions{Sinks: ptr(mk(ops.F32, 2))}},
		{"f16 sinks", out, q, k, v, table, info, ops.PagedOptions{Sinks: ptr(mk(ops.F16, 8))}},
		{"sinks in out's buffer", out, q, k, v, table, info, ops.PagedOptions{Sinks: ptr(out.View(0, 8))}},
		{"q8_0 pool not whole", out, q, kq.View(0, 10, 16, 2, 64), kq.View(0, 10, 16, 2, 64), table, info, ops.PagedOptions{}},
		{"q8_0 pool view past its start", out, q, kq.View(2048, 10, 16, 2, 64), kq.View(2048, 10, 16, 2, 64), table, info, ops.PagedOptions{}},
		{"q4_0 pools", out, q, mk(ops.Q4_0, 10, 16, 2, 64), mk(ops.Q4_0, 10, 16, 2, 64), table, info, ops.PagedOptions{}},
	}
	for _, b := range bad {
		if err := ops.AttentionPaged(enc, b.out, b.q, b.k, b.v, b.table, b.info, b.opt); err == nil {
			t.Errorf("%s: accepted", b.name)
		} else {
			t.Logf("%s: %v", b.name, err)
		}
	}
}

// BenchmarkAttentionPaged times a continuous-batching decode step: 8
// sequences, one query each, GQA 32/8, head dim 128, against the
// contiguous Attention over the same batch ([8, kvLen, 8, 128] per cache).
// The paged pool's blocks are handed out in shuffled order. SetBytes is
// the K/V bytes read per op, so Go's MB/s is the KV read bandwidth. "mixed"
// spreads the lengths over [kvLen/8, kvLen] (bytes counted per sequence),
// which one contiguous dispatch cannot express. Shapes with kvLen over 1024
// are skipped on a software adapter unless WGLLM_BENCH_FULL is set.
//
//	go test ./ops/ -run '^$' -bench AttentionPaged -benchtime 50x
func BenchmarkAttentionPaged(b *testing.B) {
	ctx := gputest.Ctx(b)
	software := ctx.Software()
	skipBig := software && os.Getenv("WGLLM_BENCH_FULL") == ""
	debug := ctx.Debug
	ctx.Debug = false // per-dispatch validation would dominate the timings
	defer func() { ctx.Debug = debug }()
	const nSeq, heads, kvh, hd = 8, 32, 8, 128
	for _, kvLen := range []int{1024, 4096} {
		for _, kv := range []ops.DType{ops.F16, ops.F32, ops.Q8_0} {
			for _, mode := range []string{"contiguous", "paged_bs16", "paged_bs32", "paged_bs16_mixed"} {
				b.Run(fmt.Sprintf("decode/%dx%d/%s/%s", nSeq, kvLen, kv, mode), func(b *testing.B) {
					if kvLen > 1024 && skipBig {
						b.Skip("big shape on a software adapter (set WGLLM_BENCH_FULL=1 to run)")
					}
					if kv == ops.Q8_0 && mode == "contiguous" {
						b.Skip("q8_0 is a paged-cache type only")
					}
					rng := rand.New(rand.NewSource(1))
					mk := benchTensors(b, ctx, rng)
					q := mk("q", ops.F32, nSeq, 1, heads, hd)
					out := mk("out", ops.F32, nSeq, 1, heads, hd)
					var op func(enc *gpu.Encoder) error
					if mode == "contiguous" {
						k := mk("k", kv, nSeq, kvLen, kvh, hd)
						v := mk("v", kv, nSeq, kvLen, kvh, hd)
						opt := ops.AttentionOptions{Causal: true, QOffset: kvLen - 1, KVLen: kvLen}
						op = func(enc *gpu.Encoder) error { return ops.Attention(enc, out, q, k, v, opt) }
						b.SetBytes(int64(2 * nSeq * kvLen * kvh * hd * kv.Size()))
					} else {
						bs := 16
						if mode == "paged_bs32" {
							bs = 32
						}
						lens := make([]int, nSeq)
						total := 0
						for s := range lens {
							lens[s] = kvLen
							if mode == "paged_bs16_mixed" {
								lens[s] = kvLen/8 + s*(kvLen-kvLen/8)/(nSeq-1)
							}
							total += lens[s]
						}
						k, v, tab, inf := benchPool(b, ctx, rng, mk, kv, lens, kvLen, bs, kvh, hd)
						opt := ops.PagedOptions{Causal: true, MaxKVLen: kvLen}
						op = func(enc *gpu.Encoder) error { return ops.AttentionPaged(enc, out, q, k, v, tab, inf, opt) }
						b.SetBytes(kvBytes(kv, 2*total*kvh*hd))
					}
					benchOps(b, ctx, software, op)
				})
			}
		}
	}
}

// benchTensors returns a maker of random tensors freed with the benchmark.
func benchTensors(b *testing.B, ctx *gpu.Context, rng *rand.Rand) func(string, ops.DType, ...int) ops.Tensor {
	return func(label string, dt ops.DType, shape ...int) ops.Tensor {
		n := 1
		for _, s := range shape {
			n *= s
		}
		if dt == ops.Q8_0 {
			x := newKVPool(b, ctx, label, dt, gputest.Rand(rng, n, 2), shape...)
			b.Cleanup(x.Buf.Destroy)
			return x
		}
		x, err := ops.FromFloat32(ctx, label, dt, gputest.Rand(rng, n, 2), shape...)
		must(b, err)
		b.Cleanup(x.Buf.Destroy)
		return x
	}
}

// kvBytes is the storage of n values of a KV type.
func kvBytes(dt ops.DType, n int) int64 { return int64(n / dt.BlockSize() * dt.BlockBytes()) }

// benchPool makes a paged pool for decode sequences of the given lengths
// (one query each, at the end), its blocks handed out in shuffled order.
func benchPool(b *testing.B, ctx *gpu.Context, rng *rand.Rand, mk func(string, ops.DType, ...int) ops.Tensor,
	kv ops.DType, lens []int, maxLen, bs, kvh, hd int) (k, v, table, info ops.Tensor) {
	nSeq := len(lens)
	width := ceilDivInt(maxLen, bs)
	nBlocks := nSeq * width
	k = mk("kpool", kv, nBlocks, bs, kvh, hd)
	v = mk("vpool", kv, nBlocks, bs, kvh, hd)
	perm := rng.Perm(nBlocks)
	tab := make([]uint32, nSeq*width)
	for i := range tab {
		tab[i] = uint32(perm[i])
	}
	inf := make([]uint32, 0, nSeq*ops.SeqInfoFields)
	for s, n := range lens {
		inf = append(inf, uint32(n), uint32(n-1), uint32(s))
	}
	var err error
	table, err = ops.FromUint32(ctx, "table", tab, nSeq, width)
	must(b, err)
	b.Cleanup(table.Buf.Destroy)
	info, err = ops.FromUint32(ctx, "info", inf, nSeq, ops.SeqInfoFields)
	must(b, err)
	b.Cleanup(info.Buf.Destroy)
	return k, v, table, info
}

// BenchmarkAttentionPagedWindow: a decode step of 8 sequences (GQA 32/8,
// head dim 128, f16 pool) at kvLen 4096, full attention against sliding
// windows of 512 and 128 (gemma2/3 and gpt-oss local layers), where only
// the window's keys are cut into split-K chunks. SetBytes is the K/V bytes
// each variant must read (the window's), so MB/s compares bandwidth and
// ns/op the step's time. On a software adapter kvLen is 1024 unless
// WGLLM_BENCH_FULL is set.
//
//	go test ./ops/ -run '^$' -bench AttentionPagedWindow -benchtime 50x
func BenchmarkAttentionPagedWindow(b *testing.B) {
	ctx := gputest.Ctx(b)
	software := ctx.Software()
	debug := ctx.Debug
	ctx.Debug = false
	defer func() { ctx.Debug = debug }()
	const nSeq, heads, kvh, hd, bs = 8, 32, 8, 128, 16
	kvLen := 4096
	if software && os.Getenv("WGLLM_BENCH_FULL") == "" {
		kvLen = 1024
	}
	for _, window := range []int{0, 512, 128} {
		b.Run(fmt.Sprintf("decode/%dx%d/f16/window%d", nSeq, kvLen, window), func(b *testing.B) {
			rng := rand.New(rand.NewSource(1))
			mk := benchTensors(b, ctx, rng)
			q := mk("q", ops.F32, nSeq, 1, heads, hd)
			out := mk("out", ops.F32, nSeq, 1, heads, hd)
			lens := make([]int, nSeq)
			for s := range lens {
				lens[s] = kvLen
			}
			k, v, tab, inf := benchPool(b, ctx, rng, mk, ops.F16, lens, kvLen, bs, kvh, hd)
			opt := ops.PagedOptions{Causal: true, MaxKVLen: kvLen, Window: window}
			seen := kvLen
			if window > 0 {
				seen = min(kvLen, window)
			}
			b.SetBytes(int64(2 * nSeq * seen * kvh * hd * ops.F16.Size()))
			benchOps(b, ctx, software, func(enc *gpu.Encoder) error { return ops.AttentionPaged(enc, out, q, k, v, tab, inf, opt) })
		})
	}
}

// benchOps records b.N calls of op in one submission and waits once, after
// an untimed warm-up call (pipelines, scratch). On a software adapter the
// calls are cut into submissions of about a second (see benchAttention).
func benchOps(b *testing.B, ctx *gpu.Context, software bool, op func(enc *gpu.Encoder) error) {
	submit := func(n int) {
		enc, err := ctx.NewEncoder()
		must(b, err)
		for i := 0; i < n; i++ {
			must(b, op(enc))
		}
		must(b, enc.SubmitAndWait())
	}
	submit(1)
	perSubmit := b.N
	if software {
		start := time.Now()
		submit(1)
		perSubmit = max(1, int(time.Second/max(time.Since(start), time.Millisecond)))
	}
	b.ResetTimer()
	for done := 0; done < b.N; done += perSubmit {
		submit(min(perSubmit, b.N-done))
	}
	b.StopTimer()
}
