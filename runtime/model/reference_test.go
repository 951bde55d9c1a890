package model

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/wgllm/wgllm/internal/sharedfiles"
	"github.com/wgllm/wgllm/ops/ref"
	"github.com/wgllm/wgllm/runtime/gguf"
	"github.com/wgllm/wgllm/runtime/half"
)

// Dequantizer turns a tensor's stored bytes into n float32 values.
type Dequantizer func(t gguf.GGMLType, data []byte, n int) ([]float32, error)

// reference runs an architecture's forward pass in float64 on the host,
// one token at a time, through the same Arch.Forward the GPU runs: its
// Block is the plainest code that could be right, on ops/ref. So every
// architecture has its float64 reference, and a GPU result that differs
// points at the kernels or the fusions, not at the architecture's code
// (which the zoo tests check against llama.cpp).
type reference struct {
	Cfg    Config
	arch   Arch
	w      map[string][]float64 // dequantised weights by tensor name
	kc, vc [][]float64          // per layer: [pos][kvHeads·hd], flattened
	token  int
	x      []float64 // the residual stream of the token [dim]
	logits []float64
	hidden []float64
	// geluF16 computes GELU as llama.cpp's CPU backend does (an f16 table
	// of f32 GELU at f16 inputs, GGML_GELU_FP16), to show what separates
	// our exact GELU from its references.
	geluF16 bool
}

func newReference(f *gguf.File, deq Dequantizer) (*reference, error) {
	c, arch, err := configure(f)
	if err != nil {
		return nil, err
	}
	ss, err := slots(arch, c)
	if err != nil {
		return nil, err
	}
	bound, err := match(f, ss)
	if err != nil {
		return nil, err
	}
	r := &reference{Cfg: c, arch: arch, w: map[string][]float64{}}
	for _, b := range bound {
		*b.w = Weight{Name: b.info.Name}
		if _, done := r.w[b.info.Name]; done {
			continue
		}
		raw, err := f.ReadTensor(b.info)
		if err != nil {
			return nil, err
		}
		n := int(b.info.Elements())
		v, err := deq(b.info.Type, raw, n)
		if err != nil {
			return nil, fmt.Errorf("tensor %s: %w", b.info.Name, err)
		}
		out := make([]float64, n)
		for i, x := range v {
			out[i] = float64(x)
		}
		r.w[b.info.Name] = out
	}
	r.Reset()
	return r, nil
}

// Reset empties the KV cache.
func (r *reference) Reset() {
	r.kc = make([][]float64, r.Cfg.Layers)
	r.vc = make([][]float64, r.Cfg.Layers)
}

// Pos is the number of tokens in the cache.
func (r *reference) Pos() int { return len(r.kc[0]) / (r.Cfg.KVHeads * r.Cfg.HeadDim) }

// Forward appends one token and returns the logits after it.
func (r *reference) Forward(token int) ([]float64, error) {
	if token < 0 || token >= r.Cfg.Vocab {
		return nil, fmt.Errorf("token %d outside vocabulary of %d", token, r.Cfg.Vocab)
	}
	r.token = token
	r.arch.Forward(r)
	return r.logits, nil
}

func (r *reference) weight(w Weight) []float64 {
	v, ok := r.w[w.Name]
	if !ok {
		panic("reference: weight " + w.Name + " not bound")
	}
	return v
}

func (r *reference) matVec(w Weight, x []float64) []float64 {
	wv := r.weight(w)
	out := make([]float64, len(wv)/len(x))
	ref.MatVec(out, wv, x, 1, len(out), len(x))
	return out
}

func (r *reference) norm(x []float64, w Weight) []float64 {
	out := make([]float64, len(x))
	ref.RMSNorm(out, x, r.weight(w), 1, len(x), r.Cfg.NormEps)
	return out
}

func row(a Act) []float64 { return a.host[0] }

func (r *reference) Config() Config { return r.Cfg }

func (r *reference) MaxSeqLen() int { return r.Cfg.CtxLen }

func (r *reference) Embed(table Weight, scale float32) {
	d := r.Cfg.Dim
	r.x = append([]float64(nil), r.weight(table)[r.token*d:(r.token+1)*d]...)
	if scale != 0 && scale != 1 {
		ref.Scale(r.x, r.x, float64(scale))
	}
}

func (r *reference) Layer(int) {}

