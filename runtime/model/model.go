package model

import (
	"fmt"
	"os"
	"reflect"
	"strconv"
	"strings"

	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/runtime/gguf"
	"github.com/wgllm/wgllm/runtime/gpu"
	"github.com/wgllm/wgllm/runtime/kv"
)

// Options size what a loaded model allocates up front.
type Options struct {
	CtxLen    int       // most tokens one sequence holds; 0: the model's context length
	Seqs      int       // sequence slots in the KV cache; 0: 1
	BlockSize int       // KV cache block size in tokens; 0: 16
	KVTokens  int       // tokens the KV block pool holds for all sequences; 0: CtxLen × Seqs
	KVType    ops.DType // ops.F32, ops.F16 or ops.Q8_0 (ggml's Q8_0 blocks, 17/32 of f16's bytes)
	Batch     int       // most tokens one step takes (prefill chunk); 0: 512
	// DecodeTiledRows: a step's decode rows go through the tiled matmul,
	// like a prompt chunk, once there are at least this many of them (the
	// matvec reads every weight once per 8 rows and runs out of arithmetic
	// past that). A sequence's tokens then depend on how many sequences
	// share its step. 0: never; every decode row takes the matvec and is
	// bit-identical to decoding it alone.
	DecodeTiledRows int
	Progress        func(done, total uint64)
}

func (o Options) withDefaults(c Config) Options {
	if o.CtxLen <= 0 {
		o.CtxLen = c.CtxLen
	}
	if o.Seqs <= 0 {
		o.Seqs = 1
	}
	if o.Batch <= 0 {
		o.Batch = 512
	}
	if o.BlockSize <= 0 {
		o.BlockSize = 16
	}
	if o.KVTokens <= 0 {
		o.KVTokens = o.CtxLen * o.Seqs
	}
	o.Batch = min(o.Batch, o.CtxLen)
	return o
}

// Model is a transformer on the GPU with its KV cache and every scratch
// buffer a forward pass needs, allocated once at load.
type Model struct {
	Cfg  Config
	arch Arch
	ctx  *gpu.Context
	KV   *kv.Paged

	batch           int
	decodeTiledRows int // Options.DecodeTiledRows
	// Scratch, all [batch, ...] f32 unless noted.
	x, h, tmp    ops.Tensor // [batch, dim]
	q, k, v      ops.Tensor // [batch, qDim], [batch, kvDim] ×2: views of one buffer
	att          ops.Tensor // [batch, qDim]
	gate, up     ops.Tensor // [batch, ffn]
	logits       ops.Tensor // [batch, vocab]
	ids          ops.Tensor // [batch] u32
	positions    ops.Tensor // [batch] u32 (rows of several sequences)
	next         ops.Tensor // [batch] u32 (argmax)
	wdeq         ops.Tensor // f16 [largest weight] for prefill of quantised weights
	moe          moeScratch // MoE layers' routing and expert outputs
	step         *kv.Step   // per-step sequence info and KV write slots
	rbTok, rbLog *gpu.Readback
	rbLogSize    uint64
	weightBytes  uint64
	expertBytes  uint64 // of weightBytes, the routed experts'
	scratchBytes uint64
	weights      []ops.Tensor // every bound tensor, once
	buffers      []ops.Tensor // everything to free on Close

	sampling *gpuSampling // StepSampled's buffers, made on first use (sample.go)
}

