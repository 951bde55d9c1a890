package model

import (
	"fmt"
	"math"
	"math/rand"
	"regexp"
	"slices"
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
	"llama3-8b": {Arch: "llama", Dim: 4096, Layers: 32, Heads: 32, KVHeads: 8, HeadDim: 128, FFN: 14336, Vocab: 128256, CtxLen: 8192, RopeBase: 500000,
		With: []string{"rope_freqs.weight"}},
	"qwen2.5-0.5b": {Arch: "qwen2", Dim: 896, Layers: 24, Heads: 14, KVHeads: 2, HeadDim: 64, FFN: 4864, Vocab: 151936, CtxLen: 32768, RopeBase: 1000000,
		With: []string{"attn_q.bias", "attn_k.bias", "attn_v.bias"}, Without: []string{"output.weight"}},
	"kjv-30m": {Arch: "llama", Dim: 512, Layers: 8, Heads: 8, KVHeads: 4, HeadDim: 64, FFN: 1536, Vocab: 4096, CtxLen: 512},
	"qwen3-8b": {Arch: "qwen3", Dim: 4096, Layers: 36, Heads: 32, KVHeads: 8, HeadDim: 128, FFN: 12288, Vocab: 151936, CtxLen: 40960,
		RopeBase: 1000000, NormEps: 1e-6},
	"gemma2-2b": {Arch: "gemma2", Dim: 2304, Layers: 26, Heads: 8, KVHeads: 4, HeadDim: 256, FFN: 9216, Vocab: 256000, CtxLen: 8192,
		NormEps: 1e-6, Without: []string{"output.weight"},
		Extra: []gguf.KV{archKV("gemma2", "attention.sliding_window", uint32(4096)),
			archKV("gemma2", "attn_logit_softcapping", float32(50)), archKV("gemma2", "final_logit_softcapping", float32(30))}},
	"gemma3-4b": {Arch: "gemma3", Dim: 2560, Layers: 34, Heads: 8, KVHeads: 4, HeadDim: 256, FFN: 10240, Vocab: 262144, CtxLen: 131072,
		NormEps: 1e-6, RopeBase: 1000000, RopeScale: 0.125, Without: []string{"output.weight"},
		Extra: []gguf.KV{archKV("gemma3", "attention.sliding_window", uint32(1024)), archKV("gemma3", "rope.freq_base_swa", float32(10000))}},
	"phi4-mini": {Arch: "phi3", Dim: 3072, Layers: 32, Heads: 24, KVHeads: 8, HeadDim: 128, FFN: 8192, Vocab: 200064, CtxLen: 131072,
		RopeDims: 96, With: []string{"attn_qkv.weight", "rope_factors_long.weight", "rope_factors_short.weight"}, Without: []string{"output.weight"},
		Extra: []gguf.KV{archKV("phi3", "rope.scaling.original_context_length", uint32(4096)), archKV("phi3", "rope.scaling.attn_factor", float32(1.1902))}},
	"qwen3-30b-a3b": {Arch: "qwen3moe", Dim: 2048, Layers: 48, Heads: 32, KVHeads: 4, HeadDim: 128, FFN: 6144, Vocab: 151936, CtxLen: 40960,
		RopeBase: 1000000, NormEps: 1e-6, Experts: 128, ExpertsUsed: 8, ExpertFFN: 768},
	"gpt-oss-20b": {Arch: "gpt-oss", Dim: 2880, Layers: 24, Heads: 64, KVHeads: 8, HeadDim: 64, FFN: 2880, Vocab: 201088, CtxLen: 131072,
		RopeBase: 150000, Experts: 32, ExpertsUsed: 4, ExpertFFN: 2880,
		With: []string{"attn_q.bias", "attn_k.bias", "attn_v.bias", "ffn_gate_inp.bias", "ffn_gate_exps.bias", "ffn_up_exps.bias", "ffn_down_exps.bias"},
		Extra: []gguf.KV{archKV("gpt-oss", "attention.sliding_window", uint32(128)), archKV("gpt-oss", "rope.scaling.type", "yarn"),
			archKV("gpt-oss", "rope.scaling.factor", float32(32)), archKV("gpt-oss", "rope.scaling.original_context_length", uint32(4096))}},
	"glm4-9b": {Arch: "glm4", Dim: 4096, Layers: 40, Heads: 32, KVHeads: 2, HeadDim: 128, FFN: 13696, Vocab: 151552, CtxLen: 32768,
		RopeDims: 64, With: []string{"attn_q.bias", "attn_k.bias", "attn_v.bias"}},
}

