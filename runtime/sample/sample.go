// Package sample picks the next token from a row of logits with llama.cpp's
// default sampler chain:
//
//	penalties → top-k → top-p → min-p → temperature → draw
//
// Each stage follows llama.cpp's semantics (llama-sampling.cpp):
//
//   - penalties, over the last PenaltyLastN accepted tokens: a token seen c
//     times has its logit divided by RepeatPenalty if positive, multiplied by
//     it otherwise, then reduced by c·FrequencyPenalty + PresencePenalty;
//   - top-k keeps the TopK highest logits;
//   - top-p keeps the smallest prefix (by probability, highest first) whose
//     mass reaches TopP;
//   - min-p keeps tokens whose probability is at least MinP times the
//     largest one;
//   - temperature divides the logits (so top-p and min-p see temperature 1);
//   - the draw samples the softmax of what is left with a PCG generator
//     seeded from Params.Seed, so the same seed and settings give the same
//     tokens.
//
// Temperature 0 is greedy decoding: the highest (penalised) logit, the
// lowest id among equals. Ties elsewhere are also broken by lower id, so
// every stage is deterministic.
//
// A Sampler allocates its scratch space when created and nothing per token.
package sample

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
)

// Params are the sampling settings. The zero value is not valid (TopP and
// RepeatPenalty must be positive); start from DefaultParams or Greedy.
type Params struct {
	// Temperature divides the logits; 0 means greedy. Must be finite and ≥ 0.
	Temperature float32
	// TopK keeps the K most likely tokens; 0 disables it. Must be ≥ 0.
	TopK int
	// TopP is the nucleus mass in (0, 1]; 1 disables it.
	TopP float32
	// MinP in [0, 1] drops tokens less likely than MinP × the most likely
	// one; 0 disables it.
	MinP float32
	// RepeatPenalty > 0 divides positive logits and multiplies negative
	// ones of recently seen tokens; 1 disables it.
	RepeatPenalty float32
	// PresencePenalty is subtracted once from the logit of every recently
	// seen token; 0 disables it.
	PresencePenalty float32
	// FrequencyPenalty is subtracted per occurrence of a recently seen
	// token; 0 disables it.
	FrequencyPenalty float32
	// PenaltyLastN is the number of most recent accepted tokens the
	// penalties look at; 0 disables the penalties. At most MaxPenaltyLastN.
	PenaltyLastN int
	// Seed seeds the random draw.
	Seed uint64
}

// MaxPenaltyLastN bounds Params.PenaltyLastN.
const MaxPenaltyLastN = 1 << 20

// DefaultParams returns llama.cpp's defaults (temperature 0.8, top-k 40,
// top-p 0.95, min-p 0.05, penalties off over a window of 64) with seed 0.
func DefaultParams() Params {
	return Params{Temperature: 0.8, TopK: 40, TopP: 0.95, MinP: 0.05, RepeatPenalty: 1, PenaltyLastN: 64}
}

// Greedy returns parameters for greedy decoding without penalties.
func Greedy() Params {
	return Params{Temperature: 0, TopP: 1, RepeatPenalty: 1}
}

func finite(x float32) bool { return !math.IsNaN(float64(x)) && !math.IsInf(float64(x), 0) }

// Validate reports the first invalid setting.
func (p Params) Validate() error {
	switch {
	case !finite(p.Temperature) || p.Temperature < 0:
		return fmt.Errorf("sample: temperature %v must be a finite number ≥ 0 (0 is greedy)", p.Temperature)
	case p.TopK < 0:
		return fmt.Errorf("sample: top_k %d must be ≥ 0 (0 disables it)", p.TopK)
	case !finite(p.TopP) || p.TopP <= 0 || p.TopP > 1:
		return fmt.Errorf("sample: top_p %v must be in (0, 1] (1 disables it)", p.TopP)
	case !finite(p.MinP) || p.MinP < 0 || p.MinP > 1:
		return fmt.Errorf("sample: min_p %v must be in [0, 1] (0 disables it)", p.MinP)
	case !finite(p.RepeatPenalty) || p.RepeatPenalty <= 0:
		return fmt.Errorf("sample: repeat penalty %v must be a finite number > 0 (1 disables it)", p.RepeatPenalty)
	case !finite(p.PresencePenalty):
		return fmt.Errorf("sample: presence penalty %v must be finite", p.PresencePenalty)
	case !finite(p.FrequencyPenalty):
		return fmt.Errorf("sample: frequency penalty %v must be finite", p.FrequencyPenalty)
	case p.PenaltyLastN < 0 || p.PenaltyLastN > MaxPenaltyLastN:
		return fmt.Errorf("sample: penalty window %d must be in [0, %d] (0 disables penalties)", p.PenaltyLastN, MaxPenaltyLastN)
	}
	return nil
}