func (r *reference) QKV(norm Weight, a *AttnWeights) (q, k, v Act) {
	c := r.Cfg
	qd, kvd := c.Heads*c.HeadDim, c.KVHeads*c.HeadDim
	h := r.norm(r.x, norm)
	var qv, kv, vv []float64
	if a.QKV.Has() {
		qkv := r.matVec(a.QKV, h)
		if a.QKVB.Has() {
			ref.Add(qkv, qkv, r.weight(a.QKVB))
		}
		qv, kv, vv = qkv[:qd], qkv[qd:qd+kvd], qkv[qd+kvd:]
	} else {
		qv, kv, vv = r.matVec(a.Q, h), r.matVec(a.K, h), r.matVec(a.V, h)
	}
	for _, b := range []struct {
		dst []float64
		w   Weight
	}{{qv, a.BQ}, {kv, a.BK}, {vv, a.BV}} {
		if b.w.Has() {
			ref.Add(b.dst, b.dst, r.weight(b.w))
		}
	}
	return Act{host: [][]float64{qv}}, Act{host: [][]float64{kv}}, Act{host: [][]float64{vv}}
}

func (r *reference) HeadNorms(q, k Act, qNorm, kNorm Weight) {
	hd := r.Cfg.HeadDim
	for _, h := range []struct {
		t Act
		w Weight
	}{{q, qNorm}, {k, kNorm}} {
		v := row(h.t)
		ref.RMSNorm(v, v, r.weight(h.w), len(v)/hd, hd, r.Cfg.NormEps)
	}
}

func (r *reference) Attention(li int, q, k, v Act, o AttnOpts) Act {
	c := r.Cfg
	pos := len(r.kc[li]) / (c.KVHeads * c.HeadDim)
	y := ref.YaRN{FreqScale: c.RopeScale, ExtFactor: c.YarnExtFactor, AttnFactor: c.YarnAttnFactor,
		BetaFast: c.YarnBetaFast, BetaSlow: c.YarnBetaSlow, OrigCtx: c.RopeOrigCtx}
	base := c.RopeBase
	if o.Rope.Base != 0 {
		base = o.Rope.Base
	}
	if o.Rope.FreqScale != 0 {
		y.FreqScale = o.Rope.FreqScale
	}
	var factors []float64
	if o.Rope.Factors.Has() {
		factors = r.weight(o.Rope.Factors)
	}
	angle := func(_, i int) float64 {
		ff := 1.0
		if factors != nil {
			ff = factors[i]
		}
		return y.Angle(float64(pos), i, c.RopeDims, base, ff)
	}
	neox := c.RopeMode == RopeNeox
	qv, kv := row(q), row(k)
	ref.RoPEScaled(qv, qv, 1, c.Heads, c.HeadDim, c.RopeDims, neox, angle, y.MScale())
	ref.RoPEScaled(kv, kv, 1, c.KVHeads, c.HeadDim, c.RopeDims, neox, angle, y.MScale())
	r.kc[li] = append(r.kc[li], kv...)
	r.vc[li] = append(r.vc[li], row(v)...)
	n := pos + 1
	sc := float64(o.Scale)
	if sc == 0 {
		sc = 1 / math.Sqrt(float64(c.HeadDim))
	}
	out := make([]float64, c.Heads*c.HeadDim)
	var sinks []float64
	if o.Sinks.Has() {
		sinks = r.weight(o.Sinks)
	}
	refAttention(out, qv, r.kc[li], r.vc[li], c, n, sc, o, sinks)
	return Act{host: [][]float64{out}}
}

// refAttention is one query's attention over n cached keys: scores
// scaled, soft-capped, windowed, softmax with the optional sink, then the
// weighted sum of values.
func refAttention(out, q, kc, vc []float64, c Config, n int, scale float64, o AttnOpts, sinks []float64) {
	hd, kvd := c.HeadDim, c.KVHeads*c.HeadDim
	group := c.Heads / c.KVHeads
	scores := make([]float64, n)
	for h := 0; h < c.Heads; h++ {
		kvh := h / group
		qh := q[h*hd : (h+1)*hd]
		for t := 0; t < n; t++ {
			kt := kc[t*kvd+kvh*hd : t*kvd+(kvh+1)*hd]
			s := 0.0
			for d := range qh {
				s += qh[d] * kt[d]
			}
			s *= scale
			if o.SoftCap != 0 {
				s = float64(o.SoftCap) * math.Tanh(s/float64(o.SoftCap))
			}
			if o.Window > 0 && (n-1)-t >= o.Window {
				s = math.Inf(-1)
			}
			scores[t] = s
		}
		mx := math.Inf(-1)
		for _, s := range scores {
			mx = math.Max(mx, s)
		}
		if sinks != nil { // gpt-oss: the head's sink logit joins the softmax
			mx = math.Max(mx, sinks[h])
		}
		sum := 0.0
		for t := range scores {
			scores[t] = math.Exp(scores[t] - mx)
			sum += scores[t]
		}
		if sinks != nil {
			sum += math.Exp(sinks[h] - mx)
		}
		oh := out[h*hd : (h+1)*hd]
		for t := 0; t < n; t++ {
			vt := vc[t*kvd+kvh*hd : t*kvd+(kvh+1)*hd]
			p := scores[t] / sum
			for d := range oh {
				oh[d] += p * vt[d]
			}
		}
	}
}

