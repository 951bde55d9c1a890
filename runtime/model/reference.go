package model

import (
	"fmt"
	"math"

	"github.com/wgllm/wgllm/runtime/gguf"
)

// Dequantizer turns a tensor's stored bytes into n float32 values.
type Dequantizer func(t gguf.GGMLType, data []byte, n int) ([]float32, error)

// Reference is a float64 CPU forward pass, the plainest code that could be
// right: the yardstick for the GPU forward pass. It is slow and meant for
// tests on small models.
type Reference struct {
	Cfg            Config
	emb            []float64 // [vocab][dim]
	out            []float64 // [vocab][dim]
	norm           []float64
	layers         []refLayer
	kCache, vCache [][]float64 // per layer: [pos][kvHeads*headDim]
}

type refLayer struct {
	attnNorm, ffnNorm []float64
	wq, wk, wv, wo    []float64 // [out][in]
	bq, bk, bv        []float64
	qNorm, kNorm      []float64 // [headDim] (qwen3)
	gate, up, down    []float64
}

// NewReference dequantises every weight of f into float64.
func NewReference(f *gguf.File, deq Dequantizer) (*Reference, error) {
	cfg, err := ConfigFromGGUF(f)
	if err != nil {
		return nil, err
	}
	load := func(name string, want ...int) ([]float64, error) {
		ti, ok := f.Tensor(name)
		if !ok {
			return nil, fmt.Errorf("model: tensor %s missing", name)
		}
		n := 1
		for _, d := range want {
			n *= d
		}
		if int(ti.Elements()) != n {
			return nil, fmt.Errorf("model: tensor %s has dims %v, want %v elements %d", name, ti.Dims, want, n)
		}
		raw, err := f.ReadTensor(ti)
		if err != nil {
			return nil, err
		}
		v, err := deq(ti.Type, raw, n)
		if err != nil {
			return nil, fmt.Errorf("model: tensor %s: %w", name, err)
		}
		out := make([]float64, n)
		for i, x := range v {
			out[i] = float64(x)
		}
		return out, nil
	}
	r := &Reference{Cfg: cfg}
	c := cfg
	if r.emb, err = load("token_embd.weight", c.Vocab, c.Dim); err != nil {
		return nil, err
	}
	if c.TiedOutput {
		r.out = r.emb
	} else if r.out, err = load("output.weight", c.Vocab, c.Dim); err != nil {
		return nil, err
	}
	if r.norm, err = load("output_norm.weight", c.Dim); err != nil {
		return nil, err
	}
	qDim, kvDim := c.Heads*c.HeadDim, c.KVHeads*c.HeadDim
	for i := 0; i < c.Layers; i++ {
		var l refLayer
		for _, w := range []struct {
			dst  *[]float64
			name string
			dims []int
		}{
			{&l.attnNorm, blk(i, "attn_norm"), []int{c.Dim}},
			{&l.ffnNorm, blk(i, "ffn_norm"), []int{c.Dim}},
			{&l.wq, blk(i, "attn_q"), []int{qDim, c.Dim}},
			{&l.wk, blk(i, "attn_k"), []int{kvDim, c.Dim}},
			{&l.wv, blk(i, "attn_v"), []int{kvDim, c.Dim}},
			{&l.wo, blk(i, "attn_output"), []int{c.Dim, qDim}},
			{&l.gate, blk(i, "ffn_gate"), []int{c.FFN, c.Dim}},
			{&l.up, blk(i, "ffn_up"), []int{c.FFN, c.Dim}},
			{&l.down, blk(i, "ffn_down"), []int{c.Dim, c.FFN}},
		} {
			if *w.dst, err = load(w.name, w.dims...); err != nil {
				return nil, err
			}
		}
		if c.QKVBias {
			if l.bq, err = load(blkBias(i, "attn_q"), qDim); err != nil {
				return nil, err
			}
			if l.bk, err = load(blkBias(i, "attn_k"), kvDim); err != nil {
				return nil, err
			}
			if l.bv, err = load(blkBias(i, "attn_v"), kvDim); err != nil {
				return nil, err
			}
		}
		if c.QKNorm {
			if l.qNorm, err = load(blk(i, "attn_q_norm"), c.HeadDim); err != nil {
				return nil, err
			}
			if l.kNorm, err = load(blk(i, "attn_k_norm"), c.HeadDim); err != nil {
				return nil, err
			}
		}
		r.layers = append(r.layers, l)
	}
	r.Reset()
	return r, nil
}

// Reset empties the KV cache.
func (r *Reference) Reset() {
	r.kCache = make([][]float64, r.Cfg.Layers)
	r.vCache = make([][]float64, r.Cfg.Layers)
}

// Pos is the number of tokens in the cache.
func (r *Reference) Pos() int {
	if len(r.kCache) == 0 {
		return 0
	}
	return len(r.kCache[0]) / (r.Cfg.KVHeads * r.Cfg.HeadDim)
}

// Forward appends one token and returns the logits after it.
func (r *Reference) Forward(token int) ([]float64, error) {
	h, err := r.Hidden(token)
	if err != nil {
		return nil, err
	}
	return matVec(r.out, h, r.Cfg.Vocab, r.Cfg.Dim), nil
}

