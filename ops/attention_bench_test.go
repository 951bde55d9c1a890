package ops_test

import (
	"fmt"
	"math/rand"
	"os"
	"testing"
	"time"

	"github.com/wgllm/wgllm/internal/gputest"
	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/runtime/gpu"
)

// BenchmarkAttention times flash attention over many dispatches recorded in
// one submission with one wait (pipelines and scratch are warmed up outside
// the timer). prefill reports GFLOP/s, counting 4·heads·headDim FLOPs per
// visible (query, key) pair (q·k and p·v, a multiply-add per element each);
// decode sets the K/V bytes read per op, so Go reports the bandwidth (MB/s).
// The big shapes are skipped on a software adapter unless WGLLM_BENCH_FULL
// is set.
//
//	go test ./ops/ -run '^$' -bench Attention -benchtime 50x
func BenchmarkAttention(b *testing.B) {
	ctx := gputest.BenchCtx(b, false)
	software := ctx.Software()
	skipBig := software && os.Getenv("WGLLM_BENCH_FULL") == ""

	prefill := []struct {
		nq, heads, kvh, hd int
		big                bool
	}{
		{64, 32, 8, 128, false},
		{512, 32, 8, 128, true}, // Llama-3-8B-like: 32 heads, 8 kv heads
		{512, 32, 32, 64, true},
	}
	for _, p := range prefill {
		b.Run(fmt.Sprintf("prefill/%dx%dx%d", p.nq, p.heads, p.hd), func(b *testing.B) {
			if p.big && skipBig {
				b.Skip("big shape on a software adapter (set WGLLM_BENCH_FULL=1 to run)")
			}
			c := attnCase{batch: 1, nq: p.nq, heads: p.heads, kvh: p.kvh, hd: p.hd, cap: p.nq, kvLen: p.nq, causal: true, kv: ops.F32}
			pairs := p.nq * (p.nq + 1) / 2 // causal: query i sees i+1 keys
			flops := 4 * float64(pairs) * float64(p.heads*p.hd)
			benchAttention(b, ctx, c, ops.AttentionAuto, software)
			b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}

	decode := []struct {
		kvLen   int
		kv      ops.DType
		variant ops.AttentionVariant
		suffix  string
		big     bool
	}{
		{512, ops.F32, ops.AttentionAuto, "", false},
		{4096, ops.F32, ops.AttentionAuto, "", true},
		{4096, ops.F16, ops.AttentionAuto, "_f16", true},
		{4096, ops.F32, ops.AttentionPrefill, "_nosplit", true}, // the same op without split-K, for comparison
	}
	for _, d := range decode {
		b.Run(fmt.Sprintf("decode/kv%d%s", d.kvLen, d.suffix), func(b *testing.B) {
			if d.big && skipBig {
				b.Skip("big shape on a software adapter (set WGLLM_BENCH_FULL=1 to run)")
			}
			c := attnCase{batch: 1, nq: 1, heads: 32, kvh: 8, hd: 128, cap: d.kvLen, kvLen: d.kvLen,
				causal: true, qOffset: d.kvLen - 1, kv: d.kv}
			b.SetBytes(int64(2 * d.kvLen * c.kvh * c.hd * d.kv.Size()))
			benchAttention(b, ctx, c, d.variant, software)
		})
	}
}

// benchAttention records b.N attention dispatches in one submission and
// waits once; a short warm-up run compiles the pipelines outside the timer.
// On a software adapter the dispatches are cut into submissions of about a
// second: wgpu's blocking poll gives up after 5 s and reports the queue
// idle while lavapipe is still running, and the next call then crashes
// (gfx-rs/wgpu#4589).
func benchAttention(b *testing.B, ctx *gpu.Context, c attnCase, variant ops.AttentionVariant, software bool) {
	rng := rand.New(rand.NewSource(1))
	mk := func(label string, dt ops.DType, scale float64, shape ...int) ops.Tensor {
		n := 1
		for _, s := range shape {
			n *= s
		}
		x, err := ops.FromFloat32(ctx, label, dt, gputest.Rand(rng, n, scale), shape...)
		must(b, err)
		b.Cleanup(x.Buf.Destroy)
		return x
	}
	q := mk("q", ops.F32, 2, c.batch, c.nq, c.heads, c.hd)
	k := mk("k", c.kv, 2, c.batch, c.cap, c.kvh, c.hd)
	v := mk("v", c.kv, 1, c.batch, c.cap, c.kvh, c.hd)
	out, err := ops.New(ctx, "out", ops.F32, c.batch, c.nq, c.heads, c.hd)
	must(b, err)
	b.Cleanup(out.Buf.Destroy)
	opt := ops.AttentionOptions{Causal: c.causal, QOffset: c.qOffset, KVLen: c.kvLen, Variant: variant}
	submit := func(n int) {
		enc, err := ctx.NewEncoder()
		must(b, err)
		for i := 0; i < n; i++ {
			must(b, ops.Attention(enc, out, q, k, v, opt))
		}
		must(b, enc.SubmitAndWait())
	}
	submit(1) // compiles the pipelines, allocates the split-K scratch
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

// BenchmarkAttentionDecode is the decode step's attention at the
// Llama-3-8B shape (32 heads, 8 kv heads, head dim 128, f16 paged pool of
// 16-token blocks, as runtime/kv lays it out): split-K and its combine for
// 1 and 16 sequences of one query at kvLen 512, 4096 and 16384. It reports
// the K/V bytes read per second as GB/s (an H200 reads ~3,900 GB/s through
// WebGPU); ns/op is the op's time. Only kvLen 512 with one sequence runs on
// a software adapter unless WGLLM_BENCH_FULL is set.
//
//	go test ./ops/ -run '^$' -bench AttentionDecode -benchtime 200x
func BenchmarkAttentionDecode(b *testing.B) {
	ctx := gputest.BenchCtx(b, false)
	software := ctx.Software()
	skipBig := software && os.Getenv("WGLLM_BENCH_FULL") == ""
	const heads, kvh, hd, bs = 32, 8, 128, 16
	for _, kvLen := range []int{512, 4096, 16384} {
		for _, nSeq := range []int{1, 16} {
			b.Run(fmt.Sprintf("llama3-8b/f16/kv%d/seq%d", kvLen, nSeq), func(b *testing.B) {
				if skipBig && (kvLen > 512 || nSeq > 1) {
					b.Skip("big shape on a software adapter (set WGLLM_BENCH_FULL=1 to run)")
				}
				rng := rand.New(rand.NewSource(1))
				mk := benchTensors(b, ctx, rng)
				q := mk("q", ops.F32, nSeq, 1, heads, hd)
				out := mk("out", ops.F32, nSeq, 1, heads, hd)
				lens := make([]int, nSeq)
				for s := range lens {
					lens[s] = kvLen
				}
				k, v, tab, inf := benchPool(b, ctx, rng, mk, ops.F16, lens, kvLen, bs, kvh, hd)
				opt := ops.PagedOptions{Causal: true, MaxKVLen: kvLen}
				benchOps(b, ctx, software, func(enc *gpu.Encoder) error { return ops.AttentionPaged(enc, out, q, k, v, tab, inf, opt) })
				kvRead := float64(2 * nSeq * kvLen * kvh * hd * ops.F16.Size())
				b.ReportMetric(kvRead*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s")
			})
		}
	}
}
