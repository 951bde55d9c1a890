// Package model holds the transformer architectures wgllm runs (llama,
// qwen2, qwen3): their hyper-parameters read from GGUF metadata, their
// weights on the GPU, and the forward pass.
package model

import (
	"fmt"
	"math"

	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/runtime/gguf"
)

// RopeMode is how RoPE pairs dimensions.
type RopeMode int

const (
	RopeNormal RopeMode = iota // adjacent pairs (2i, 2i+1): llama GGUF files
	RopeNeox                   // halves (i, i+n/2): qwen2, qwen3
)

func (m RopeMode) String() string {
	if m == RopeNeox {
		return "neox"
	}
	return "normal"
}

// Config is an architecture's hyper-parameters.
type Config struct {
	Arch       string
	Dim        int // embedding length
	Layers     int
	Heads      int
	KVHeads    int
	HeadDim    int
	FFN        int // feed-forward hidden size
	Vocab      int
	CtxLen     int // trained context length
	NormEps    float64
	RopeBase   float64
	RopeScale  float64 // freq_scale = 1/linear scaling factor
	RopeDims   int     // rotated dims per head
	RopeMode   RopeMode
	QKVBias    bool    // qwen2
	QKNorm     bool    // qwen3: per-head RMSNorm of q and k
	TiedOutput bool    // no output.weight: reuse token_embd
	Pooling    Pooling // how embeddings pool the hidden states
}

// Supported lists the architectures this package runs.
var Supported = []string{"llama", "qwen2", "qwen3"}

// ConfigFromGGUF reads and checks the hyper-parameters.
func ConfigFromGGUF(f *gguf.File) (Config, error) {
	arch := f.Architecture()
	c := Config{Arch: arch}
	switch arch {
	case "llama":
		c.RopeMode = RopeNormal
	case "qwen2":
		c.RopeMode, c.QKVBias = RopeNeox, true
	case "qwen3":
		c.RopeMode, c.QKNorm = RopeNeox, true
	case "":
		return c, fmt.Errorf("model: general.architecture is missing")
	default:
		return c, fmt.Errorf("model: unsupported architecture %q (supported: %v)", arch, Supported)
	}
	req := func(key string) (int, error) {
		v, ok := f.ArchUint(key)
		if !ok {
			return 0, fmt.Errorf("model: %s.%s is missing", arch, key)
		}
		if v == 0 || v > 1<<24 {
			return 0, fmt.Errorf("model: %s.%s = %d is out of range", arch, key, v)
		}
		return int(v), nil
	}
	var err error
	if c.Dim, err = req("embedding_length"); err != nil {
		return c, err
	}
	if c.Layers, err = req("block_count"); err != nil {
		return c, err
	}
	if c.Heads, err = req("attention.head_count"); err != nil {
		return c, err
	}
	if c.FFN, err = req("feed_forward_length"); err != nil {
		return c, err
	}
	c.KVHeads = c.Heads
	if v, ok := f.ArchUint("attention.head_count_kv"); ok {
		c.KVHeads = int(v)
	}
	c.HeadDim = c.Dim / c.Heads
	if v, ok := f.ArchUint("attention.key_length"); ok {
		c.HeadDim = int(v)
	}
	c.CtxLen = 2048
	if v, ok := f.ArchUint("context_length"); ok {
		c.CtxLen = int(v)
	}
	c.NormEps = 1e-5
	if v, ok := f.ArchFloat("attention.layer_norm_rms_epsilon"); ok {
		c.NormEps = v
	}
	c.RopeBase = 10000
	if v, ok := f.ArchFloat("rope.freq_base"); ok {
		c.RopeBase = v
	}
	c.RopeScale = 1
	if v, ok := f.ArchFloat("rope.scale_linear"); ok && v > 0 {
		c.RopeScale = 1 / v
	}
	if t, _ := f.String(arch + ".rope.scaling.type"); t == "linear" {
		if v, ok := f.ArchFloat("rope.scaling.factor"); ok && v > 0 {
			c.RopeScale = 1 / v
		}
	}
	c.RopeDims = c.HeadDim
	if v, ok := f.ArchUint("rope.dimension_count"); ok {
		c.RopeDims = int(v)
	}
	if tok, ok := f.Strings("tokenizer.ggml.tokens"); ok {
		c.Vocab = len(tok)
	}
	if v, ok := f.ArchUint("vocab_size"); ok {
		c.Vocab = int(v)
	}
	if emb, ok := f.Tensor("token_embd.weight"); ok && len(emb.Dims) == 2 {
		c.Vocab = int(emb.Dims[1])
	}
	_, hasOut := f.Tensor("output.weight")
	c.TiedOutput = !hasOut
	if c.Pooling, err = poolingFromGGUF(f); err != nil {
		return c, err
	}
	return c, c.Validate()
}