func archKV(arch, key string, v any) gguf.KV {
	return gguf.KV{Key: arch + "." + key, Value: gguf.Val(v)}
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

// withDefaults fills the hyper-parameters a shape may leave out.
func (c Config) withDefaults() Config {
	if c.NormEps == 0 {
		c.NormEps = 1e-5
	}
	if c.RopeBase == 0 {
		c.RopeBase = 10000
	}
	if c.RopeScale == 0 {
		c.RopeScale = 1
	}
	if c.RopeDims == 0 {
		c.RopeDims = c.HeadDim
	}
	if c.CtxLen == 0 {
		c.CtxLen = 2048
	}
	if c.YarnAttnFactor == 0 {
		c.YarnAttnFactor = 1
	}
	c.TiedOutput = slices.Contains(c.Without, "output.weight")
	return c
}

var layerPrefix = regexp.MustCompile(`^blk\.(\d+)\.`)

// synthPlan picks the tensors a random-weight model of c has: every
// required slot's first name unless c.Without drops it (then its
// alternative, which must exist: a tied head), optional slots that c.With
// names, and no slot made optional by an alternative that c.With names.
// alias maps a slot to the name of another tensor it shares.
type synthSlot struct {
	slot
	name  string
	alias bool // bound to a tensor made for an earlier slot
	layer int  // -1 outside the layers
}

func synthPlan(ss []slot, c Config) ([]synthSlot, error) {
	short := func(name string) string { return layerPrefix.ReplaceAllString(name, "") }
	made := map[string]bool{}
	var plan []synthSlot
	for _, s := range ss {
		if s.unless != "" && slices.Contains(c.With, short(s.unless)) {
			continue
		}
		if s.opt && !slices.Contains(c.With, short(s.names[0])) {
			continue
		}
		name := ""
		for _, n := range s.names {
			if !slices.Contains(c.Without, short(n)) {
				name = n
				break
			}
		}
		if name == "" {
			return nil, fmt.Errorf("model: shape leaves out every name of %v", s.names)
		}
		layer := -1
		if m := layerPrefix.FindStringSubmatch(name); m != nil {
			fmt.Sscan(m[1], &layer)
		}
		plan = append(plan, synthSlot{slot: s, name: name, alias: made[name], layer: layer})
		made[name] = true
	}
	return plan, nil
}

// typeFor is the stored type of a synthesised tensor: vectors stay F32 (as
// llama.cpp keeps norms and biases), matrices typ or the Q4_K_M mix.
//
// With experts, as llama-quantize: the router (ffn_gate_inp) and biases stay
// F32, MXFP4 (MXFP4_MOE) is for the stacked experts with Q8_0 for the other
// matrices, and Q4_K_M treats ffn_down_exps as ffn_down.
func typeFor(s synthSlot, typ gguf.GGMLType, c Config) gguf.GGMLType {
	short := layerPrefix.ReplaceAllString(s.name, "")
	if len(s.shape) < 2 || strings.HasSuffix(short, ".bias") || short == "ffn_gate_inp.weight" {
		return gguf.F32
	}
	cols := s.shape[len(s.shape)-1]
	if typ == gguf.MXFP4 && c.Experts > 0 && !strings.Contains(short, "_exps.") {
		return fitType(gguf.Q8_0, cols)
	}
	if typ != MixQ4KM {
		return fitType(typ, cols)
	}
	big := short == "output.weight" ||
		((short == "attn_v.weight" || short == "ffn_down.weight" || short == "ffn_down_exps.weight") && moreBits(s.layer, c.Layers))
	if big {
		return fitType(gguf.Q6_K, cols)
	}
	return fitType(gguf.Q4_K, cols)
}

// matrixRows is a synthesised tensor's rows: every dimension but the last
// (a stack of experts is experts × rows).
func matrixRows(shape []int) int {
	n := 1
	for _, d := range shape[:len(shape)-1] {
		n *= d
	}
	return n
}

// fitType is t, or Q8_0 when rows of cols values are not whole blocks of t
// (llama.cpp falls back likewise, e.g. GLM-4's ffn_down of 13696).
func fitType(t gguf.GGMLType, cols int) gguf.GGMLType {
	if dt, err := DTypeOf(t); err == nil && cols%dt.BlockSize() != 0 {
		return gguf.Q8_0
	}
	return t
}

// vectorValues are the values of a synthesised vector: norm gains and rope
// factors near one, biases near zero.
func vectorValues(rng *rand.Rand, name string, n int) []float32 {
	v := make([]float32, n)
	center := 1.0
	if strings.HasSuffix(name, ".bias") || strings.Contains(name, "sinks") {
		center = 0
	}
	for i := range v {
		v[i] = float32(center + 0.2*(rng.Float64()*2-1))
	}
	return v
}

// Synthesize builds a model of the given shape with random weights of type
// typ directly in GPU memory. A pool of random rows is quantised on the host
// and tiled over each matrix, so even multi-gigabyte models appear in seconds.
func Synthesize(ctx *gpu.Context, cfg Config, typ gguf.GGMLType, opt Options, seed int64) (*Model, error) {
	cfg, arch, err := shapeConfig(cfg)
	if err != nil {
		return nil, err
	}
	ss, err := slots(arch, cfg)
	if err != nil {
		return nil, err
	}
	plan, err := synthPlan(ss, cfg)
	if err != nil {
		return nil, err
	}
	if err := checkKVType(opt.KVType); err != nil {
		return nil, err
	}
	opt = opt.withDefaults(cfg)
	m := newModel(ctx, cfg, arch, opt)
	ok := false
	defer func() {
		if !ok {
			m.Close()
		}
	}()
	rng := rand.New(rand.NewSource(seed))
	made := map[string]ops.Tensor{}
	for _, s := range plan {
		t, seen := made[s.name]
		if !seen {
			if len(s.shape) < 2 {
				t, err = ops.FromFloat32(ctx, s.name, ops.F32, vectorValues(rng, s.name, s.shape[0]), s.shape...)
			} else {
				t, err = randomMatrix(ctx, rng, s.name, typeFor(s, typ, cfg), matrixRows(s.shape), s.shape[len(s.shape)-1])
				t.Shape = s.shape
			}
			if err != nil {
				return nil, err
			}
			made[s.name] = t
			m.buffers = append(m.buffers, t)
			m.weights = append(m.weights, t)
			m.weightBytes += t.Bytes()
			if isExperts(s.name) {
				m.expertBytes += t.Bytes()
			}
		}
		*s.w = Weight{Tensor: t, Name: s.name}
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

// RandomGGUF returns the metadata and tensors of a GGUF file of shape cfg
// with random weights (matrices of type typ), derived from the
// architecture's tagged weights like Load and Synthesize: for tests and
// test-model files. extra adds architecture keys (soft-caps, windows).
func RandomGGUF(cfg Config, typ gguf.GGMLType, seed int64) ([]gguf.KV, []gguf.TensorToWrite, error) {
	cfg, arch, err := shapeConfig(cfg)
	if err != nil {
		return nil, nil, err
	}
	ss, err := slots(arch, cfg)
	if err != nil {
		return nil, nil, err
	}
	plan, err := synthPlan(ss, cfg)
	if err != nil {
		return nil, nil, err
	}
	meta := shapeMeta(cfg)
	rng := rand.New(rand.NewSource(seed))
	pool := randomPool(rng)
	var tensors []gguf.TensorToWrite
	for _, s := range plan {
		if s.alias {
			continue
		}
		n := 1
		dims := make([]uint64, len(s.shape))
		for i, d := range s.shape {
			n *= d
			dims[len(s.shape)-1-i] = uint64(d) // GGUF lists the innermost first
		}
		var v []float32
		t := typeFor(s, typ, cfg)
		if len(s.shape) < 2 {
			v = vectorValues(rng, s.name, n)
		} else {
			scale := 1.7 / math.Sqrt(float64(s.shape[len(s.shape)-1]))
			if s.name == "token_embd.weight" {
				scale = 1
			}
			if n > tileAbove {
				data, err := tiledRows(rng, pool, t, matrixRows(s.shape), s.shape[len(s.shape)-1], scale)
				if err != nil {
					return nil, nil, fmt.Errorf("model: quantising %s as %s: %w", s.name, t, err)
				}
				tensors = append(tensors, gguf.TensorToWrite{Name: s.name, Dims: dims, Type: t, Data: data})
				continue
			}
			v = randomValues(rng, pool, n, scale)
		}
		data, err := quant.Quantize(t, v)
		if err != nil {
			return nil, nil, fmt.Errorf("model: quantising %s as %s: %w", s.name, t, err)
		}
		tensors = append(tensors, gguf.TensorToWrite{Name: s.name, Dims: dims, Type: t, Data: data})
	}
	return meta, tensors, nil
}

// tileAbove is the size past which RandomGGUF quantises a pool of rows and
// repeats it, as Synthesize does: quantising every value of a 30B model
// one by one takes an hour on one core (Q4_K: about 5 M values/s), and
// speed does not depend on the values. Test models stay far below it.
const tileAbove = 1 << 24

// tiledRows is rows×cols values of type t: 61 quantised random rows (a
// prime, so the pattern lines up with no head, block or expert size)
// repeated.
func tiledRows(rng *rand.Rand, pool []float32, t gguf.GGMLType, rows, cols int, scale float64) ([]byte, error) {
	n := min(rows, 61)
	raw, err := quant.Quantize(t, randomValues(rng, pool, n*cols, scale))
	if err != nil {
		return nil, err
	}
	rowBytes := len(raw) / n
	out := make([]byte, rows*rowBytes)
	for r := 0; r < rows; r += n {
		copy(out[r*rowBytes:], raw[:min(n, rows-r)*rowBytes])
	}
	return out, nil
}

// randomPool is a block of uniform values in [-1, 1) that large tensors are
// cut from (real-size models appear in seconds; speed does not depend on
// the values).
func randomPool(rng *rand.Rand) []float32 {
	pool := make([]float32, 1<<22)
	for i := range pool {
		pool[i] = float32(rng.Float64()*2 - 1)
	}
	return pool
}

// randomValues: n values times scale, each drawn (small tensors, test
// models) or, past 1<<20, runs of the pool from random offsets.
func randomValues(rng *rand.Rand, pool []float32, n int, scale float64) []float32 {
	v := make([]float32, n)
	if n <= 1<<20 {
		for i := range v {
			v[i] = float32((rng.Float64()*2 - 1) * scale)
		}
		return v
	}
	for i := 0; i < n; {
		off := rng.Intn(len(pool) / 2)
		k := copy(v[i:], pool[off:])
		for j := i; j < i+k; j++ {
			v[j] *= float32(scale)
		}
		i += k
	}
	return v
}

// shapeConfig completes a shape and runs its architecture's Configure on
// the metadata a file of that shape would carry, as Load does.
func shapeConfig(cfg Config) (Config, Arch, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return cfg, nil, err
	}
	f := &gguf.File{Metadata: map[string]gguf.Value{}}
	for _, kv := range shapeMeta(cfg) {
		f.Metadata[kv.Key] = kv.Value
	}
	c, arch, err := configure(f)
	if err != nil {
		return cfg, nil, err
	}
	c.With, c.Without, c.Extra, c.TiedOutput = cfg.With, cfg.Without, cfg.Extra, cfg.TiedOutput
	return c, arch, nil
}

// shapeMeta is the metadata of a file of shape cfg.
func shapeMeta(cfg Config) []gguf.KV {
	a := cfg.Arch
	meta := []gguf.KV{
		{Key: "general.architecture", Value: gguf.Val(a)},
		{Key: a + ".embedding_length", Value: gguf.Val(uint32(cfg.Dim))},
		{Key: a + ".block_count", Value: gguf.Val(uint32(cfg.Layers))},
		{Key: a + ".attention.head_count", Value: gguf.Val(uint32(cfg.Heads))},
		{Key: a + ".attention.head_count_kv", Value: gguf.Val(uint32(cfg.KVHeads))},
		{Key: a + ".attention.key_length", Value: gguf.Val(uint32(cfg.HeadDim))},
		{Key: a + ".attention.value_length", Value: gguf.Val(uint32(cfg.HeadDim))},
		{Key: a + ".rope.dimension_count", Value: gguf.Val(uint32(cfg.RopeDims))},
		{Key: a + ".feed_forward_length", Value: gguf.Val(uint32(cfg.FFN))},
		{Key: a + ".context_length", Value: gguf.Val(uint32(cfg.CtxLen))},
		{Key: a + ".vocab_size", Value: gguf.Val(uint32(cfg.Vocab))},
		{Key: a + ".rope.freq_base", Value: gguf.Val(float32(cfg.RopeBase))},
		{Key: a + ".attention.layer_norm_rms_epsilon", Value: gguf.Val(float32(cfg.NormEps))},
	}
	if cfg.Experts > 0 {
		meta = append(meta, gguf.KV{Key: a + ".expert_count", Value: gguf.Val(uint32(cfg.Experts))},
			gguf.KV{Key: a + ".expert_used_count", Value: gguf.Val(uint32(cfg.ExpertsUsed))})
		if cfg.ExpertFFN > 0 {
			meta = append(meta, gguf.KV{Key: a + ".expert_feed_forward_length", Value: gguf.Val(uint32(cfg.ExpertFFN))})
		}
		if cfg.SharedFFN > 0 {
			meta = append(meta, gguf.KV{Key: a + ".expert_shared_feed_forward_length", Value: gguf.Val(uint32(cfg.SharedFFN))})
		}
	}
	if cfg.RopeScale != 1 && !slices.ContainsFunc(cfg.Extra, func(kv gguf.KV) bool { return kv.Key == a+".rope.scaling.type" }) {
		meta = append(meta, gguf.KV{Key: a + ".rope.scaling.type", Value: gguf.Val("linear")},
			gguf.KV{Key: a + ".rope.scaling.factor", Value: gguf.Val(float32(1 / cfg.RopeScale))})
	}
	return append(meta, cfg.Extra...)
}
