package sample

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

func mustNew(t testing.TB, p Params, vocab int) *Sampler {
	t.Helper()
	s, err := New(p, vocab)
	if err != nil {
		t.Fatalf("New(%+v, %d): %v", p, vocab, err)
	}
	return s
}

// logitsOf returns log-probabilities, so that softmax gives probs back.
func logitsOf(probs ...float64) []float32 {
	out := make([]float32, len(probs))
	for i, p := range probs {
		out[i] = float32(math.Log(p))
	}
	return out
}

func randomLogits(rng *rand.Rand, n int, withTies bool) []float32 {
	l := make([]float32, n)
	for i := range l {
		l[i] = float32(rng.NormFloat64() * 3)
		if withTies && rng.IntN(4) == 0 {
			l[i] = float32(rng.IntN(3)) // repeated values, including the maximum sometimes
		}
	}
	return l
}

func argmax(l []float32) int32 {
	best := 0
	for i := range l {
		if l[i] > l[best] {
			best = i
		}
	}
	return int32(best)
}

func ids(cands []Candidate) []int32 {
	var out []int32
	for _, c := range cands {
		out = append(out, c.ID)
	}
	return out
}

func TestValidate(t *testing.T) {
	nan := float32(math.NaN())
	inf := float32(math.Inf(1))
	cases := []struct {
		name string
		edit func(p *Params)
		want string
	}{
		{"NaN temperature", func(p *Params) { p.Temperature = nan }, "temperature"},
		{"negative temperature", func(p *Params) { p.Temperature = -0.1 }, "temperature"},
		{"infinite temperature", func(p *Params) { p.Temperature = inf }, "temperature"},
		{"negative top_k", func(p *Params) { p.TopK = -1 }, "top_k"},
		{"zero top_p", func(p *Params) { p.TopP = 0 }, "top_p"},
		{"top_p above 1", func(p *Params) { p.TopP = 1.01 }, "top_p"},
		{"NaN top_p", func(p *Params) { p.TopP = nan }, "top_p"},
		{"negative min_p", func(p *Params) { p.MinP = -0.01 }, "min_p"},
		{"min_p above 1", func(p *Params) { p.MinP = 1.5 }, "min_p"},
		{"zero repeat penalty", func(p *Params) { p.RepeatPenalty = 0 }, "repeat penalty"},
		{"NaN repeat penalty", func(p *Params) { p.RepeatPenalty = nan }, "repeat penalty"},
		{"infinite presence penalty", func(p *Params) { p.PresencePenalty = -inf }, "presence penalty"},
		{"NaN frequency penalty", func(p *Params) { p.FrequencyPenalty = nan }, "frequency penalty"},
		{"negative window", func(p *Params) { p.PenaltyLastN = -1 }, "penalty window"},
		{"huge window", func(p *Params) { p.PenaltyLastN = MaxPenaltyLastN + 1 }, "penalty window"},
	}
	for _, c := range cases {
		p := DefaultParams()
		c.edit(&p)
		err := p.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Validate() = %v, want an error about %s", c.name, err, c.want)
		}
		if _, err := New(p, 10); err == nil {
			t.Errorf("%s: New accepted invalid params", c.name)
		}
	}
	for _, p := range []Params{DefaultParams(), Greedy(), {Temperature: 1.5, TopK: 5, TopP: 1, MinP: 1, RepeatPenalty: 0.5, PresencePenalty: -1, FrequencyPenalty: 2}} {
		if err := p.Validate(); err != nil {
			t.Errorf("Validate(%+v) = %v", p, err)
		}
	}
	if _, err := New(DefaultParams(), 0); err == nil {
		t.Error("New with vocabulary 0 must fail")
	}
}

