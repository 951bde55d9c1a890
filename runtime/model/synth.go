package model

import (
	"fmt"
	"math"
	"math/rand"
	"sort"
	"strings"

	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/runtime/gguf"
	"github.com/wgllm/wgllm/runtime/gpu"
	"github.com/wgllm/wgllm/runtime/quant"
)

// Shapes are real models' hyper-parameters, for benchmarks on random
// weights: speed depends on shapes and types, not on trained values.
var Shapes = map[string]Config{
	"tinyllama-1.1b": {Arch: "llama", Dim: 2048, Layers: 22, Heads: 32, KVHeads: 4, HeadDim: 64, FFN: 5632, Vocab: 32000, CtxLen: 2048},
	"llama2-7b":      {Arch: "llama", Dim: 4096, Layers: 32, Heads: 32, KVHeads: 32, HeadDim: 128, FFN: 11008, Vocab: 32000, CtxLen: 4096},
	"llama3-8b":      {Arch: "llama", Dim: 4096, Layers: 32, Heads: 32, KVHeads: 8, HeadDim: 128, FFN: 14336, Vocab: 128256, CtxLen: 8192, RopeBase: 500000},
	"qwen2.5-0.5b":   {Arch: "qwen2", Dim: 896, Layers: 24, Heads: 14, KVHeads: 2, HeadDim: 64, FFN: 4864, Vocab: 151936, CtxLen: 32768, RopeBase: 1000000, RopeMode: RopeNeox, QKVBias: true, TiedOutput: true},
	"kjv-30m":        {Arch: "llama", Dim: 512, Layers: 8, Heads: 8, KVHeads: 4, HeadDim: 64, FFN: 1536, Vocab: 4096, CtxLen: 512},
}