// Candidate is a token that survived the filters, with its final logit
// (after penalties and temperature) and its probability in the draw.
type Candidate struct {
	ID    int32
	Logit float32
	Prob  float32
}

// Sampler applies Params to logits. It is not safe for concurrent use.
type Sampler struct {
	p     Params
	vocab int
	rng   *rand.Rand

	cands []Candidate // scratch: the candidate set of the current call
	heap  []Candidate // scratch: selection of the best candidates
	probs []float64   // scratch: probabilities for the draw

	window []int32  // ring of the last PenaltyLastN accepted tokens
	head   int      // next slot in window
	filled int      // tokens in window
	counts []int32  // occurrences of each token in window
	stamp  []uint32 // per-token mark: round = in the window, not yet penalised this call
	round  uint32

	bias   map[int32]float32 // added to logits before the chain (SetLogitBias)
	masked []float32         // scratch: logits with the bias and a mask applied
}

// New returns a sampler for a vocabulary of vocabSize logits.
func New(p Params, vocabSize int) (*Sampler, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if vocabSize <= 0 || vocabSize > math.MaxInt32 {
		return nil, fmt.Errorf("sample: vocabulary size %d must be in [1, %d]", vocabSize, math.MaxInt32)
	}
	s := &Sampler{
		p:     p,
		vocab: vocabSize,
		cands: make([]Candidate, vocabSize),
		heap:  make([]Candidate, 0, vocabSize),
		probs: make([]float64, vocabSize),
	}
	if p.PenaltyLastN > 0 {
		s.window = make([]int32, p.PenaltyLastN)
		s.counts = make([]int32, vocabSize)
		s.stamp = make([]uint32, vocabSize)
	}
	s.Reset()
	return s, nil
}

// Params returns the settings.
func (s *Sampler) Params() Params { return s.p }

// Reset forgets the accepted tokens and reseeds the generator.
func (s *Sampler) Reset() {
	// Two words from the seed; the second is an arbitrary odd constant.
	s.rng = rand.New(rand.NewPCG(s.p.Seed, 0x9E3779B97F4A7C15))
	for i := 0; i < s.filled; i++ {
		s.counts[s.window[i]] = 0
	}
	s.head, s.filled = 0, 0
}

// Accept records tokens that are now part of the context (the prompt,
// forced tokens) for the penalties. Sample accepts the token it returns.
func (s *Sampler) Accept(ids ...int32) error {
	for _, id := range ids {
		if id < 0 || int(id) >= s.vocab {
			return fmt.Errorf("sample: accepted token %d is outside the vocabulary [0, %d)", id, s.vocab)
		}
	}
	if len(s.window) == 0 {
		return nil
	}
	for _, id := range ids {
		if s.filled == len(s.window) {
			s.counts[s.window[s.head]]--
		} else {
			s.filled++
		}
		s.window[s.head] = id
		s.counts[id]++
		s.head++
		if s.head == len(s.window) {
			s.head = 0
		}
	}
	return nil
}

// Sample picks the next token from logits (which are not modified) and
// accepts it.
func (s *Sampler) Sample(logits []float32) (int32, error) {
	cands, err := s.Distribution(logits)
	if err != nil {
		return 0, err
	}
	id := cands[0].ID
	if len(cands) > 1 {
		id = cands[s.draw(len(cands))].ID
	}
	if err := s.Accept(id); err != nil {
		return 0, err
	}
	return id, nil
}