func TestBadLogits(t *testing.T) {
	s := mustNew(t, DefaultParams(), 4)
	for _, l := range [][]float32{
		{1, 2, 3},
		{1, float32(math.NaN()), 0, 0},
		{1, float32(math.Inf(1)), 0, 0},
		{float32(math.Inf(-1)), float32(math.Inf(-1)), float32(math.Inf(-1)), float32(math.Inf(-1))},
	} {
		if _, err := s.Sample(l); err == nil {
			t.Errorf("Sample(%v) must fail", l)
		}
	}
	if err := s.Accept(4); err == nil {
		t.Error("Accept(4) with a vocabulary of 4 must fail")
	}
	// -Inf entries are masked tokens and never drawn.
	l := []float32{float32(math.Inf(-1)), 0, float32(math.Inf(-1)), 0}
	for i := 0; i < 200; i++ {
		id, err := s.Sample(l)
		if err != nil || (id != 1 && id != 3) {
			t.Fatalf("Sample with masked tokens = %d, %v", id, err)
		}
	}
}

func TestGreedyIsArgmax(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	for trial := 0; trial < 200; trial++ {
		n := 1 + rng.IntN(300)
		l := randomLogits(rng, n, true)
		s := mustNew(t, Greedy(), n)
		got, err := s.Sample(l)
		if err != nil {
			t.Fatal(err)
		}
		if want := argmax(l); got != want {
			t.Fatalf("greedy picked %d (logit %v), argmax with lowest-index ties is %d (logit %v)", got, l[got], want, l[want])
		}
	}
	// Explicit tie: the lowest index wins.
	s := mustNew(t, Greedy(), 5)
	if id, _ := s.Sample([]float32{1, 3, 2, 3, 3}); id != 1 {
		t.Errorf("tie between 1, 3 and 4 resolved to %d", id)
	}
}

func TestTopK1IsGreedy(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 8))
	for _, temp := range []float32{0.3, 1, 2} {
		p := DefaultParams()
		p.TopK, p.Temperature, p.MinP, p.TopP = 1, temp, 0, 1
		for trial := 0; trial < 100; trial++ {
			n := 2 + rng.IntN(500)
			l := randomLogits(rng, n, true)
			p.Seed = uint64(trial)
			s := mustNew(t, p, n)
			if got, want := must(s.Sample(l)), argmax(l); got != want {
				t.Fatalf("temperature %v top_k 1: %d, greedy %d", temp, got, want)
			}
		}
	}
}

func must(id int32, err error) int32 {
	if err != nil {
		panic(err)
	}
	return id
}

func TestTopP(t *testing.T) {
	// Probabilities 0.5, 0.3, 0.15, 0.05 placed at ids 2, 0, 3, 1, and a
	// negligible id 4 so that top-k 4 (which sorts) removes nothing that matters.
	l := logitsOf(0.3, 0.05, 0.5, 0.15, 1e-12)
	for _, c := range []struct {
		topP float32
		want []int32
	}{
		{0.49, []int32{2}},
		{0.79, []int32{2, 0}},
		{0.81, []int32{2, 0, 3}},
		{0.96, []int32{2, 0, 3, 1}},
	} {
		for _, topK := range []int{0, 4} { // unsorted and sorted paths
			p := Params{Temperature: 1, TopK: topK, TopP: c.topP, RepeatPenalty: 1}
			s := mustNew(t, p, len(l))
			cands, err := s.Distribution(l)
			if err != nil {
				t.Fatal(err)
			}
			if got := ids(cands); !slices.Equal(got, c.want) {
				t.Errorf("top_p %v top_k %d kept %v, want %v", c.topP, topK, got, c.want)
			}
			// The kept probabilities are renormalised.
			sum := 0.0
			for _, cd := range cands {
				sum += float64(cd.Prob)
			}
			if math.Abs(sum-1) > 1e-6 {
				t.Errorf("top_p %v: probabilities sum to %v", c.topP, sum)
			}
		}
	}
	// Disabled: nothing is sorted or removed.
	s := mustNew(t, Params{Temperature: 1, TopP: 1, RepeatPenalty: 1}, len(l))
	if cands, _ := s.Distribution(l); !slices.Equal(ids(cands), []int32{0, 1, 2, 3, 4}) {
		t.Errorf("top_p 1 kept %v", ids(cands))
	}
	// As in llama.cpp, top-p sees the distribution renormalised after top-k:
	// with top-k 3, 0.5 and 0.3 hold 0.8/0.95 > 0.81 of the mass.
	s = mustNew(t, Params{Temperature: 1, TopK: 3, TopP: 0.81, RepeatPenalty: 1}, len(l))
	if cands, _ := s.Distribution(l); !slices.Equal(ids(cands), []int32{2, 0}) {
		t.Errorf("top_k 3 then top_p 0.81 kept %v, want [2 0]", ids(cands))
	}
	// A large flat-ish vocabulary needs the widening partial selection.
	rng := rand.New(rand.NewPCG(9, 9))
	n := 5000
	big := make([]float32, n)
	for i := range big {
		big[i] = float32(rng.Float64() * 0.5)
	}
	s = mustNew(t, Params{Temperature: 1, TopP: 0.9, RepeatPenalty: 1}, n)
	cands, err := s.Distribution(big)
	if err != nil {
		t.Fatal(err)
	}
	want := referenceTopP(big, 0.9)
	if got := ids(cands); !slices.Equal(got, want) {
		t.Errorf("large top_p kept %d tokens, reference %d", len(got), len(want))
	}
}