func (r *reference) Residual(in Act, w Weight, postNorm Weight) {
	t := r.matVec(w, row(in))
	if postNorm.Has() {
		t = r.norm(t, postNorm)
	}
	ref.Add(r.x, r.x, t)
}

func (r *reference) FFN(norm Weight, f FFN, act Activation) Act {
	w := f.parts()
	h := r.norm(r.x, norm)
	var g, u []float64
	if w.Gate.Has() {
		g, u = r.matVec(w.Gate, h), r.matVec(w.Up, h)
	} else {
		gu := r.matVec(w.GateUp, h)
		g, u = gu[:len(gu)/2], gu[len(gu)/2:]
	}
	r.activate(g, u, act)
	return Act{host: [][]float64{g}}
}

// activate sets g = act(g, u).
func (r *reference) activate(g, u []float64, act Activation) {
	switch act {
	case ActSiLU:
		ref.SiluMul(g, g, u)
	case ActGELU:
		if r.geluF16 {
			geluTableMul(g, u)
		} else {
			ref.GeluMul(g, g, u)
		}
	case ActSwiGLUOAI:
		ref.SwiGLUOAIMul(g, g, u)
	default:
		panic("reference: unknown activation")
	}
}

// expert is expert e's matrix of the stacked w [experts, rows, cols] times
// x, plus expert e's row of bias when bound.
func (r *reference) expert(w Weight, e int, x []float64, bias Weight) []float64 {
	all := r.weight(w)
	per := len(all) / r.Cfg.Experts
	out := make([]float64, per/len(x))
	ref.MatVec(out, all[e*per:(e+1)*per], x, 1, len(out), len(x))
	if bias.Has() {
		ref.Add(out, out, r.weight(bias)[e*len(out):(e+1)*len(out)])
	}
	return out
}

func (r *reference) MoE(norm Weight, e *ExpertWeights, o MoEOpts) {
	h := r.norm(r.x, norm)
	logits := r.matVec(e.Router, h)
	if e.RouterB.Has() {
		ref.Add(logits, logits, r.weight(e.RouterB))
	}
	scale := float64(o.Scale)
	if scale == 0 {
		scale = 1
	}
	ids, w := ref.Route(logits, r.Cfg.ExpertsUsed, int(o.Gating), o.Normalize, scale)
	sum := make([]float64, r.Cfg.Dim)
	for j, ex := range ids {
		g, u := r.expert(e.Gate, ex, h, e.GateB), r.expert(e.Up, ex, h, e.UpB)
		r.activate(g, u, o.Act)
		d := r.expert(e.Down, ex, g, e.DownB)
		for i := range sum {
			sum[i] += w[j] * d[i]
		}
	}
	if sh := o.Shared; sh != nil {
		g, u := r.matVec(sh.Gate, h), r.matVec(sh.Up, h)
		ref.SiluMul(g, g, u)
		d := r.matVec(sh.Down, g)
		gate := ref.Sigmoid(r.matVec(sh.GateInp, h)[0])
		for i := range sum {
			sum[i] += gate * d[i]
		}
	}
	ref.Add(r.x, r.x, sum)
}

func (r *reference) ResidualBiased(in Act, w, bias Weight) {
	r.Residual(in, w, Weight{})
	ref.Add(r.x, r.x, r.weight(bias))
}

func (r *reference) Head(norm, out Weight, softCap float32) {
	r.hidden = r.norm(r.x, norm)
	r.logits = r.matVec(out, r.hidden)
	if softCap != 0 {
		ref.SoftCap(r.logits, r.logits, float64(softCap))
	}
}

// floatDequant handles the plain float types; quantised types come from
// runtime/quant in the tests that need them.
func floatDequant(t gguf.GGMLType, data []byte, n int) ([]float32, error) {
	out := make([]float32, n)
	switch t {
	case gguf.F32:
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:]))
		}
	case gguf.F16:
		for i := range out {
			out[i] = half.ToFloat32(binary.LittleEndian.Uint16(data[2*i:]))
		}
	default:
		return nil, fmt.Errorf("type %s not handled here", t)
	}
	return out, nil
}

func sharedModel(t *testing.T, name string) string {
	t.Helper()
	return sharedfiles.File(t, "models/"+name)
}

// pieces detokenises SentencePiece ids plainly (▁ is a space, <0xNN> a byte).
func pieces(f *gguf.File, ids []int) string {
	toks, _ := f.Strings("tokenizer.ggml.tokens")
	var b []byte
	for _, id := range ids {
		s := toks[id]
		if strings.HasPrefix(s, "<0x") && len(s) == 6 {
			v, _ := strconv.ParseUint(s[3:5], 16, 8)
			b = append(b, byte(v))
			continue
		}
		b = append(b, strings.ReplaceAll(s, "▁", " ")...)
	}
	return string(b)
}