// Load reads a GGUF model onto the GPU. Every tensor's presence, shape
// and type is checked before the first upload, so a bad file is refused
// naming the tensor and leaves nothing on the GPU.
func Load(ctx *gpu.Context, f *gguf.File, opt Options) (*Model, error) {
	cfg, arch, err := configure(f)
	if err != nil {
		return nil, err
	}
	ss, err := slots(arch, cfg)
	if err != nil {
		return nil, err
	}
	bound, err := match(f, ss)
	if err != nil {
		return nil, err
	}
	if err := checkKVType(opt.KVType); err != nil {
		return nil, err
	}
	opt = opt.withDefaults(cfg)
	m := &Model{Cfg: cfg, arch: arch, ctx: ctx, batch: opt.Batch, decodeTiledRows: opt.DecodeTiledRows}
	ok := false
	defer func() {
		if !ok {
			m.Close()
		}
	}()
	var total, done uint64
	for _, b := range bound {
		total += b.info.Size
	}
	uploaded := map[string]ops.Tensor{} // a tied head binds token_embd twice
	for _, b := range bound {
		t, seen := uploaded[b.info.Name]
		if !seen {
			// From the memory-mapped file: pages stream to the GPU without a
			// copy on the Go heap, so host memory stays near the file size.
			raw, err := f.TensorBytes(b.info)
			if err != nil {
				return nil, err
			}
			if t, err = ops.FromBytes(ctx, b.info.Name, b.dt, raw, b.shape...); err != nil {
				return nil, fmt.Errorf("model: uploading %s: %w", b.info.Name, err)
			}
			uploaded[b.info.Name] = t
			m.buffers = append(m.buffers, t)
			m.weights = append(m.weights, t)
			m.weightBytes += b.info.Size
			if isExperts(b.info.Name) {
				m.expertBytes += b.info.Size
			}
			done += b.info.Size
			if opt.Progress != nil {
				opt.Progress(done, total)
			}
		}
		*b.w = Weight{Tensor: t, Name: b.info.Name}
	}
	if err := m.finish(opt); err != nil {
		return nil, err
	}
	ok = true
	return m, nil
}

func checkKVType(t ops.DType) error {
	if !ops.IsKVPoolType(t) {
		return fmt.Errorf("model: KV cache type %s: want f32, f16 or q8_0", t)
	}
	return nil
}

// finish joins weights for the fused kernels, then allocates the KV cache
// and scratch once the weights are in place.
func (m *Model) finish(opt Options) error {
	c := m.Cfg
	if err := m.prepareWeights(); err != nil {
		return err
	}
	var err error
	if m.KV, err = kv.NewPaged(m.ctx, kvConfig(c, opt)); err != nil {
		return err
	}
	if m.step, err = m.KV.NewStep(opt.Seqs, m.batch); err != nil {
		return err
	}
	return m.allocScratch()
}

// kvConfig sizes the KV cache of a model (opt with its defaults).
func kvConfig(c Config, opt Options) kv.PagedConfig {
	return kv.PagedConfig{Layers: c.Layers, KVHeads: c.KVHeads, HeadDim: c.HeadDim,
		BlockSize: opt.BlockSize, Blocks: (opt.KVTokens + opt.BlockSize - 1) / opt.BlockSize, Seqs: opt.Seqs,
		MaxSeqLen: opt.CtxLen, DType: opt.KVType}
}

// prepareWeights walks the architecture's weights and lets each shared
// piece (AttnWeights, GatedFFN, FusedFFN) join or split its matrices.
func (m *Model) prepareWeights() error {
	type preparer interface {
		prepare(m *Model, name string) error
	}
	var walk func(rv reflect.Value, name string) error
	walk = func(rv reflect.Value, name string) error {
		if p, ok := rv.Addr().Interface().(preparer); ok {
			return p.prepare(m, name)
		}
		for i := 0; i < rv.NumField(); i++ {
			f := rv.Field(i)
			switch {
			case !rv.Type().Field(i).IsExported():
			case f.Kind() == reflect.Struct && f.Type() != reflect.TypeOf(Weight{}):
				if err := walk(f, name); err != nil {
					return err
				}
			case f.Kind() == reflect.Slice:
				for l := 0; l < f.Len(); l++ {
					if err := walk(f.Index(l), fmt.Sprintf("blk.%d", l)); err != nil {
						return err
					}
				}
			}
		}
		return nil
	}
	return walk(reflect.ValueOf(m.arch).Elem(), "")
}

