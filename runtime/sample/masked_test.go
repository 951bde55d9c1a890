package sample

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestSampleMaskedGreedyAndRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	const vocab = 301
	for _, p := range []Params{Greedy(), DefaultParams(), {Temperature: 1.5, TopP: 1, RepeatPenalty: 1}} {
		s := mustNew(t, p, vocab)
		for trial := 0; trial < 200; trial++ {
			logits := randomLogits(rng, vocab, true)
			allowed := make([]bool, vocab)
			best := int32(-1)
			for i := range allowed {
				allowed[i] = rng.IntN(5) == 0
				if allowed[i] && (best < 0 || logits[i] > logits[best]) {
					best = int32(i)
				}
			}
			if best < 0 {
				continue
			}
			id, err := s.SampleMasked(logits, allowed)
			if err != nil {
				t.Fatal(err)
			}
			if !allowed[id] {
				t.Fatalf("%+v: sampled %d, which the mask forbids", p, id)
			}
			if p.Temperature == 0 && id != best {
				t.Fatalf("greedy under a mask: got %d, want %d (the best allowed)", id, best)
			}
		}
	}
	s := mustNew(t, Greedy(), 3)
	if _, err := s.SampleMasked([]float32{1, 2, 3}, []bool{false, false, false}); err == nil {
		t.Error("a mask that allows nothing did not fail")
	}
	if _, err := s.SampleMasked([]float32{1, 2, 3}, []bool{true}); err == nil {
		t.Error("a short mask did not fail")
	}
}

func TestLogitBias(t *testing.T) {
	s := mustNew(t, Greedy(), 4)
	logits := []float32{0, 5, 1, 2}
	if err := s.SetLogitBias(map[int32]float32{1: -100, 3: 2.5}); err != nil {
		t.Fatal(err)
	}
	if id, err := s.SampleMasked(logits, nil); err != nil || id != 3 {
		t.Fatalf("got %d, %v; want 3 (5-100 < 2+2.5)", id, err)
	}
	if logits[1] != 5 {
		t.Error("the caller's logits were changed")
	}
	if err := s.SetLogitBias(map[int32]float32{0: 100}); err != nil {
		t.Fatal(err)
	}
	r := mustNew(t, Params{Temperature: 1, TopP: 1, RepeatPenalty: 1}, 4)
	_ = r.SetLogitBias(map[int32]float32{0: 100})
	for i := 0; i < 100; i++ {
		if id, _ := r.SampleMasked(logits, nil); id != 0 {
			t.Fatalf("bias +100 on token 0: sampled %d", id)
		}
	}
	for _, bad := range []map[int32]float32{{4: 1}, {-1: 1}, {0: 101}, {0: float32(math.NaN())}} {
		if err := s.SetLogitBias(bad); err == nil {
			t.Errorf("bias %v accepted", bad)
		}
	}
}

// LogProbs against a float64 log-softmax and a full sort.
func TestLogProbs(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	for _, n := range []int{1, 2, 7, 300} {
		logits := randomLogits(rng, n, true)
		maxL := math.Inf(-1)
		for _, l := range logits {
			maxL = math.Max(maxL, float64(l))
		}
		sum := 0.0
		for _, l := range logits {
			sum += math.Exp(float64(l) - maxL)
		}
		want := func(i int32) float64 { return float64(logits[i]) - maxL - math.Log(sum) }
		order := make([]int32, n)
		for i := range order {
			order[i] = int32(i)
		}
		slices.SortStableFunc(order, func(a, b int32) int {
			switch {
			case logits[a] > logits[b]:
				return -1
			case logits[a] < logits[b]:
				return 1
			}
			return 0
		})
		for _, top := range []int{0, 1, 5, 20} {
			id := int32(rng.IntN(n))
			lp, tops, err := LogProbs(logits, id, top, []TokenLogprob{{ID: -7}})
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(float64(lp)-want(id)) > 1e-5 {
				t.Fatalf("n %d: logprob of %d = %v, want %v", n, id, lp, want(id))
			}
			if tops[0].ID != -7 {
				t.Fatal("dst's existing entries were overwritten")
			}
			tops = tops[1:]
			if len(tops) != min(top, n) {
				t.Fatalf("n %d top %d: got %d alternatives", n, top, len(tops))
			}
			for i, c := range tops {
				if c.ID != order[i] || math.Abs(float64(c.Logprob)-want(c.ID)) > 1e-5 {
					t.Fatalf("n %d top %d: #%d is %+v, want token %d logprob %v", n, top, i, c, order[i], want(order[i]))
				}
			}
		}
	}
	if _, _, err := LogProbs([]float32{1}, 1, 0, nil); err == nil {
		t.Error("a token outside the logits was accepted")
	}
	if _, _, err := LogProbs([]float32{1}, 0, 21, nil); err == nil {
		t.Error("top 21 was accepted")
	}
}
