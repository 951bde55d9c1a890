package kv

import (
	"errors"
	"fmt"
	"math"
	"math/rand"
	"slices"
	"testing"

	"github.com/wgllm/wgllm/internal/gputest"
	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/ops/ref"
	"github.com/wgllm/wgllm/runtime/gguf"
	"github.com/wgllm/wgllm/runtime/gpu"
	"github.com/wgllm/wgllm/runtime/half"
	"github.com/wgllm/wgllm/runtime/quant"
)

// pagedHarness drives a Paged cache the way a serving loop does (reserve,
// sync, step, write, submit) and keeps, per sequence and layer, the K and
// V rows it should hold.
type pagedHarness struct {
	t    *testing.T
	ctx  *gpu.Context
	c    *Paged
	step *Step
	rng  *rand.Rand
	want map[int][][]float32 // seq -> per layer: K rows, V rows (2·layer, 2·layer+1)
}

func newPagedHarness(t *testing.T, cfg PagedConfig, seed int64) *pagedHarness {
	t.Helper()
	ctx := gputest.Ctx(t)
	c, err := NewPaged(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	step, err := c.NewStep(cfg.Seqs, 64)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(step.Close)
	return &pagedHarness{t: t, ctx: ctx, c: c, step: step, rng: rand.New(rand.NewSource(seed)), want: map[int][][]float32{}}
}

func (h *pagedHarness) acquire() int {
	h.t.Helper()
	s, err := h.c.Acquire()
	if err != nil {
		h.t.Fatal(err)
	}
	h.want[s] = make([][]float32, 2*h.c.cfg.Layers)
	return s
}

// run reserves the batch's new tokens, syncs, writes random K/V rows for
// them in every layer (one scatter per layer for all sequences) and
// submits.
func (h *pagedHarness) run(batch ...StepSeq) {
	h.t.Helper()
	for _, b := range batch {
		if _, err := h.c.Reserve(b.Seq, b.New); err != nil {
			h.t.Fatal(err)
		}
	}
	h.submit(batch)
}

func (h *pagedHarness) submit(batch []StepSeq) {
	h.t.Helper()
	enc, err := h.ctx.NewEncoder()
	if err != nil {
		h.t.Fatal(err)
	}
	if err := h.c.Sync(enc); err != nil {
		h.t.Fatal(err)
	}
	if err := h.step.Set(h.c, batch); err != nil {
		h.t.Fatal(err)
	}
	row := h.c.row
	for l := 0; l < h.c.cfg.Layers; l++ {
		kv := gputest.Rand(h.rng, h.step.Rows*row, 2)
		vv := gputest.Rand(h.rng, h.step.Rows*row, 2)
		k, _ := ops.FromFloat32(h.ctx, "k", ops.F32, kv, h.step.Rows, row)
		v, _ := ops.FromFloat32(h.ctx, "v", ops.F32, vv, h.step.Rows, row)
		h.t.Cleanup(k.Buf.Destroy)
		h.t.Cleanup(v.Buf.Destroy)
		if err := h.c.Write(enc, l, k, v, h.step.Slots); err != nil {
			h.t.Fatal(err)
		}
		r := 0
		for _, b := range batch {
			w := h.want[b.Seq]
			w[2*l] = append(w[2*l], kv[r*row:(r+b.New)*row]...)
			w[2*l+1] = append(w[2*l+1], vv[r*row:(r+b.New)*row]...)
			r += b.New
		}
	}
	if err := enc.SubmitAndWait(); err != nil {
		h.t.Fatal(err)
	}
}

// check reads every layer of seq back and compares it with what was
// written: bit for bit for f32 and f16 (f16-rounded); for q8_0, ggml's
// quantisation of each token's rows (quantize_row_q8_0_ref, dequantised)
// within one quantisation step, amax/127 of the block, as the GPU's
// division may round x/d the other way at a boundary.
func (h *pagedHarness) check(seq int) {
	h.t.Helper()
	w := h.want[seq]
	for l := 0; l < h.c.cfg.Layers; l++ {
		k, v, err := h.c.Read(l, seq)
		if err != nil {
			h.t.Fatal(err)
		}
		for i, pair := range [][2][]float32{{k, w[2*l]}, {v, w[2*l+1]}} {
			got, want := pair[0], pair[1]
			if len(got) != len(want) {
				h.t.Fatalf("seq %d layer %d tensor %d: %d values, want %d", seq, l, i, len(got), len(want))
			}
			var stored []float32
			if h.c.cfg.DType == ops.Q8_0 {
				blocks, err := quant.Quantize(gguf.Q8_0, want)
				if err != nil {
					h.t.Fatal(err)
				}
				if stored, err = quant.Dequantize(gguf.Q8_0, blocks, len(want)); err != nil {
					h.t.Fatal(err)
				}
			}
			for j := range want {
				exp := want[j]
				if h.c.cfg.DType == ops.F16 {
					exp = half.ToFloat32(half.FromFloat32(exp))
				}
				if h.c.cfg.DType == ops.Q8_0 {
					if step := blockMax(want, j) / 127; math.Abs(float64(got[j]-stored[j])) > 1.01*step {
						h.t.Fatalf("seq %d layer %d tensor %d element %d (token %d): %v, want %v (ggml's q8_0; step %v)", seq, l, i, j, j/h.c.row, got[j], stored[j], step)
					}
					continue
				}
				if got[j] != exp {
					h.t.Fatalf("seq %d layer %d tensor %d element %d (token %d): %v, want %v", seq, l, i, j, j/h.c.row, got[j], exp)
				}
			}
		}
	}
}

func (h *pagedHarness) truncate(seq, n int) {
	h.t.Helper()
	if err := h.c.Truncate(seq, n); err != nil {
		h.t.Fatal(err)
	}
	for i := range h.want[seq] {
		h.want[seq][i] = h.want[seq][i][:n*h.c.row]
	}
}

// checkTable compares the GPU block table with the host's block lists.
func (h *pagedHarness) checkTable() {
	h.t.Helper()
	tab, err := h.c.BlockTable().ReadUint32()
	if err != nil {
		h.t.Fatal(err)
	}
	for s := range h.want {
		for i, b := range h.c.Blocks(s) {
			if got := tab[s*h.c.MaxBlocksPerSeq()+i]; got != uint32(b) {
				h.t.Fatalf("table row %d entry %d: %d on the GPU, want %d", s, i, got, b)
			}
		}
	}
}

func (h *pagedHarness) expectBlocks(used int) {
	h.t.Helper()
	if h.c.BlocksUsed() != used || h.c.BlocksFree() != h.c.BlocksTotal()-used {
		h.t.Fatalf("blocks used %d, free %d of %d; want %d used", h.c.BlocksUsed(), h.c.BlocksFree(), h.c.BlocksTotal(), used)
	}
}

// blockMax is the largest magnitude in value j's q8_0 block.
func blockMax(x []float32, j int) float64 {
	m := 0.0
	for _, v := range x[j/32*32 : j/32*32+32] {
		m = math.Max(m, math.Abs(float64(v)))
	}
	return m
}

// poolTypes are the KV storage types the harness tests run with.
var poolTypes = []ops.DType{ops.F32, ops.F16, ops.Q8_0}

// headDim is hd, or 32 for q8_0, whose rows must be whole blocks of 32.
func headDim(dt ops.DType, hd int) int {
	if dt == ops.Q8_0 {
		return 32
	}
	return hd
}

func TestPagedInterleavedWrites(t *testing.T) {
	for _, dt := range poolTypes {
		t.Run(dt.String(), func(t *testing.T) {
			h := newPagedHarness(t, PagedConfig{Layers: 2, KVHeads: 3, HeadDim: headDim(dt, 6), BlockSize: 4, Blocks: 12, Seqs: 3, MaxSeqLen: 20, DType: dt}, 1)
			a, b, c := h.acquire(), h.acquire(), h.acquire()
			h.run(StepSeq{a, 5}, StepSeq{b, 3})
			h.expectBlocks(2 + 1)
			h.run(StepSeq{b, 1}, StepSeq{a, 1}, StepSeq{c, 7}) // b fills its block exactly
			h.expectBlocks(2 + 1 + 2)
			h.run(StepSeq{b, 4})
			h.run(StepSeq{c, 1}, StepSeq{a, 1})
			h.expectBlocks(2 + 2 + 2)
			for _, s := range []int{a, b, c} {
				h.check(s)
			}
			h.checkTable()
			// Every token of every sequence has its own slot.
			seen := map[uint32]string{}
			for _, s := range []int{a, b, c} {
				for pos := 0; pos < h.c.Len(s); pos++ {
					slot, err := h.c.Slot(s, pos)
					if err != nil {
						t.Fatal(err)
					}
					if prev, dup := seen[slot]; dup {
						t.Fatalf("seq %d token %d shares slot %d with %s", s, pos, slot, prev)
					}
					seen[slot] = fmt.Sprintf("seq %d token %d", s, pos)
				}
			}
		})
	}
}

func TestPagedFullPool(t *testing.T) {
	h := newPagedHarness(t, PagedConfig{Layers: 1, KVHeads: 1, HeadDim: 4, BlockSize: 4, Blocks: 4, Seqs: 2, MaxSeqLen: 32, DType: ops.F32}, 2)
	a, b := h.acquire(), h.acquire()
	h.run(StepSeq{a, 10}) // 3 blocks
	tableBefore := slices.Clone(h.c.host)
	if _, err := h.c.Reserve(b, 5); !errors.Is(err, ErrFull) {
		t.Fatalf("5 tokens with one free block: %v", err)
	} else {
		t.Log(err)
	}
	if h.c.Len(b) != 0 || len(h.c.Blocks(b)) != 0 || !slices.Equal(tableBefore, h.c.host) {
		t.Fatalf("a failed reserve changed the cache: len %d, blocks %v", h.c.Len(b), h.c.Blocks(b))
	}
	h.expectBlocks(3)
	h.run(StepSeq{b, 4}) // exactly the last block
	h.expectBlocks(4)
	if _, err := h.c.Reserve(a, 3); !errors.Is(err, ErrFull) || h.c.Len(a) != 10 {
		t.Fatalf("growing into a fifth block: %v, len %d", err, h.c.Len(a))
	}
	h.run(StepSeq{a, 2}) // fits a's last block
	h.check(a)
	h.check(b)
	if _, err := h.c.Reserve(b, 29); !errors.Is(err, ErrFull) {
		t.Fatalf("past MaxSeqLen: %v", err)
	}
	if _, err := h.c.Acquire(); !errors.Is(err, ErrFull) {
		t.Fatalf("third slot of two: %v", err)
	}
	// Freeing blocks makes room at once.
	h.c.Release(b)
	h.expectBlocks(3)
	h.run(StepSeq{a, 4})
	h.check(a)
}

func TestPagedTruncateReleaseReuse(t *testing.T) {
	for _, dt := range poolTypes {
		t.Run(dt.String(), func(t *testing.T) {
			h := newPagedHarness(t, PagedConfig{Layers: 2, KVHeads: 2, HeadDim: headDim(dt, 4), BlockSize: 4, Blocks: 6, Seqs: 3, MaxSeqLen: 24, DType: dt}, 3)
			a, b := h.acquire(), h.acquire()
			h.run(StepSeq{a, 9}, StepSeq{b, 2})
			h.expectBlocks(3 + 1)
			h.truncate(a, 5) // keeps blocks 0 and 1 (token 4 in block 1)
			h.expectBlocks(2 + 1)
			h.check(a)
			h.run(StepSeq{a, 6}) // 11 tokens: a third block again
			h.expectBlocks(3 + 1)
			h.check(a)
			h.check(b)
			if err := h.c.Truncate(a, 12); err == nil {
				t.Error("truncate beyond the length accepted")
			}
			h.truncate(a, 0)
			h.expectBlocks(1)
			// Released blocks are reused at once, old contents overwritten.
			freed := h.c.Blocks(b)
			h.c.Release(b)
			h.expectBlocks(0)
			delete(h.want, b)
			c := h.acquire()
			h.run(StepSeq{c, 24}, StepSeq{a, 0})
			h.expectBlocks(6)
			if !slices.Contains(h.c.Blocks(c), freed[0]) {
				t.Errorf("released block %d not reused by %v", freed[0], h.c.Blocks(c))
			}
			h.check(c)
			h.checkTable()
		})
	}
}

// Fork shares the prefix's blocks; the first writer into the shared partly
// filled block gets a copy; truncating into a shared full block and
// appending copies it too; releases free exactly the unshared blocks.
func TestPagedForkCopyOnWrite(t *testing.T) {
	for _, dt := range poolTypes {
		t.Run(dt.String(), func(t *testing.T) {
			h := newPagedHarness(t, PagedConfig{Layers: 2, KVHeads: 2, HeadDim: headDim(dt, 8), BlockSize: 4, Blocks: 10, Seqs: 3, MaxSeqLen: 16, DType: dt}, 4)
			a := h.acquire()
			h.run(StepSeq{a, 6}) // blocks x (full), y (2 of 4)
			b, err := h.c.Fork(a)
			if err != nil {
				t.Fatal(err)
			}
			h.want[b] = make([][]float32, len(h.want[a]))
			for i := range h.want[a] {
				h.want[b][i] = slices.Clone(h.want[a][i])
			}
			h.expectBlocks(2)
			if !slices.Equal(h.c.Blocks(a), h.c.Blocks(b)) {
				t.Fatalf("fork has blocks %v, source %v", h.c.Blocks(b), h.c.Blocks(a))
			}
			x, y := h.c.Blocks(a)[0], h.c.Blocks(a)[1]
			// a appends 3 (copy of y, then a new block), b appends 1 (y is
			// its own now): x, y, y', z.
			h.run(StepSeq{a, 3}, StepSeq{b, 1})
			h.expectBlocks(4)
			if ba, bb := h.c.Blocks(a), h.c.Blocks(b); ba[0] != x || bb[0] != x || bb[1] != y || ba[1] == y {
				t.Fatalf("after the appends: a %v, b %v (x %d, y %d)", ba, bb, x, y)
			}
			h.check(a)
			h.check(b)
			h.checkTable()
			// a truncated into the shared full block x and appended to: x is
			// copied, b keeps its x.
			h.truncate(a, 2)
			h.expectBlocks(2) // x (shared), y (b); y' and z are free again
			h.run(StepSeq{a, 1})
			h.expectBlocks(3) // x (b), y (b), x' (a)
			if h.c.Blocks(a)[0] == x {
				t.Fatal("a still writes into the shared block")
			}
			h.check(a)
			h.check(b)
			// Forking a fork, then releasing in any order frees exactly the
			// blocks nobody holds.
			c, err := h.c.Fork(b)
			if err != nil {
				t.Fatal(err)
			}
			h.want[c] = make([][]float32, len(h.want[b]))
			for i := range h.want[b] {
				h.want[c][i] = slices.Clone(h.want[b][i])
			}
			h.c.Release(b)
			h.expectBlocks(3)
			h.check(c)
			h.run(StepSeq{c, 5}) // 12 tokens: fills y, two new blocks... 7+5 = 12: y full, one new
			h.expectBlocks(4)
			h.check(c)
			h.check(a)
			h.c.Release(c)
			h.expectBlocks(1)
			h.c.Release(a)
			h.expectBlocks(0)
		})
	}
}

// Paged attention over blocks the cache handed out and filled (f16 and
// q8_0), for a batch that skips a sequence and lists the others out of
// slot order, against the float64 reference over the tokens as stored
// (Read, which check compares with what was written).
func TestPagedCacheAttention(t *testing.T) {
	const heads, kvHeads, hd = 8, 2, 64
	for _, dt := range []ops.DType{ops.F16, ops.Q8_0} {
		t.Run(dt.String(), func(t *testing.T) {
			h := newPagedHarness(t, PagedConfig{Layers: 2, KVHeads: kvHeads, HeadDim: hd, BlockSize: 16, Blocks: 40, Seqs: 4, MaxSeqLen: 256, DType: dt}, 5)
			a, b, c := h.acquire(), h.acquire(), h.acquire()
			h.run(StepSeq{a, 40}, StepSeq{b, 17})
			h.run(StepSeq{c, 33}, StepSeq{b, 16})
			for i := 0; i < 3; i++ { // decode steps
				h.run(StepSeq{c, 1}, StepSeq{a, 1}, StepSeq{b, 1})
			}
			h.run(StepSeq{c, 1}, StepSeq{a, 1}) // the step attention is computed for
			batch := []StepSeq{{c, 1}, {a, 1}}
			if err := h.step.Set(h.c, batch); err != nil {
				t.Fatal(err)
			}
			rng := rand.New(rand.NewSource(6))
			qv := gputest.Rand(rng, len(batch)*heads*hd, 2)
			q, _ := ops.FromFloat32(h.ctx, "q", ops.F32, qv, len(batch), 1, heads, hd)
			defer q.Buf.Destroy()
			out, _ := ops.New(h.ctx, "out", ops.F32, len(batch), 1, heads, hd)
			defer out.Buf.Destroy()
			for l := 0; l < 2; l++ {
				gputest.Poison(t, out)
				enc, err := h.ctx.NewEncoder()
				if err != nil {
					t.Fatal(err)
				}
				if err := ops.AttentionPaged(enc, out, q, h.c.Keys(l), h.c.Values(l), h.c.BlockTable(), h.step.Info,
					ops.PagedOptions{Causal: true, MaxKVLen: 128}); err != nil {
					t.Fatal(err)
				}
				if err := enc.SubmitAndWait(); err != nil {
					t.Fatal(err)
				}
				got, err := out.Read()
				if err != nil {
					t.Fatal(err)
				}
				for i, bs := range batch {
					h.check(bs.Seq)
					n := h.c.Len(bs.Seq)
					k, v, err := h.c.Read(l, bs.Seq)
					if err != nil {
						t.Fatal(err)
					}
					qn := heads * hd
					want := make([]float64, qn)
					ref.Attention(want, gputest.F64(qv[i*qn:(i+1)*qn]), gputest.F64(k), gputest.F64(v), ref.AttentionShape{
						Batch: 1, Queries: 1, Heads: heads, KVHeads: kvHeads, HeadDim: hd, KVCap: n, KVLen: n,
						Causal: true, QOffset: n - 1, Scale: 1 / math.Sqrt(hd),
					})
					gputest.Check(t, fmt.Sprintf("layer %d seq %d (%d tokens)", l, bs.Seq, n), 6, got[i*qn:(i+1)*qn], want, gputest.TolF32)
				}
			}
		})
	}
}

// Bytes per token: f32 4, f16 2, q8_0 34/32 per value (K and V of every
// layer), and the pools take exactly what PoolBytes says.
func TestPagedBytes(t *testing.T) {
	ctx := gputest.Ctx(t)
	for _, tc := range []struct {
		dt   ops.DType
		want uint64
	}{{ops.F32, 2 * 3 * 96 * 4}, {ops.F16, 2 * 3 * 96 * 2}, {ops.Q8_0, 2 * 3 * 96 * 34 / 32}} {
		cfg := PagedConfig{Layers: 3, KVHeads: 3, HeadDim: 32, BlockSize: 16, Blocks: 5, Seqs: 2, MaxSeqLen: 64, DType: tc.dt}
		if got := cfg.TokenBytes(); got != tc.want {
			t.Errorf("%s: %d bytes per token, want %d", tc.dt, got, tc.want)
		}
		c, err := NewPaged(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		var held uint64
		for l := 0; l < cfg.Layers; l++ {
			held += c.Keys(l).Buf.Size() + c.Values(l).Buf.Size()
		}
		if held != cfg.PoolBytes() || c.Bytes() != held+c.BlockTable().Bytes() {
			t.Errorf("%s: pools hold %d bytes, PoolBytes %d, Bytes %d", tc.dt, held, cfg.PoolBytes(), c.Bytes())
		}
		if want := uint64(cfg.Blocks*cfg.BlockSize) * tc.want; cfg.PoolBytes() != want {
			t.Errorf("%s: PoolBytes %d, want %d (%d tokens)", tc.dt, cfg.PoolBytes(), want, cfg.Blocks*cfg.BlockSize)
		}
		c.Close()
	}
}

func TestPagedBadInput(t *testing.T) {
	ctx := gputest.Ctx(t)
	for _, cfg := range []PagedConfig{
		{Layers: 1, KVHeads: 1, HeadDim: 4, BlockSize: 0, Blocks: 4, Seqs: 1, MaxSeqLen: 4, DType: ops.F32},
		{Layers: 1, KVHeads: 1, HeadDim: 4, BlockSize: 4, Blocks: 0, Seqs: 1, MaxSeqLen: 4, DType: ops.F32},
		{Layers: 1, KVHeads: 1, HeadDim: 4, BlockSize: 4, Blocks: 4, Seqs: 1, MaxSeqLen: 0, DType: ops.F32},
		{Layers: 1, KVHeads: 1, HeadDim: 3, BlockSize: 4, Blocks: 4, Seqs: 1, MaxSeqLen: 4, DType: ops.F16},
		{Layers: 1, KVHeads: 1, HeadDim: 4, BlockSize: 4, Blocks: 4, Seqs: 1, MaxSeqLen: 4, DType: ops.Q8_0},  // rows not whole blocks
		{Layers: 1, KVHeads: 1, HeadDim: 32, BlockSize: 3, Blocks: 4, Seqs: 1, MaxSeqLen: 4, DType: ops.Q8_0}, // a block's scales not whole words
		{Layers: 1, KVHeads: 1, HeadDim: 32, BlockSize: 4, Blocks: 4, Seqs: 1, MaxSeqLen: 4, DType: ops.Q4_0},
	} {
		if c, err := NewPaged(ctx, cfg); err == nil {
			c.Close()
			t.Errorf("config %+v accepted", cfg)
		}
	}
	h := newPagedHarness(t, PagedConfig{Layers: 1, KVHeads: 1, HeadDim: 4, BlockSize: 4, Blocks: 4, Seqs: 2, MaxSeqLen: 8, DType: ops.F32}, 7)
	a := h.acquire()
	if _, err := h.c.Reserve(1, 1); err == nil {
		t.Error("reserve on a free slot accepted")
	}
	if _, err := h.c.Reserve(a, -1); err == nil {
		t.Error("negative reserve accepted")
	}
	if _, err := h.c.Fork(1); err == nil {
		t.Error("fork of a free slot accepted")
	}
	if _, err := h.c.Slot(a, 0); err == nil {
		t.Error("slot of a token not reserved accepted")
	}
	if err := h.step.Set(h.c, []StepSeq{{a, 1}}); err == nil {
		t.Error("step with more new tokens than the sequence holds accepted")
	}
	if err := h.step.Set(h.c, nil); err == nil {
		t.Error("empty step accepted")
	}
	enc, _ := ctx.NewEncoder()
	defer enc.Release()
	k, _ := ops.New(ctx, "k", ops.F32, 2, 3)
	defer k.Buf.Destroy()
	slots, _ := ops.New(ctx, "slots", ops.U32, 2)
	defer slots.Buf.Destroy()
	if err := h.c.Write(enc, 0, k, k, slots); err == nil {
		t.Error("write of rows of the wrong width accepted")
	}
	if err := h.c.Write(enc, 1, k, k, slots); err == nil {
		t.Error("write to a missing layer accepted")
	}
	if h.c.Keys(1).Buf != nil || h.c.Values(-1).Buf != nil {
		t.Error("pool of a missing layer has a buffer")
	}
}