func greedy(t *testing.T, r *reference, prompt []int, n int) []int {
	t.Helper()
	var logits []float64
	var err error
	for _, tok := range prompt {
		if logits, err = r.Forward(tok); err != nil {
			t.Fatal(err)
		}
	}
	var out []int
	for len(out) < n {
		best := 0
		for i, v := range logits {
			if v > logits[best] {
				best = i
			}
		}
		out = append(out, best)
		if logits, err = r.Forward(best); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func TestReferenceStories260K(t *testing.T) {
	f, err := gguf.Open(sharedModel(t, "stories260K.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := newReference(f, floatDequant)
	if err != nil {
		t.Fatal(err)
	}
	want := "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball. She wanted to play with it, but it was too high."
	got := pieces(f, greedy(t, r, []int{1}, 70))
	if !strings.HasPrefix(strings.TrimPrefix(got, " "), want) {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
}

func TestReferenceKJV(t *testing.T) {
	if testing.Short() {
		t.Skip("slow float64 reference")
	}
	f, err := gguf.Open(sharedModel(t, "kjv-30m-f16.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := newReference(f, floatDequant)
	if err != nil {
		t.Fatal(err)
	}
	// MODELS.md calls this 40 tokens; the text as given takes 41 here (the
	// final newline is token 41), so generate 41 and require it exactly.
	want := " it; and it was made in the end of the doctors.\nAnd the LORD God said, Who shall go out with us? and when he said, Ye shall be holy.\n"
	got := pieces(f, greedy(t, r, []int{1, 1050, 261, 2051, 391, 3372}, 41))
	if got != want {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
}

// geluTableMul is ggml_vec_geglu_f32 with GGML_GELU_FP16: g = table(g)·u.
func geluTableMul(g, u []float64) {
	for i, x := range g {
		xf := float32(x)
		switch {
		case xf <= -10:
			g[i] = 0
		case xf >= 10:
			g[i] = float64(xf) * u[i]
		default:
			xh := float64(half.ToFloat32(half.FromFloat32(xf)))
			gelu := float32(0.5 * xh * (1 + math.Tanh(math.Sqrt(2/math.Pi)*xh*(1+0.044715*xh*xh))))
			g[i] = float64(half.ToFloat32(half.FromFloat32(gelu))) * u[i]
		}
	}
}

// TestGemmaZooDifferenceIsTheGELUTable explains the gemma tolerance of the
// zoo test (runtime/engine TestZoo): with llama.cpp's f16 GELU table the
// float64 reference comes within llama.cpp's own noise on these models
// (its top-10 logits move by up to 0.0166 between batch sizes, the zoo
// README measured, because the table rounds inputs to f16), and at least
// 3× closer than with the exact GELU (measured: 0.042 → 0.011 gemma2,
// 0.077 → 0.0096 gemma3).
func TestGemmaZooDifferenceIsTheGELUTable(t *testing.T) {
	for _, name := range []string{"gemma2", "gemma3"} {
		t.Run(name, func(t *testing.T) {
			f, err := gguf.Open(sharedfiles.File(t, "models/zoo/models/"+name+".gguf"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			raw, err := os.ReadFile(sharedfiles.File(t, "models/zoo/refs/"+name+".json"))
			if err != nil {
				t.Fatal(err)
			}
			var refs struct {
				TopLogits struct {
					Tokens    []int `json:"tokens"`
					Positions []struct {
						Top [][2]float64 `json:"top"`
					} `json:"positions"`
				} `json:"top_logits"`
			}
			if err := json.Unmarshal(raw, &refs); err != nil {
				t.Fatal(err)
			}
			worst := map[bool]float64{}
			for _, table := range []bool{false, true} {
				r, err := newReference(f, floatDequant)
				if err != nil {
					t.Fatal(err)
				}
				r.geluF16 = table
				for p, tok := range refs.TopLogits.Tokens {
					logits, err := r.Forward(tok)
					if err != nil {
						t.Fatal(err)
					}
					for _, pair := range refs.TopLogits.Positions[p].Top {
						worst[table] = math.Max(worst[table], math.Abs(logits[int(pair[0])]-pair[1]))
					}
				}
			}
			t.Logf("max |Δ| top-10 logits against llama.cpp: exact GELU %.3g, f16 GELU table %.3g", worst[false], worst[true])
			if worst[true] > 0.02 || worst[true]*3 > worst[false] {
				t.Errorf("with llama.cpp's GELU table the reference is %.3g from llama.cpp (want ≤ 0.02 and a third of %.3g)", worst[true], worst[false])
			}
		})
	}
}