// ShapeNames lists Shapes in order.
func ShapeNames() []string {
	var n []string
	for k := range Shapes {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

// MixQ4KM is the pseudo-type of llama.cpp's Q4_K_M: Q4_K, with Q6_K for the
// output matrix and for attn_v and ffn_down in the layers llama.cpp gives
// more bits (the first and last eighth, and every third between).
const MixQ4KM gguf.GGMLType = 1 << 20

// ParseWeightType accepts a GGUF type name or "q4_k_m".
func ParseWeightType(s string) (gguf.GGMLType, error) {
	if strings.EqualFold(s, "q4_k_m") {
		return MixQ4KM, nil
	}
	t, ok := gguf.ParseType(s)
	if !ok || !quant.Supported(t) {
		return 0, fmt.Errorf("weight type %q: want one of f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q2_k..q6_k, q4_k_m", s)
	}
	return t, nil
}

func moreBits(layer, n int) bool {
	return layer < n/8 || layer >= 7*n/8 || (layer-n/8)%3 == 2
}

// Synthesize builds a model of the given shape with random weights of type
// typ directly in GPU memory. A pool of random rows is quantised on the host
// and tiled over each matrix, so even multi-gigabyte models appear in seconds.
func Synthesize(ctx *gpu.Context, cfg Config, typ gguf.GGMLType, opt Options, seed int64) (*Model, error) {
	if cfg.NormEps == 0 {
		cfg.NormEps = 1e-5
	}
	if cfg.RopeBase == 0 {
		cfg.RopeBase = 10000
	}
	if cfg.RopeScale == 0 {
		cfg.RopeScale = 1
	}
	if cfg.RopeDims == 0 {
		cfg.RopeDims = cfg.HeadDim
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	opt = opt.withDefaults(cfg)
	m := &Model{Cfg: cfg, ctx: ctx, batch: opt.Batch}
	ok := false
	defer func() {
		if !ok {
			m.Close()
		}
	}()
	rng := rand.New(rand.NewSource(seed))
	c := cfg
	qDim, kvDim := c.Heads*c.HeadDim, c.KVHeads*c.HeadDim
	var err error
	matrix := func(dst *ops.Tensor, name string, t gguf.GGMLType, rows, cols int) {
		if err != nil {
			return
		}
		*dst, err = randomMatrix(ctx, rng, name, t, rows, cols)
		if err == nil {
			m.buffers = append(m.buffers, *dst)
			m.weightBytes += dst.Bytes()
		}
	}
	vector := func(dst *ops.Tensor, name string, n int, center float64) {
		if err != nil {
			return
		}
		*dst, err = randomMatrix(ctx, rng, name, gguf.F32, 1, n)
		if err == nil {
			*dst = dst.View(0, n)
			m.buffers = append(m.buffers, *dst)
			m.weightBytes += dst.Bytes()
		}
	}
	pick := func(layer int, big bool) gguf.GGMLType {
		if typ != MixQ4KM {
			return typ
		}
		if big && (layer < 0 || moreBits(layer, c.Layers)) {
			return gguf.Q6_K
		}
		return gguf.Q4_K
	}
	matrix(&m.Embd, "token_embd.weight", pick(0, false), c.Vocab, c.Dim)
	vector(&m.Norm, "output_norm.weight", c.Dim, 1)
	if c.TiedOutput {
		m.Output = m.Embd
	} else {
		matrix(&m.Output, "output.weight", pick(-1, true), c.Vocab, c.Dim)
	}
	m.Layers = make([]Layer, c.Layers)
	for i := range m.Layers {
		l := &m.Layers[i]
		vector(&l.AttnNorm, blk(i, "attn_norm"), c.Dim, 1)
		vector(&l.FFNNorm, blk(i, "ffn_norm"), c.Dim, 1)
		matrix(&l.Q, blk(i, "attn_q"), pick(i, false), qDim, c.Dim)
		matrix(&l.K, blk(i, "attn_k"), pick(i, false), kvDim, c.Dim)
		matrix(&l.V, blk(i, "attn_v"), pick(i, true), kvDim, c.Dim)
		matrix(&l.O, blk(i, "attn_output"), pick(i, false), c.Dim, qDim)
		matrix(&l.Gate, blk(i, "ffn_gate"), pick(i, false), c.FFN, c.Dim)
		matrix(&l.Up, blk(i, "ffn_up"), pick(i, false), c.FFN, c.Dim)
		matrix(&l.Down, blk(i, "ffn_down"), pick(i, true), c.Dim, c.FFN)
		if c.QKVBias {
			vector(&l.BQ, blkBias(i, "attn_q"), qDim, 0)
			vector(&l.BK, blkBias(i, "attn_k"), kvDim, 0)
			vector(&l.BV, blkBias(i, "attn_v"), kvDim, 0)
		}
		if c.QKNorm {
			vector(&l.QNorm, blk(i, "attn_q_norm"), c.HeadDim, 1)
			vector(&l.KNorm, blk(i, "attn_k_norm"), c.HeadDim, 1)
		}
	}
	if err != nil {
		return nil, err
	}
	if err := m.finish(opt); err != nil {
		return nil, err
	}
	ok = true
	return m, nil
}

// randomMatrix uploads rows×cols values of type t: 61 random rows (a prime,
// so the pattern does not line up with head or block sizes) repeated.
func randomMatrix(ctx *gpu.Context, rng *rand.Rand, name string, t gguf.GGMLType, rows, cols int) (ops.Tensor, error) {
	dt, err := DTypeOf(t)
	if err != nil {
		return ops.Tensor{}, err
	}
	pool := min(rows, 61)
	v := make([]float32, pool*cols)
	scale := 1 / math.Sqrt(float64(cols))
	for i := range v {
		v[i] = float32((rng.Float64()*2 - 1) * scale * 1.7)
	}
	if rows == 1 { // norm weights and biases: near one
		for i := range v {
			v[i] = 1 + v[i]
		}
	}
	raw, err := quant.Quantize(t, v)
	if err != nil {
		return ops.Tensor{}, err
	}
	tensor, err := ops.New(ctx, name, dt, rows, cols)
	if err != nil {
		return ops.Tensor{}, err
	}
	rowBytes := len(raw) / pool
	// Fill a chunk of whole rows from the pool, then write it repeatedly.
	chunkRows := max(4, min(rows, (32<<20)/rowBytes)/4*4) // keeps write offsets 4-byte aligned
	chunk := make([]byte, 0, chunkRows*rowBytes)
	for r := 0; r < chunkRows; r++ {
		p := r % pool
		chunk = append(chunk, raw[p*rowBytes:(p+1)*rowBytes]...)
	}
	for r := 0; r < rows; r += chunkRows {
		n := min(chunkRows, rows-r)
		if err := tensor.Buf.Write(uint64(r*rowBytes), chunk[:n*rowBytes]); err != nil {
			tensor.Buf.Destroy()
			return ops.Tensor{}, err
		}
	}
	return tensor, nil
}