// referenceTopP sorts everything and accumulates, in float64.
func referenceTopP(l []float32, p float64) []int32 {
	order := make([]int32, len(l))
	for i := range order {
		order[i] = int32(i)
	}
	slices.SortFunc(order, func(a, b int32) int {
		return cmpCandidates(Candidate{ID: a, Logit: l[a]}, Candidate{ID: b, Logit: l[b]})
	})
	maxL := l[order[0]]
	total := 0.0
	for _, x := range l {
		total += math.Exp(float64(x - maxL))
	}
	cum := 0.0
	for i, id := range order {
		cum += math.Exp(float64(l[id]-maxL)) / total
		if cum >= p {
			return order[:i+1]
		}
	}
	return order
}

func TestMinP(t *testing.T) {
	l := logitsOf(0.3, 0.05, 0.5, 0.15) // max 0.5 at id 2
	for _, c := range []struct {
		minP float32
		want []int32 // unsorted path keeps id order
	}{
		{0.05, []int32{0, 1, 2, 3}}, // threshold 0.025
		{0.25, []int32{0, 2, 3}},    // threshold 0.125 drops 0.05
		{0.35, []int32{0, 2}},       // threshold 0.175 drops 0.15
		{0.7, []int32{2}},           // threshold 0.35 drops 0.3
		{1, []int32{2}},
	} {
		s := mustNew(t, Params{Temperature: 1, TopP: 1, MinP: c.minP, RepeatPenalty: 1}, 4)
		cands, err := s.Distribution(l)
		if err != nil {
			t.Fatal(err)
		}
		if got := ids(cands); !slices.Equal(got, c.want) {
			t.Errorf("min_p %v kept %v, want %v", c.minP, got, c.want)
		}
		// Sorted path (after top-p that keeps everything): same set, best first.
		s = mustNew(t, Params{Temperature: 1, TopP: 0.9999, MinP: c.minP, RepeatPenalty: 1}, 4)
		cands, _ = s.Distribution(l)
		got := ids(cands)
		want := slices.Clone(c.want)
		slices.SortFunc(want, func(a, b int32) int {
			return cmpCandidates(Candidate{ID: a, Logit: l[a]}, Candidate{ID: b, Logit: l[b]})
		})
		if !slices.Equal(got, want) {
			t.Errorf("min_p %v after top_p kept %v, want %v", c.minP, got, want)
		}
	}
	// Renormalised: keeping 0.5, 0.3, 0.15 gives 0.5/0.95 ...
	s := mustNew(t, Params{Temperature: 1, TopP: 1, MinP: 0.25, RepeatPenalty: 1}, 4)
	cands, _ := s.Distribution(l)
	for _, c := range cands {
		want := map[int32]float64{0: 0.3 / 0.95, 2: 0.5 / 0.95, 3: 0.15 / 0.95}[c.ID]
		if math.Abs(float64(c.Prob)-want) > 1e-6 {
			t.Errorf("id %d prob %v, want %v", c.ID, c.Prob, want)
		}
	}
}