// Hidden appends one token and returns its hidden state after the final
// norm, before the output projection.
func (r *Reference) Hidden(token int) ([]float64, error) {
	c := r.Cfg
	if token < 0 || token >= c.Vocab {
		return nil, fmt.Errorf("model: token %d outside vocabulary of %d", token, c.Vocab)
	}
	pos := r.Pos()
	x := append([]float64(nil), r.emb[token*c.Dim:(token+1)*c.Dim]...)
	h := make([]float64, c.Dim)
	qDim, kvDim := c.Heads*c.HeadDim, c.KVHeads*c.HeadDim
	for li := range r.layers {
		l := &r.layers[li]
		RefRMSNorm(h, x, l.attnNorm, c.NormEps)
		q := matVec(l.wq, h, qDim, c.Dim)
		k := matVec(l.wk, h, kvDim, c.Dim)
		v := matVec(l.wv, h, kvDim, c.Dim)
		if c.QKVBias {
			addTo(q, l.bq)
			addTo(k, l.bk)
			addTo(v, l.bv)
		}
		if c.QKNorm {
			for hd := 0; hd < c.Heads; hd++ {
				s := q[hd*c.HeadDim : (hd+1)*c.HeadDim]
				RefRMSNorm(s, s, l.qNorm, c.NormEps)
			}
			for hd := 0; hd < c.KVHeads; hd++ {
				s := k[hd*c.HeadDim : (hd+1)*c.HeadDim]
				RefRMSNorm(s, s, l.kNorm, c.NormEps)
			}
		}
		for hd := 0; hd < c.Heads; hd++ {
			RefRoPE(q[hd*c.HeadDim:(hd+1)*c.HeadDim], pos, c)
		}
		for hd := 0; hd < c.KVHeads; hd++ {
			RefRoPE(k[hd*c.HeadDim:(hd+1)*c.HeadDim], pos, c)
		}
		r.kCache[li] = append(r.kCache[li], k...)
		r.vCache[li] = append(r.vCache[li], v...)
		n := pos + 1
		att := make([]float64, qDim)
		scale := 1 / math.Sqrt(float64(c.HeadDim))
		group := c.Heads / c.KVHeads
		scores := make([]float64, n)
		for hd := 0; hd < c.Heads; hd++ {
			kv := hd / group
			qh := q[hd*c.HeadDim : (hd+1)*c.HeadDim]
			mx := math.Inf(-1)
			for t := 0; t < n; t++ {
				kt := r.kCache[li][t*kvDim+kv*c.HeadDim : t*kvDim+(kv+1)*c.HeadDim]
				s := 0.0
				for d := range qh {
					s += qh[d] * kt[d]
				}
				scores[t] = s * scale
				mx = math.Max(mx, scores[t])
			}
			sum := 0.0
			for t := 0; t < n; t++ {
				scores[t] = math.Exp(scores[t] - mx)
				sum += scores[t]
			}
			out := att[hd*c.HeadDim : (hd+1)*c.HeadDim]
			for t := 0; t < n; t++ {
				vt := r.vCache[li][t*kvDim+kv*c.HeadDim : t*kvDim+(kv+1)*c.HeadDim]
				p := scores[t] / sum
				for d := range out {
					out[d] += p * vt[d]
				}
			}
		}
		addTo(x, matVec(l.wo, att, c.Dim, qDim))
		RefRMSNorm(h, x, l.ffnNorm, c.NormEps)
		g := matVec(l.gate, h, c.FFN, c.Dim)
		u := matVec(l.up, h, c.FFN, c.Dim)
		for i := range g {
			g[i] = g[i] / (1 + math.Exp(-g[i])) * u[i]
		}
		addTo(x, matVec(l.down, g, c.Dim, c.FFN))
	}
	RefRMSNorm(h, x, r.norm, c.NormEps)
	return h, nil
}

// RefRMSNorm: dst = x / sqrt(mean(x^2) + eps) * w (dst may alias x).
func RefRMSNorm(dst, x, w []float64, eps float64) {
	s := 0.0
	for _, v := range x {
		s += v * v
	}
	scale := 1 / math.Sqrt(s/float64(len(x))+eps)
	for i, v := range x {
		dst[i] = v * scale * w[i]
	}
}

// RefRoPE rotates one head's vector in place for position pos.
func RefRoPE(v []float64, pos int, c Config) {
	n := c.RopeDims
	for i := 0; i < n/2; i++ {
		theta := float64(pos) * c.RopeScale * math.Pow(c.RopeBase, -2*float64(i)/float64(n))
		cos, sin := math.Cos(theta), math.Sin(theta)
		a, b := 2*i, 2*i+1
		if c.RopeMode == RopeNeox {
			a, b = i, i+n/2
		}
		x0, x1 := v[a], v[b]
		v[a] = x0*cos - x1*sin
		v[b] = x0*sin + x1*cos
	}
}

func matVec(w, x []float64, rows, cols int) []float64 {
	out := make([]float64, rows)
	for r := 0; r < rows; r++ {
		row := w[r*cols : (r+1)*cols]
		s := 0.0
		for c, v := range row {
			s += v * x[c]
		}
		out[r] = s
	}
	return out
}

func addTo(dst, x []float64) {
	for i := range dst {
		dst[i] += x[i]
	}
}
