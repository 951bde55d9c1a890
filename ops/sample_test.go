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
	"github.com/wgllm/wgllm/runtime/sample"
)

// sampleRow is one row of a GPU sampling test.
type sampleRow struct {
	logits []float32
	p      ops.SampleParams
	window []int32 // the penalty window's tokens
}

// gpuSample runs ops.Sample on rows (vocabulary vocab, windows of wcap
// tokens; each row writes its token to window slot len(window) when there
// is room) with the output poisoned first, and returns the tokens and the
// windows after the call.
func gpuSample(t testing.TB, ctx *gpu.Context, rng *rand.Rand, vocab, wcap int, rows []sampleRow) ([]uint32, [][]uint32) {
	t.Helper()
	n := len(rows)
	flat := make([]float32, 0, n*vocab)
	ps := make([]ops.SampleParams, n)
	win := make([]uint32, n*wcap)
	for i, r := range rows {
		flat = append(flat, r.logits...)
		ps[i] = r.p
		ps[i].WindowLen = len(r.window)
		ps[i].WindowSlot, ps[i].WindowRow = ops.NoWindowSlot, i
		if len(r.window) < wcap {
			ps[i].WindowSlot = len(r.window)
		}
		for j, id := range r.window {
			win[i*wcap+j] = uint32(id)
		}
	}
	// Logits at an offset into a larger buffer, so offsets are exercised.
	all := append(gputest.Rand(rng, 7, 1), flat...)
	lbuf, err := ops.FromFloat32(ctx, "logits", ops.F32, all, len(all))
	must(t, err)
	defer lbuf.Buf.Destroy()
	logits := lbuf.View(7, n, vocab)
	raw := make([]byte, 4*ops.SampleWords*n)
	must(t, ops.PackSampleParams(raw, ps, vocab, n, wcap))
	pbuf, err := ops.New(ctx, "params", ops.U32, n*ops.SampleWords)
	must(t, err)
	defer pbuf.Buf.Destroy()
	must(t, pbuf.Buf.Write(0, raw))
	wbuf, err := ops.FromUint32(ctx, "window", win, n, wcap)
	must(t, err)
	defer wbuf.Buf.Destroy()
	dbuf, err := ops.New(ctx, "next", ops.U32, n+2)
	must(t, err)
	defer dbuf.Buf.Destroy()
	gputest.Poison(t, dbuf)
	dst := dbuf.View(1, n)
	enc, err := ctx.NewEncoder()
	must(t, err)
	must(t, ops.Sample(enc, dst, logits, pbuf.View(0, n, ops.SampleWords), wbuf))
	must(t, enc.SubmitAndWait())
	got, err := dst.ReadUint32()
	must(t, err)
	for i, g := range got {
		if g != ops.SampleInvalid && int(g) >= vocab {
			t.Fatalf("row %d: token %#x was not written or is outside the vocabulary of %d", i, g, vocab)
		}
	}
	wflat, err := wbuf.ReadUint32()
	must(t, err)
	wins := make([][]uint32, n)
	for i := range wins {
		wins[i] = wflat[i*wcap : (i+1)*wcap]
	}
	return got, wins
}

// cpuSampler is runtime/sample's sampler for p with window accepted.
func cpuSampler(t testing.TB, p ops.SampleParams, vocab int, window []int32) *sample.Sampler {
	t.Helper()
	s, err := sample.New(sample.Params{Temperature: p.Temperature, TopK: p.TopK, TopP: p.TopP, MinP: p.MinP,
		RepeatPenalty: p.RepeatPenalty, FrequencyPenalty: p.FrequencyPenalty, PresencePenalty: p.PresencePenalty,
		PenaltyLastN: max(len(window), 1)}, vocab)
	must(t, err)
	must(t, s.Accept(window...))
	return s
}

func refParams(p ops.SampleParams) ref.SampleParams {
	return ref.SampleParams{Temperature: float64(p.Temperature), TopK: p.TopK, TopP: float64(p.TopP), MinP: float64(p.MinP),
		RepeatPenalty: float64(p.RepeatPenalty), FrequencyPenalty: float64(p.FrequencyPenalty), PresencePenalty: float64(p.PresencePenalty)}
}