// MaxLogitBias bounds the magnitude of a logit bias (OpenAI's range).
const MaxLogitBias = 100

// SetLogitBias adds bias[id] to token id's logit before the chain (as
// llama.cpp's logit-bias sampler, first in its chain): -100 all but bans a
// token, +100 all but forces it.
func (s *Sampler) SetLogitBias(bias map[int32]float32) error {
	for id, b := range bias {
		if id < 0 || int(id) >= s.vocab {
			return fmt.Errorf("sample: logit bias for token %d, outside the vocabulary [0, %d)", id, s.vocab)
		}
		if !finite(b) || b < -MaxLogitBias || b > MaxLogitBias {
			return fmt.Errorf("sample: logit bias %v for token %d must be in [-%d, %d]", b, id, MaxLogitBias, MaxLogitBias)
		}
	}
	s.bias = bias
	return nil
}

// SampleMasked is Sample restricted to the tokens whose allowed entry is
// true (a grammar's mask; nil allows all), after the logit bias. It fails
// when the mask leaves nothing.
func (s *Sampler) SampleMasked(logits []float32, allowed []bool) (int32, error) {
	if len(logits) != s.vocab {
		return 0, fmt.Errorf("sample: got %d logits for a vocabulary of %d", len(logits), s.vocab)
	}
	if allowed == nil && len(s.bias) == 0 {
		return s.Sample(logits)
	}
	if allowed != nil && len(allowed) < s.vocab {
		return 0, fmt.Errorf("sample: mask of %d entries for a vocabulary of %d", len(allowed), s.vocab)
	}
	if s.masked == nil {
		s.masked = make([]float32, s.vocab)
	}
	row := s.masked
	copy(row, logits)
	for id, b := range s.bias {
		row[id] += b
	}
	if allowed != nil {
		inf := float32(math.Inf(-1))
		for i := range row {
			if !allowed[i] {
				row[i] = inf
			}
		}
	}
	return s.Sample(row)
}

// draw picks an index of s.probs[:n] (which sums to 1) at random.
func (s *Sampler) draw(n int) int {
	u := s.rng.Float64()
	cum := 0.0
	for i, p := range s.probs[:n] {
		cum += p
		if u < cum {
			return i
		}
	}
	// Rounding left u above the total: take the last token with mass.
	for i := n - 1; i > 0; i-- {
		if s.probs[i] > 0 {
			return i
		}
	}
	return 0
}

// better is the candidate order: higher logit, then lower id.
func better(a, b Candidate) bool {
	return a.Logit > b.Logit || (a.Logit == b.Logit && a.ID < b.ID)
}

func cmpCandidates(a, b Candidate) int {
	if better(a, b) {
		return -1
	}
	if better(b, a) {
		return 1
	}
	return 0
}

// Distribution runs the chain without drawing: it returns the candidates
// left for the draw, best first when a filter sorted them (otherwise by id),
// with their final logits and probabilities. The slice is reused by the
// next call. Greedy parameters give the single best token.
func (s *Sampler) Distribution(logits []float32) ([]Candidate, error) {
	if len(logits) != s.vocab {
		return nil, fmt.Errorf("sample: got %d logits for a vocabulary of %d", len(logits), s.vocab)
	}
	if s.p.Temperature == 0 {
		return s.greedy(logits)
	}
	cands := s.cands[:len(logits)]
	anyFinite := false
	for i, l := range logits {
		if math.IsNaN(float64(l)) || math.IsInf(float64(l), 1) {
			return nil, fmt.Errorf("sample: logit of token %d is %v", i, l)
		}
		if !math.IsInf(float64(l), -1) {
			anyFinite = true
		}
		cands[i] = Candidate{ID: int32(i), Logit: l}
	}
	if !anyFinite {
		return nil, errors.New("sample: every logit is -Inf")
	}
	s.applyPenalties(cands)

	sorted := false
	if k := s.p.TopK; k > 0 && k < len(cands) {
		cands = s.selectBest(cands, k)
		sorted = true
	}
	if s.p.TopP < 1 {
		cands = s.topP(cands, sorted)
		sorted = true
	}
	if s.p.MinP > 0 {
		cands = minP(cands, s.p.MinP, sorted)
	}
	s.softmax(cands, s.p.Temperature)
	return cands, nil
}