func (m *Model) allocScratch() error {
	c, n := m.Cfg, m.batch
	qDim, kvDim := c.Heads*c.HeadDim, c.KVHeads*c.HeadDim
	var err error
	alloc := func(dst *ops.Tensor, name string, dt ops.DType, shape ...int) {
		if err != nil {
			return
		}
		*dst, err = ops.New(m.ctx, name, dt, shape...)
		if err == nil {
			m.buffers = append(m.buffers, *dst)
			m.scratchBytes += dst.Bytes()
		}
	}
	alloc(&m.x, "x", ops.F32, n, c.Dim)
	alloc(&m.h, "h", ops.F32, n, c.Dim)
	alloc(&m.tmp, "tmp", ops.F32, n, c.Dim)
	// q, k and v share one buffer: a fused QKV matvec writes all three.
	var qkv ops.Tensor
	alloc(&qkv, "qkv", ops.F32, n*(qDim+2*kvDim))
	m.q = qkv.View(0, n, qDim)
	m.k = qkv.View(n*qDim, n, kvDim)
	m.v = qkv.View(n*(qDim+kvDim), n, kvDim)
	alloc(&m.att, "att", ops.F32, n, qDim)
	// gate and up also hold a shared expert's (qwen2moe) activations.
	alloc(&m.gate, "gate", ops.F32, n, max(c.FFN, c.SharedFFN))
	alloc(&m.up, "up", ops.F32, n, max(c.FFN, c.SharedFFN))
	m.allocMoE(alloc)
	alloc(&m.logits, "logits", ops.F32, n, c.Vocab)
	alloc(&m.ids, "ids", ops.U32, n)
	alloc(&m.positions, "positions", ops.U32, n)
	alloc(&m.next, "next", ops.U32, n)
	// Prefill dequantises one quantised weight at a time into f16.
	if largest := largestDequantised(m.weights); largest > 0 && n > matVecMaxRows {
		alloc(&m.wdeq, "wdeq", ops.F16, largest)
	}
	if err != nil {
		return err
	}
	if m.rbTok, err = m.ctx.NewReadback(uint64(4 * n)); err != nil {
		return err
	}
	// Logits of up to a decode batch's rows come back with their submission;
	// more (perplexity) are read separately.
	m.rbLogSize = uint64(4 * max(c.Vocab, c.Dim) * min(n, 64))
	m.rbLog, err = m.ctx.NewReadback(m.rbLogSize)
	return err
}

// largestDequantised is the most elements of a matrix that prefill
// dequantises to f16 before the tiled matmul.
func largestDequantised(ws []ops.Tensor) int {
	largest := 0
	for _, w := range ws {
		if len(w.Shape) == 2 && (w.DType.Quantized() || w.DType == ops.BF16) {
			largest = max(largest, w.Len())
		}
	}
	return largest
}

// Memory reports the GPU bytes held: weights, KV cache, scratch.
func (m *Model) Memory() (weights, kvCache, scratch uint64) {
	var k uint64
	if m.KV != nil {
		k = m.KV.Bytes()
	}
	return m.weightBytes, k, m.scratchBytes
}

// ExpertBytes is the part of the weights that are routed experts' stacked
// matrices and biases, and PerTokenBytes what one decode token reads of the
// weights: the rest, plus expert_used_count/expert_count of the experts.
func (m *Model) ExpertBytes() (experts, perToken uint64) {
	perToken = m.weightBytes - m.expertBytes
	if m.Cfg.Experts > 0 {
		perToken += m.expertBytes * uint64(m.Cfg.ExpertsUsed) / uint64(m.Cfg.Experts)
	}
	return m.expertBytes, perToken
}

// Batch is the most tokens one step takes.
func (m *Model) Batch() int { return m.batch }

// Context is the GPU the model lives on.
func (m *Model) Context() *gpu.Context { return m.ctx }

// Tensors lists the weights, each once (a tied head is token_embd).
func (m *Model) Tensors() []ops.Tensor { return m.weights }

// Close frees every GPU buffer.
func (m *Model) Close() {
	for _, t := range m.buffers {
		t.Buf.Destroy()
	}
	m.buffers = nil
	if m.step != nil {
		m.step.Close()
		m.step = nil
	}
	if m.KV != nil {
		m.KV.Close()
		m.KV = nil
	}
	if m.rbTok != nil {
		m.rbTok.Release()
		m.rbTok = nil
	}
	if m.rbLog != nil {
		m.rbLog.Release()
		m.rbLog = nil
	}
}