func greedyParams() ops.SampleParams { return ops.SampleParams{TopP: 1, RepeatPenalty: 1} }

func randWindow(rng *rand.Rand, n, vocab int) []int32 {
	w := make([]int32, n)
	for i := range w {
		w[i] = int32(rng.Intn(min(vocab, 1+n/2))) // repeats, so counts > 1
	}
	return w
}

// TestPhiloxKnownAnswers: Random123's known-answer vectors for
// philox4x32_10.
func TestPhiloxKnownAnswers(t *testing.T) {
	for _, c := range []struct {
		ctr  [4]uint32
		key  [2]uint32
		want [4]uint32
	}{
		{[4]uint32{0, 0, 0, 0}, [2]uint32{0, 0}, [4]uint32{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
		{[4]uint32{^uint32(0), ^uint32(0), ^uint32(0), ^uint32(0)}, [2]uint32{^uint32(0), ^uint32(0)}, [4]uint32{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
		{[4]uint32{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, [2]uint32{0xa4093822, 0x299f31d0}, [4]uint32{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
	} {
		if got := ref.Philox4x32(c.key, c.ctr); got != c.want {
			t.Errorf("philox(%x, %x) = %x, want %x", c.key, c.ctr, got, c.want)
		}
	}
}

// TestSampleRefIsTheCPUChain: the float64 reference picks, for a given
// uniform number, the candidate runtime/sample's distribution puts there
// (its candidates in its order, cumulative probabilities), for random
// logits and settings: the two implement the same chain.
func TestSampleRefIsTheCPUChain(t *testing.T) {
	rng := rand.New(rand.NewSource(9100))
	mismatches := 0
	for it := 0; it < 300; it++ {
		vocab := 1 + rng.Intn(300)
		row := gputest.Rand(rng, vocab, 3)
		p := randomParams(rng, vocab)
		window := randWindow(rng, rng.Intn(20), vocab)
		s := cpuSampler(t, p, vocab, window)
		cands, err := s.Distribution(row)
		must(t, err)
		for k := 0; k < 5; k++ {
			u := rng.Float64()
			want, cum := int(cands[len(cands)-1].ID), 0.0
			for _, c := range cands {
				cum += float64(c.Prob)
				if u < cum {
					want = int(c.ID)
					break
				}
			}
			if got := ref.SampleRow(gputest.F64(row), refParams(p), window, u); got != want {
				mismatches++
				t.Logf("vocab %d, %+v, u %v: ref %d, runtime/sample %d", vocab, p, u, got, want)
			}
		}
	}
	// float32 against float64 probabilities may disagree when u falls
	// within rounding of a boundary; more than that is a different chain.
	if mismatches > 2 {
		t.Errorf("%d of 1500 draws differ", mismatches)
	}
}

// randomParams draws settings the GPU takes for a vocabulary.
func randomParams(rng *rand.Rand, vocab int) ops.SampleParams {
	p := ops.SampleParams{Temperature: []float32{0.3, 0.8, 1, 1.7}[rng.Intn(4)], TopP: 1, RepeatPenalty: 1, Seed: rng.Uint64(), Step: uint64(rng.Intn(1000))}
	if rng.Intn(3) > 0 {
		p.TopK = 1 + rng.Intn(min(vocab, ops.SampleMaxCandidates))
	}
	if rng.Intn(2) == 0 {
		p.TopP = []float32{0.5, 0.9, 0.95}[rng.Intn(3)]
	}
	if rng.Intn(2) == 0 {
		p.MinP = []float32{0.01, 0.05, 0.2}[rng.Intn(3)]
	}
	if rng.Intn(2) == 0 {
		p.RepeatPenalty, p.FrequencyPenalty, p.PresencePenalty = 1.3, 0.2, 0.5
	}
	if vocab > ops.SampleMaxCandidates && p.TopK == 0 {
		p.TopP = 1 // the GPU's whole-row path
	}
	return p
}

// TestSampleGreedyMatchesCPU: temperature 0 and top-k 1 give exactly
// runtime/sample's token, with and without penalties, on vocabularies from
// 1 to qwen2's, with ties, -Inf entries and a maximum at either end; a NaN,
// a +Inf or a row of only -Inf gives SampleInvalid.
func TestSampleGreedyMatchesCPU(t *testing.T) {
	ctx := gputest.Ctx(t)
	negInf := float32(math.Inf(-1))
	for ci, vocab := range []int{1, 2, 57, 257, 1025, 32000, 151936} {
		t.Run(fmt.Sprint(vocab), func(t *testing.T) {
			seed := int64(9200 + ci)
			rng := rand.New(rand.NewSource(seed))
			var rows []sampleRow
			for k := 0; k < 8; k++ {
				r := gputest.Rand(rng, vocab, 5)
				switch k {
				case 1: // ties
					for j := 0; j < 4; j++ {
						r[rng.Intn(vocab)] = 9
					}
				case 2:
					r[0], r[vocab-1] = 9, 9
				case 3:
					for j := range r {
						r[j] = negInf
					}
					r[vocab-1] = -1e30
				case 4:
					for j := range r {
						r[j] = 1.5
					}
				}
				p := greedyParams()
				if k%2 == 1 { // top-k 1 at a temperature: no draw either
					p.Temperature, p.TopK, p.Seed = 0.9, 1, rng.Uint64()
				}
				var w []int32
				if k >= 5 {
					p.RepeatPenalty, p.FrequencyPenalty, p.PresencePenalty = 1.5, 0.3, 0.7
					w = randWindow(rng, 1+rng.Intn(40), vocab)
					// the best token is in the window: penalties change the answer
					w[0] = int32(cpuArgmax(r))
				}
				rows = append(rows, sampleRow{logits: r, p: p, window: w})
			}
			bad := func(v float32) []float32 {
				r := gputest.Rand(rng, vocab, 5)
				r[rng.Intn(vocab)] = v
				return r
			}
			allInf := make([]float32, vocab)
			for j := range allInf {
				allInf[j] = negInf
			}
			rows = append(rows, sampleRow{logits: bad(float32(math.NaN())), p: greedyParams()},
				sampleRow{logits: bad(float32(math.Inf(1))), p: greedyParams()},
				sampleRow{logits: allInf, p: greedyParams()})
			got, wins := gpuSample(t, ctx, rng, vocab, 48, rows)
			for i, r := range rows[:len(rows)-3] {
				s := cpuSampler(t, r.p, vocab, r.window)
				want, err := s.Sample(r.logits)
				must(t, err)
				if got[i] != uint32(want) {
					t.Errorf("seed %d row %d (%+v): GPU %d, CPU %d", seed, i, r.p, got[i], want)
				}
				if w := wins[i][len(r.window)]; w != uint32(want) {
					t.Errorf("row %d: window slot %d holds %d, want the chosen %d", i, len(r.window), w, want)
				}
			}
			for i := len(rows) - 3; i < len(rows); i++ {
				if got[i] != ops.SampleInvalid {
					t.Errorf("row %d (NaN, +Inf, all -Inf): %d, want SampleInvalid", i, got[i])
				}
			}
		})
	}
}

// TestSampleMatchesReference: with the uniform number of the row's seed
// and step, the GPU picks the float64 reference's token, for random
// settings of every stage (top-k up to the candidate limit, top-p, min-p,
// temperature, penalties) and for the whole-row path of large
// vocabularies.
func TestSampleMatchesReference(t *testing.T) {
	ctx := gputest.Ctx(t)
	for ci, vocab := range []int{1, 3, 57, 1000, 1025, 32000} {
		t.Run(fmt.Sprint(vocab), func(t *testing.T) {
			seed := int64(9300 + ci)
			rng := rand.New(rand.NewSource(seed))
			var rows []sampleRow
			for k := 0; k < 24; k++ {
				p := randomParams(rng, vocab)
				var w []int32
				if p.RepeatPenalty != 1 {
					w = randWindow(rng, rng.Intn(60), vocab)
				}
				rows = append(rows, sampleRow{logits: gputest.Rand(rng, vocab, float64(1+rng.Intn(8))), p: p, window: w})
			}
			got, _ := gpuSample(t, ctx, rng, vocab, 64, rows)
			miss := 0
			for i, r := range rows {
				u := ref.SampleUniform(r.p.Seed, r.p.Step)
				want := ref.SampleRow(gputest.F64(r.logits), refParams(r.p), r.window, u)
				if got[i] != uint32(want) {
					miss++
					t.Logf("seed %d row %d (%+v, u %v): GPU %d, reference %d", seed, i, r.p, u, got[i], want)
				}
			}
			// float32 sums on the GPU against float64 ones: a draw within
			// rounding of a boundary may land next door, rarely.
			if miss > 1 {
				t.Errorf("%d of %d rows differ from the reference", miss, len(rows))
			}
		})
	}
}

// TestSampleBatchInvariance: a row's token is the same alone and among
// other rows with other logits and settings, bit for bit.
func TestSampleBatchInvariance(t *testing.T) {
	ctx := gputest.Ctx(t)
	rng := rand.New(rand.NewSource(9400))
	const vocab = 2000
	var rows []sampleRow
	for k := 0; k < 37; k++ {
		rows = append(rows, sampleRow{logits: gputest.Rand(rng, vocab, 4), p: randomParams(rng, vocab), window: randWindow(rng, 10, vocab)})
	}
	together, _ := gpuSample(t, ctx, rng, vocab, 16, rows)
	for _, i := range []int{0, 17, 36} {
		alone, _ := gpuSample(t, ctx, rng, vocab, 16, rows[i:i+1])
		if alone[0] != together[i] {
			t.Errorf("row %d: alone %d, in a batch of %d %d", i, alone[0], len(rows), together[i])
		}
	}
}

// TestSampleDistribution: 4096 draws of one row (steps 0..4095) follow
// runtime/sample's distribution (a chi-square test, and no token outside
// its candidates), for the sorted path with every filter and penalties,
// and for the whole-row path with min-p.
func TestSampleDistribution(t *testing.T) {
	ctx := gputest.Ctx(t)
	rng := rand.New(rand.NewSource(9500))
	for _, c := range []struct {
		name  string
		vocab int
		p     ops.SampleParams
		win   int
	}{
		{"sorted", 60, ops.SampleParams{Temperature: 0.9, TopK: 30, TopP: 0.9, MinP: 0.02, RepeatPenalty: 1.2, FrequencyPenalty: 0.1, PresencePenalty: 0.3}, 12},
		{"whole-row", 1500, ops.SampleParams{Temperature: 1.3, TopP: 1, MinP: 0.1, RepeatPenalty: 1}, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			const draws = 4096
			logits := gputest.Rand(rng, c.vocab, 2)
			window := randWindow(rng, c.win, c.vocab)
			c.p.Seed = rng.Uint64()
			rows := make([]sampleRow, draws)
			for i := range rows {
				p := c.p
				p.Step = uint64(i)
				rows[i] = sampleRow{logits: logits, p: p, window: window}
			}
			got, _ := gpuSample(t, ctx, rng, c.vocab, max(c.win+1, 1), rows)
			cands, err := cpuSampler(t, c.p, c.vocab, window).Distribution(logits)
			must(t, err)
			prob := map[uint32]float64{}
			for _, cd := range cands {
				prob[uint32(cd.ID)] = float64(cd.Prob)
			}
			seen := map[uint32]int{}
			for _, g := range got {
				if _, ok := prob[g]; !ok {
					t.Fatalf("token %d drawn: not a candidate of runtime/sample's (%d candidates)", g, len(cands))
				}
				seen[g]++
			}
			// Chi-square over the candidates, the rare ones (expected < 5)
			// pooled.
			chi, dof, poolObs, poolExp := 0.0, -1, 0.0, 0.0
			for id, pr := range prob {
				e, o := pr*draws, float64(seen[id])
				if e < 5 {
					poolObs += o
					poolExp += e
					continue
				}
				chi += (o - e) * (o - e) / e
				dof++
			}
			if poolExp > 0 {
				chi += (poolObs - poolExp) * (poolObs - poolExp) / math.Max(poolExp, 1)
				dof++
			}
			// Wilson–Hilferty: the chi-square quantile at p = 1e-4.
			z := 3.72
			limit := float64(dof) * math.Pow(1-2/(9*float64(dof))+z*math.Sqrt(2/(9*float64(dof))), 3)
			t.Logf("%d candidates, chi-square %.1f with %d degrees of freedom (limit %.1f)", len(cands), chi, dof, limit)
			if dof < 1 || chi > limit {
				t.Errorf("the GPU draws do not follow runtime/sample's distribution: chi-square %.1f > %.1f (%d dof)", chi, limit, dof)
			}
		})
	}
}

// TestSampleRejects: bad shapes and settings the GPU does not take are
// errors, never a dispatch.
func TestSampleRejects(t *testing.T) {
	ctx := gputest.Ctx(t)
	lg, err := ops.New(ctx, "lg", ops.F32, 2, 100)
	must(t, err)
	defer lg.Buf.Destroy()
	ps, err := ops.New(ctx, "ps", ops.U32, 2*ops.SampleWords)
	must(t, err)
	defer ps.Buf.Destroy()
	win, err := ops.New(ctx, "win", ops.U32, 2, 4)
	must(t, err)
	defer win.Buf.Destroy()
	d, err := ops.New(ctx, "d", ops.U32, 2)
	must(t, err)
	defer d.Buf.Destroy()
	enc, err := ctx.NewEncoder()
	must(t, err)
	defer enc.Release()
	for name, call := range map[string]func() error{
		"dst too short": func() error { return ops.Sample(enc, d.View(0, 1), lg, ps.View(0, 2, ops.SampleWords), win) },
		"params short":  func() error { return ops.Sample(enc, d, lg, ps.View(0, 1, ops.SampleWords), win) },
		"window shape":  func() error { return ops.Sample(enc, d, lg, ps.View(0, 2, ops.SampleWords), win.View(0, 8)) },
		"f16 logits": func() error {
			return ops.Sample(enc, d, ops.Tensor{Buf: lg.Buf, DType: ops.F16, Shape: []int{2, 100}}, ps.View(0, 2, ops.SampleWords), win)
		},
	} {
		if err := call(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	raw := make([]byte, 4*ops.SampleWords)
	for _, p := range []ops.SampleParams{
		{Temperature: 1, TopK: 2000, TopP: 0.9, RepeatPenalty: 1},     // too many to sort
		{Temperature: 1, TopP: 0.9, RepeatPenalty: 1},                 // the whole vocabulary to sort
		{Temperature: -1, TopP: 1, RepeatPenalty: 1},                  // bad temperature
		{Temperature: 1, TopP: 1, RepeatPenalty: 1, WindowLen: 9},     // window longer than its buffer
		{Temperature: 1, TopP: 1, RepeatPenalty: 1, WindowSlot: 8},    // slot outside the window
		{Temperature: float32(math.NaN()), TopP: 1, RepeatPenalty: 1}, // NaN
	} {
		p.WindowSlot = max(p.WindowSlot, 0)
		if err := ops.PackSampleParams(raw, []ops.SampleParams{p}, 32000, 1, 8); err == nil {
			t.Errorf("%+v: packed", p)
		}
	}
	if err := ops.PackSampleParams(raw[:8], []ops.SampleParams{greedyParams()}, 100, 1, 1); err == nil {
		t.Error("a short buffer was packed into")
	}
	bad := greedyParams()
	bad.WindowRow = 3
	if err := ops.PackSampleParams(raw, []ops.SampleParams{bad}, 100, 2, 1); err == nil {
		t.Error("a window row outside the window tensor was packed")
	}
}

// BenchmarkSampleStep is the CPU side of one batched sampling step: pack
// the rows' parameters, write them, record the dispatch (no GPU wait). It
// reports allocations per step, which must not grow with the batch.
func BenchmarkSampleStep(b *testing.B) {
	ctx := gputest.BenchCtx(b, false)
	const vocab, wcap = 32000, 64
	for _, n := range []int{1, 16, 64, 256} {
		b.Run(fmt.Sprintf("batch%d", n), func(b *testing.B) {
			lg, err := ops.New(ctx, "lg", ops.F32, n, vocab)
			must(b, err)
			defer lg.Buf.Destroy()
			pt, err := ops.New(ctx, "ps", ops.U32, n, ops.SampleWords)
			must(b, err)
			defer pt.Buf.Destroy()
			win, err := ops.New(ctx, "win", ops.U32, n, wcap)
			must(b, err)
			defer win.Buf.Destroy()
			d, err := ops.New(ctx, "d", ops.U32, n)
			must(b, err)
			defer d.Buf.Destroy()
			ps := make([]ops.SampleParams, n)
			for i := range ps {
				ps[i] = ops.SampleParams{Temperature: 0.8, TopK: 40, TopP: 0.95, MinP: 0.05, RepeatPenalty: 1.1, WindowLen: 32, WindowSlot: 32, WindowRow: i, Seed: uint64(i)}
			}
			raw := make([]byte, 4*ops.SampleWords*n)
			enc, err := ctx.NewEncoder()
			must(b, err)
			defer enc.Release()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				for j := range ps {
					ps[j].Step++
				}
				if err := ops.PackSampleParams(raw, ps, vocab, n, wcap); err != nil {
					b.Fatal(err)
				}
				if err := pt.Buf.Write(0, raw); err != nil {
					b.Fatal(err)
				}
				if err := ops.Sample(enc, d, lg, pt, win); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSampleGPU is the kernel's GPU time per step for a batch of rows
// under llama.cpp's default chain (top-k 40, top-p 0.95, min-p 0.05,
// temperature 0.8, a repeat penalty over 64 tokens), and greedy; big
// vocabularies skip on software adapters.
func BenchmarkSampleGPU(b *testing.B) {
	for _, vocab := range []int{32000, 151936} {
		for _, n := range []int{1, 16, 64} {
			for _, greedy := range []bool{false, true} {
				name := fmt.Sprintf("vocab%d/batch%d/chain", vocab, n)
				if greedy {
					name = fmt.Sprintf("vocab%d/batch%d/greedy", vocab, n)
				}
				b.Run(name, func(b *testing.B) {
					ctx := gputest.BenchCtx(b, vocab*n > 32000*16)
					rng := rand.New(rand.NewSource(1))
					lg := benchF32(b, ctx, rng, "logits", n, vocab)
					ps := make([]ops.SampleParams, n)
					for i := range ps {
						ps[i] = ops.SampleParams{Temperature: 0.8, TopK: 40, TopP: 0.95, MinP: 0.05, RepeatPenalty: 1.1,
							WindowLen: 64, WindowSlot: ops.NoWindowSlot, WindowRow: i, Seed: uint64(i)}
						if greedy {
							ps[i] = ops.SampleParams{TopP: 1, RepeatPenalty: 1, WindowSlot: ops.NoWindowSlot, WindowRow: i}
						}
					}
					raw := make([]byte, 4*ops.SampleWords*n)
					must(b, ops.PackSampleParams(raw, ps, vocab, n, 64))
					pt, err := ops.New(ctx, "ps", ops.U32, n, ops.SampleWords)
					must(b, err)
					b.Cleanup(pt.Buf.Destroy)
					must(b, pt.Buf.Write(0, raw))
					win := make([]uint32, n*64)
					for i := range win {
						win[i] = uint32(rng.Intn(vocab))
					}
					wt, err := ops.FromUint32(ctx, "win", win, n, 64)
					must(b, err)
					b.Cleanup(wt.Buf.Destroy)
					d, err := ops.New(ctx, "d", ops.U32, n)
					must(b, err)
					b.Cleanup(d.Buf.Destroy)
					benchGPUTime(b, ctx, 0, func(enc *gpu.Encoder) error { return ops.Sample(enc, d, lg, pt, wt) })
				})
			}
		}
	}
}