// greedy returns the best penalised logit (lowest id among equals) without
// building the candidate set: only the penalised tokens need a second look.
func (s *Sampler) greedy(logits []float32) ([]Candidate, error) {
	penalised := s.markPenalised()
	best := -1
	for i, l := range logits {
		if math.IsNaN(float64(l)) || math.IsInf(float64(l), 1) {
			return nil, fmt.Errorf("sample: logit of token %d is %v", i, l)
		}
		if penalised && s.stamp[i] == s.round {
			continue
		}
		if math.IsInf(float64(l), -1) {
			continue
		}
		if best < 0 || l > logits[best] {
			best = i
		}
	}
	bestLogit := float32(math.Inf(-1))
	if best >= 0 {
		bestLogit = logits[best]
	}
	if penalised {
		for _, id := range s.window[:s.filled] {
			if s.stamp[id] != s.round {
				continue // already looked at
			}
			s.stamp[id] = s.round - 1
			l := s.penalise(logits[id], id)
			if math.IsInf(float64(l), -1) {
				continue
			}
			if best < 0 || l > bestLogit || (l == bestLogit && int(id) < best) {
				best, bestLogit = int(id), l
			}
		}
	}
	if best < 0 {
		return nil, errors.New("sample: every logit is -Inf")
	}
	s.cands[0] = Candidate{ID: int32(best), Logit: bestLogit, Prob: 1}
	return s.cands[:1], nil
}

// markPenalised stamps the tokens of the penalty window with a new round
// number and reports whether penalties apply at all.
func (s *Sampler) markPenalised() bool {
	p := s.p
	if s.filled == 0 || (p.RepeatPenalty == 1 && p.PresencePenalty == 0 && p.FrequencyPenalty == 0) {
		return false
	}
	s.round += 2     // greedy also uses round-1 as "done"
	if s.round < 2 { // the stamps wrapped around: clear them
		clear(s.stamp)
		s.round = 2
	}
	for _, id := range s.window[:s.filled] {
		s.stamp[id] = s.round
	}
	return true
}

// penalise applies the penalties to the logit of a token in the window.
func (s *Sampler) penalise(l float32, id int32) float32 {
	if l <= 0 {
		l *= s.p.RepeatPenalty
	} else {
		l /= s.p.RepeatPenalty
	}
	return l - (float32(s.counts[id])*s.p.FrequencyPenalty + s.p.PresencePenalty)
}

func (s *Sampler) applyPenalties(cands []Candidate) {
	if !s.markPenalised() {
		return
	}
	for _, id := range s.window[:s.filled] {
		if s.stamp[id] != s.round {
			continue // already penalised
		}
		s.stamp[id] = s.round - 1
		cands[id].Logit = s.penalise(cands[id].Logit, id)
	}
}

// selectBest returns the k best candidates, best first, in scratch space;
// cands is left as it was.
func (s *Sampler) selectBest(cands []Candidate, k int) []Candidate {
	// A min-heap (worst of the best at the root) of size k.
	h := s.heap[:0]
	for _, c := range cands {
		if len(h) < k {
			h = append(h, c)
			for i := len(h) - 1; i > 0; {
				p := (i - 1) / 2
				if !better(h[p], h[i]) {
					break
				}
				h[i], h[p] = h[p], h[i]
				i = p
			}
			continue
		}
		if !better(c, h[0]) {
			continue
		}
		h[0] = c
		for i := 0; ; {
			m := 2*i + 1
			if m >= len(h) {
				break
			}
			if r := m + 1; r < len(h) && better(h[m], h[r]) {
				m = r
			}
			if !better(h[i], h[m]) {
				break
			}
			h[i], h[m] = h[m], h[i]
			i = m
		}
	}
	slices.SortFunc(h, cmpCandidates)
	return h
}