func TestPenalties(t *testing.T) {
	l := []float32{2.0, -1.0, 0.5, 0.0, 3.0}
	p := Params{Temperature: 1, TopP: 1, RepeatPenalty: 2, FrequencyPenalty: 0.1, PresencePenalty: 0.2, PenaltyLastN: 4}
	s := mustNew(t, p, 5)
	if err := s.Accept(0, 1, 1, 3); err != nil {
		t.Fatal(err)
	}
	cands, err := s.Distribution(l)
	if err != nil {
		t.Fatal(err)
	}
	want := []float32{
		2.0/2 - (1*0.1 + 0.2),  // positive: divided
		-1.0*2 - (2*0.1 + 0.2), // negative: multiplied, seen twice
		0.5,                    // not seen
		0*2 - (1*0.1 + 0.2),    // zero: multiplied (stays 0)
		3.0,                    // not seen
	}
	for i, c := range cands {
		if c.ID != int32(i) || math.Abs(float64(c.Logit-want[i])) > 1e-6 {
			t.Errorf("token %d: logit %v, want %v", c.ID, c.Logit, want[i])
		}
	}
	if l[0] != 2.0 || l[1] != -1.0 {
		t.Error("Distribution modified the caller's logits")
	}
	// The window only holds the last PenaltyLastN tokens.
	p.PenaltyLastN = 2
	s = mustNew(t, p, 5)
	s.Accept(0, 1, 1, 3) // window: 1, 3
	cands, _ = s.Distribution(l)
	want2 := []float32{2.0, -1.0*2 - (1*0.1 + 0.2), 0.5, 0*2 - (1*0.1 + 0.2), 3.0}
	for i, c := range cands {
		if math.Abs(float64(c.Logit-want2[i])) > 1e-6 {
			t.Errorf("window 2, token %d: logit %v, want %v", i, c.Logit, want2[i])
		}
	}
	// Greedy decoding sees the penalties too: token 4 penalised below token 0.
	g := Greedy()
	g.RepeatPenalty, g.PenaltyLastN = 4, 8
	s = mustNew(t, g, 5)
	s.Accept(4)
	if id := must(s.Sample(l)); id != 0 {
		t.Errorf("greedy with penalty picked %d, want 0 (3/4 < 2)", id)
	}
	// Sample accepts what it returns; Reset forgets.
	if id := must(s.Sample(l)); id != 4 {
		t.Errorf("after 0 was accepted greedy picked %d, want 4 (2/4 < 3/4)", id)
	}
	s.Reset()
	if id := must(s.Sample(l)); id != 4 {
		t.Errorf("after Reset greedy picked %d, want 4", id)
	}
}

func TestDeterminism(t *testing.T) {
	rng := rand.New(rand.NewPCG(10, 10))
	const n = 1000
	rows := make([][]float32, 300)
	for i := range rows {
		rows[i] = randomLogits(rng, n, false)
	}
	run := func(seed uint64) []int32 {
		p := DefaultParams()
		p.Seed, p.Temperature, p.TopK, p.RepeatPenalty, p.PenaltyLastN = seed, 1.2, 100, 1.1, 32
		s := mustNew(t, p, n)
		var out []int32
		for _, row := range rows {
			out = append(out, must(s.Sample(row)))
		}
		return out
	}
	a, b := run(42), run(42)
	if !slices.Equal(a, b) {
		t.Fatal("same seed and settings gave different tokens")
	}
	c := run(43)
	same := 0
	for i := range a {
		if a[i] == c[i] {
			same++
		}
	}
	if same == len(a) {
		t.Fatal("seeds 42 and 43 gave identical sequences")
	}
	t.Logf("seeds 42 and 43 agree on %d of %d tokens", same, len(a))
	// Reset restarts the generator.
	p := DefaultParams()
	p.Seed = 42
	s := mustNew(t, p, n)
	first := must(s.Sample(rows[0]))
	for _, row := range rows[1:50] {
		s.Sample(row)
	}
	s.Reset()
	if again := must(s.Sample(rows[0])); again != first {
		t.Errorf("after Reset the first token is %d, was %d", again, first)
	}
}