// layersPerSubmit is how many layers one GPU submission carries
// (WGLLM_LAYERS_PER_SUBMIT overrides it, for tuning).
var layersPerSubmit = envInt("WGLLM_LAYERS_PER_SUBMIT", 4)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// matVecMaxRows is the most activation rows the matvec kernels take at
// once; larger prefill batches use the tiled matmul.
const matVecMaxRows = 8

// Estimate computes Load's GPU allocations without touching the GPU.
func Estimate(f *gguf.File, opt Options) (MemoryEstimate, error) {
	c, arch, err := configure(f)
	if err != nil {
		return MemoryEstimate{}, err
	}
	ss, err := slots(arch, c)
	if err != nil {
		return MemoryEstimate{}, err
	}
	bound, err := match(f, ss)
	if err != nil {
		return MemoryEstimate{}, err
	}
	if err := checkKVType(opt.KVType); err != nil {
		return MemoryEstimate{}, err
	}
	var ts []sizedTensor
	for _, b := range bound {
		ts = append(ts, sizedTensor{b.info.Name, b.info.Size, b.info.Elements(), b.dt})
	}
	return estimate(c, ts, opt), nil
}

// EstimateShape is Estimate for a model of shape cfg (Shapes) with weights
// of type typ (or MixQ4KM), as Synthesize and RandomGGUF would store them.
func EstimateShape(cfg Config, typ gguf.GGMLType, opt Options) (Config, MemoryEstimate, error) {
	c, arch, err := shapeConfig(cfg)
	if err != nil {
		return c, MemoryEstimate{}, err
	}
	ss, err := slots(arch, c)
	if err != nil {
		return c, MemoryEstimate{}, err
	}
	plan, err := synthPlan(ss, c)
	if err != nil {
		return c, MemoryEstimate{}, err
	}
	var ts []sizedTensor
	for _, s := range plan {
		dt, err := DTypeOf(typeFor(s, typ, c))
		if err != nil {
			return c, MemoryEstimate{}, err
		}
		n := uint64(1)
		for _, d := range s.shape {
			n *= uint64(d)
		}
		ts = append(ts, sizedTensor{s.name, n / uint64(dt.BlockSize()) * uint64(dt.BlockBytes()), n, dt})
	}
	return c, estimate(c, ts, opt), nil
}

type sizedTensor struct {
	name     string
	size     uint64
	elements uint64
	dt       ops.DType
}

// isExperts reports whether a tensor is a stack of routed experts'
// matrices or biases (ffn_{gate,up,down}_exps).
func isExperts(name string) bool { return strings.Contains(name, "_exps.") }

func estimate(c Config, ts []sizedTensor, opt Options) MemoryEstimate {
	opt = opt.withDefaults(c)
	var e MemoryEstimate
	seen := map[string]bool{}
	largestQuant := uint64(0)
	for _, t := range ts {
		if seen[t.name] {
			continue
		}
		seen[t.name] = true
		e.Weights += t.size
		if isExperts(t.name) {
			e.Experts += t.size
		}
		if (t.dt.Quantized() || t.dt == ops.BF16) && !isExperts(t.name) {
			largestQuant = max(largestQuant, t.elements)
		}
	}
	if c.Experts > 0 {
		e.PerToken = e.Weights - e.Experts + e.Experts*uint64(c.ExpertsUsed)/uint64(c.Experts)
	} else {
		e.PerToken = e.Weights
	}
	kc := kvConfig(c, opt)
	e.KV, e.KVTokenBytes = kc.PoolBytes(), kc.TokenBytes()
	e.KVTokens = kc.Blocks * kc.BlockSize
	n := uint64(opt.Batch)
	qDim, kvDim := uint64(c.Heads*c.HeadDim), uint64(c.KVHeads*c.HeadDim)
	e.Scratch = 4*n*(3*uint64(c.Dim)+2*qDim+2*kvDim+2*uint64(max(c.FFN, c.SharedFFN))+uint64(c.Vocab)+3) +
		moeScratchBytes(c, int(n))
	if n > matVecMaxRows {
		e.Scratch += 2 * largestQuant
	}
	return e
}