// Validate checks the relations between hyper-parameters.
func (c Config) Validate() error {
	switch {
	case c.Dim <= 0 || c.Layers <= 0 || c.Heads <= 0 || c.KVHeads <= 0 || c.FFN <= 0 || c.HeadDim <= 0:
		return fmt.Errorf("model: non-positive dimension in %+v", c)
	case c.Heads%c.KVHeads != 0:
		return fmt.Errorf("model: %d heads are not a multiple of %d kv heads", c.Heads, c.KVHeads)
	case c.Vocab <= 0:
		return fmt.Errorf("model: vocabulary size unknown")
	case c.RopeDims <= 0 || c.RopeDims > c.HeadDim || c.RopeDims%2 != 0:
		return fmt.Errorf("model: rope dimension count %d invalid for head dim %d", c.RopeDims, c.HeadDim)
	case c.NormEps <= 0 || math.IsNaN(c.NormEps):
		return fmt.Errorf("model: rms epsilon %v invalid", c.NormEps)
	case c.RopeBase <= 0:
		return fmt.Errorf("model: rope base %v invalid", c.RopeBase)
	}
	return nil
}

// Tensor names, as llama.cpp writes them.
func blk(i int, name string) string     { return fmt.Sprintf("blk.%d.%s.weight", i, name) }
func blkBias(i int, name string) string { return fmt.Sprintf("blk.%d.%s.bias", i, name) }

// MemoryEstimate is what Load will allocate on the GPU, in bytes.
type MemoryEstimate struct {
	Weights, KV, Scratch uint64
}

// Total is the sum.
func (e MemoryEstimate) Total() uint64 { return e.Weights + e.KV + e.Scratch }

// Estimate computes Load's GPU allocations without touching the GPU.
func Estimate(f *gguf.File, opt Options) (MemoryEstimate, error) {
	c, err := ConfigFromGGUF(f)
	if err != nil {
		return MemoryEstimate{}, err
	}
	opt = opt.withDefaults(c)
	var e MemoryEstimate
	largestQuant := uint64(0)
	for _, t := range f.Tensors {
		e.Weights += t.Size
		if t.Type != gguf.F32 && t.Type != gguf.F16 {
			largestQuant = max(largestQuant, t.Elements())
		}
	}
	kvSize := uint64(4)
	if opt.KVType == ops.F16 {
		kvSize = 2
	}
	blocks := (opt.KVTokens + opt.BlockSize - 1) / opt.BlockSize
	e.KV = 2 * uint64(c.Layers*blocks*opt.BlockSize*c.KVHeads*c.HeadDim) * kvSize
	n := uint64(opt.Batch)
	qDim, kvDim := uint64(c.Heads*c.HeadDim), uint64(c.KVHeads*c.HeadDim)
	e.Scratch = 4 * n * (3*uint64(c.Dim) + 2*qDim + 2*kvDim + 2*uint64(c.FFN) + uint64(c.Vocab) + 2)
	if n > matVecMaxRows {
		e.Scratch += 2 * largestQuant
	}
	return e, nil
}