// TestDistributionChiSquare draws from known distributions and checks the
// counts with Pearson's chi-square test. The seed is fixed, so the test is
// deterministic; the bound (p ≈ 1e-5 for 9 degrees of freedom) is generous.
func TestDistributionChiSquare(t *testing.T) {
	probs := []float64{0.3, 0.2, 0.15, 0.1, 0.08, 0.07, 0.05, 0.03, 0.015, 0.005}
	for _, temp := range []float64{1, 0.5, 2} {
		// Expected: probs^(1/T), normalised.
		want := make([]float64, len(probs))
		sum := 0.0
		for i, p := range probs {
			want[i] = math.Pow(p, 1/temp)
			sum += want[i]
		}
		for i := range want {
			want[i] /= sum
		}
		s := mustNew(t, Params{Temperature: float32(temp), TopP: 1, RepeatPenalty: 1, Seed: 12345}, len(probs))
		l := logitsOf(probs...)
		const draws = 100000
		counts := make([]float64, len(probs))
		for i := 0; i < draws; i++ {
			counts[must(s.Sample(l))]++
		}
		chi2 := 0.0
		for i := range counts {
			e := want[i] * draws
			chi2 += (counts[i] - e) * (counts[i] - e) / e
		}
		t.Logf("temperature %v: chi-square %.2f (9 degrees of freedom)", temp, chi2)
		if chi2 > 40 {
			t.Errorf("temperature %v: chi-square %.1f exceeds 40; counts %v, expected fractions %v", temp, chi2, counts, want)
		}
	}
}

func TestNoAllocationsPerToken(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 11))
	const n = 32000
	l := randomLogits(rng, n, true)
	configs := map[string]Params{
		"default":    DefaultParams(),
		"greedy":     Greedy(),
		"top_p":      {Temperature: 0.7, TopP: 0.9, RepeatPenalty: 1.1, PresencePenalty: 0.5, PenaltyLastN: 64},
		"min_p":      {Temperature: 1, TopP: 1, MinP: 0.1, RepeatPenalty: 1},
		"unfiltered": {Temperature: 1, TopP: 1, RepeatPenalty: 1},
	}
	for name, p := range configs {
		s := mustNew(t, p, n)
		s.Sample(l) // first call
		allocs := testing.AllocsPerRun(20, func() {
			if _, err := s.Sample(l); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("%s: %v allocations per token", name, allocs)
		}
	}
}

// TestGreedyWithPenaltiesMatchesChain checks the greedy fast path against
// the argmax of the penalised logits that the full chain computes.
func TestGreedyWithPenaltiesMatchesChain(t *testing.T) {
	rng := rand.New(rand.NewPCG(12, 12))
	for trial := 0; trial < 300; trial++ {
		n := 2 + rng.IntN(50)
		l := randomLogits(rng, n, true)
		pen := Params{RepeatPenalty: 0.5 + rng.Float32()*2, PresencePenalty: rng.Float32() - 0.5,
			FrequencyPenalty: rng.Float32() - 0.5, PenaltyLastN: 1 + rng.IntN(8), TopP: 1}
		var hist []int32
		for i := 0; i < 1+rng.IntN(12); i++ {
			hist = append(hist, int32(rng.IntN(n)))
		}
		g := pen
		full := pen
		full.Temperature = 1
		gs, fs := mustNew(t, g, n), mustNew(t, full, n)
		gs.Accept(hist...)
		fs.Accept(hist...)
		cands, err := fs.Distribution(l)
		if err != nil {
			t.Fatal(err)
		}
		penalised := make([]float32, n)
		for _, c := range cands {
			penalised[c.ID] = c.Logit
		}
		if got, want := must(gs.Sample(l)), argmax(penalised); got != want {
			t.Fatalf("trial %d: greedy %d, argmax of penalised logits %d (%v)", trial, got, want, penalised)
		}
	}
}