// topP keeps the smallest best-first prefix whose probability (at
// temperature 1) reaches TopP, as llama.cpp's top-p with min_keep 1.
func (s *Sampler) topP(cands []Candidate, sorted bool) []Candidate {
	if sorted {
		return nucleus(cands, cands[0].Logit, s.p.TopP)
	}
	// Unsorted: histogram the probability mass by distance below the best
	// logit, find the bucket where the mass reaches TopP, and sort only the
	// tokens up to one bucket past it. If rounding leaves the exact prefix
	// short of TopP, fall back to sorting everything.
	const bucketsPerNat, maxDist = 8, 32
	var mass [bucketsPerNat*maxDist + 1]float64
	maxLogit := cands[0].Logit
	for _, c := range cands {
		maxLogit = max(maxLogit, c.Logit)
	}
	bucketOf := func(l float32) int {
		d := float64(maxLogit - l)
		if d >= maxDist || math.IsNaN(d) {
			return len(mass) - 1
		}
		return int(d * bucketsPerNat)
	}
	total := 0.0
	for _, c := range cands {
		e := math.Exp(float64(c.Logit - maxLogit))
		total += e
		mass[bucketOf(c.Logit)] += e
	}
	last, cum := len(mass)-1, 0.0
	for b, m := range mass {
		cum += m
		if cum >= float64(s.p.TopP)*total {
			last = min(b+1, len(mass)-1)
			break
		}
	}
	h := s.heap[:0]
	for _, c := range cands {
		if bucketOf(c.Logit) <= last {
			h = append(h, c)
		}
	}
	slices.SortFunc(h, cmpCandidates)
	if kept := nucleusLen(h, maxLogit, total, s.p.TopP); kept > 0 {
		return h[:kept]
	}
	h = append(h[:0], cands...)
	slices.SortFunc(h, cmpCandidates)
	return nucleus(h, maxLogit, s.p.TopP)
}

// nucleus cuts sorted candidates after the prefix reaching mass p.
func nucleus(sorted []Candidate, maxLogit, p float32) []Candidate {
	total := 0.0
	for _, c := range sorted {
		total += math.Exp(float64(c.Logit - maxLogit))
	}
	if n := nucleusLen(sorted, maxLogit, total, p); n > 0 {
		return sorted[:n]
	}
	return sorted
}

// nucleusLen is the length of the shortest prefix of sorted whose mass
// reaches p, or 0 if the whole slice does not.
func nucleusLen(sorted []Candidate, maxLogit float32, total float64, p float32) int {
	cum := 0.0
	for i, c := range sorted {
		cum += math.Exp(float64(c.Logit-maxLogit)) / total
		if cum >= float64(p) {
			return i + 1
		}
	}
	return 0
}

// minP keeps tokens whose logit is at least max + ln(p), i.e. whose
// probability is at least p times the largest.
func minP(cands []Candidate, p float32, sorted bool) []Candidate {
	maxLogit := cands[0].Logit
	if !sorted {
		for _, c := range cands {
			maxLogit = max(maxLogit, c.Logit)
		}
	}
	threshold := maxLogit + float32(math.Log(float64(p)))
	if sorted {
		n := 1
		for n < len(cands) && cands[n].Logit >= threshold {
			n++
		}
		return cands[:n]
	}
	n := 0
	for _, c := range cands {
		if c.Logit >= threshold {
			cands[n] = c
			n++
		}
	}
	return cands[:n]
}

// softmax applies the temperature and sets Prob (and s.probs). The
// probabilities use (logit - max) / temperature, which cannot overflow for
// tiny temperatures the way logit / temperature can.
func (s *Sampler) softmax(cands []Candidate, temperature float32) {
	maxLogit := cands[0].Logit
	for _, c := range cands {
		maxLogit = max(maxLogit, c.Logit)
	}
	invT := 1 / float64(temperature)
	total := 0.0
	probs := s.probs[:len(cands)]
	for i, c := range cands {
		probs[i] = math.Exp(float64(c.Logit-maxLogit) * invT)
		total += probs[i]
	}
	for i := range cands {
		probs[i] /= total
		cands[i].Prob = float32(probs[i])
		cands[i].Logit /= temperature
	}
}
