package model

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/runtime/gguf"
	"github.com/wgllm/wgllm/runtime/gpu"
	"github.com/wgllm/wgllm/runtime/kv"
)

// Options size what a loaded model allocates up front.
type Options struct {
	CtxLen   int       // tokens per sequence; 0: the model's context length
	Seqs     int       // sequence slots in the KV cache; 0: 1
	KVType   ops.DType // ops.F32 or ops.F16
	Batch    int       // most tokens one Forward takes (prefill chunk); 0: 512
	Progress func(done, total uint64)
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
	o.Batch = min(o.Batch, o.CtxLen)
	return o
}

// Layer is one transformer block's weights. Shapes are [out, in] (GGUF
// row-major: row n is output n).
type Layer struct {
	AttnNorm, FFNNorm ops.Tensor // [dim]
	Q, K, V, O        ops.Tensor // [qDim, dim], [kvDim, dim] ×2, [dim, qDim]
	BQ, BK, BV        ops.Tensor // qwen2 biases [qDim], [kvDim] ×2
	QNorm, KNorm      ops.Tensor // qwen3 per-head norms [headDim]
	Gate, Up, Down    ops.Tensor // [ffn, dim] ×2, [dim, ffn]
}

// Model is a transformer on the GPU with its KV cache and every scratch
// buffer a forward pass needs, allocated once at load.
type Model struct {
	Cfg    Config
	ctx    *gpu.Context
	Embd   ops.Tensor // [vocab, dim]
	Norm   ops.Tensor // [dim]
	Output ops.Tensor // [vocab, dim] (Embd when tied)
	Layers []Layer
	KV     *kv.Cache

	batch int
	// Scratch, all [batch, ...] f32 unless noted.
	x, h, tmp    ops.Tensor // [batch, dim]
	q, att       ops.Tensor // [batch, qDim]
	k, v         ops.Tensor // [batch, kvDim]
	gate, up     ops.Tensor // [batch, ffn]
	logits       ops.Tensor // [batch, vocab]
	ids          ops.Tensor // [batch] u32
	next         ops.Tensor // [batch] u32 (argmax)
	wdeq         ops.Tensor // f16 [largest weight] for prefill of quantised weights
	rbTok, rbLog *gpu.Readback
	weightBytes  uint64
	scratchBytes uint64
	buffers      []ops.Tensor // everything to free on Close
}

// Load reads a GGUF model onto the GPU.
func Load(ctx *gpu.Context, f *gguf.File, opt Options) (*Model, error) {
	cfg, err := ConfigFromGGUF(f)
	if err != nil {
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
	u := &uploader{ctx: ctx, f: f, progress: opt.Progress}
	for _, t := range f.Tensors {
		u.total += t.Size
	}
	c := cfg
	qDim, kvDim := c.Heads*c.HeadDim, c.KVHeads*c.HeadDim
	load := func(dst *ops.Tensor, name string, shape ...int) {
		if err != nil {
			return
		}
		*dst, err = u.load(name, shape...)
		if err == nil {
			m.buffers = append(m.buffers, *dst)
		}
	}
	load(&m.Embd, "token_embd.weight", c.Vocab, c.Dim)
	load(&m.Norm, "output_norm.weight", c.Dim)
	if c.TiedOutput {
		m.Output = m.Embd
	} else {
		load(&m.Output, "output.weight", c.Vocab, c.Dim)
	}
	m.Layers = make([]Layer, c.Layers)
	for i := range m.Layers {
		l := &m.Layers[i]
		load(&l.AttnNorm, blk(i, "attn_norm"), c.Dim)
		load(&l.FFNNorm, blk(i, "ffn_norm"), c.Dim)
		load(&l.Q, blk(i, "attn_q"), qDim, c.Dim)
		load(&l.K, blk(i, "attn_k"), kvDim, c.Dim)
		load(&l.V, blk(i, "attn_v"), kvDim, c.Dim)
		load(&l.O, blk(i, "attn_output"), c.Dim, qDim)
		load(&l.Gate, blk(i, "ffn_gate"), c.FFN, c.Dim)
		load(&l.Up, blk(i, "ffn_up"), c.FFN, c.Dim)
		load(&l.Down, blk(i, "ffn_down"), c.Dim, c.FFN)
		if c.QKVBias {
			load(&l.BQ, blkBias(i, "attn_q"), qDim)
			load(&l.BK, blkBias(i, "attn_k"), kvDim)
			load(&l.BV, blkBias(i, "attn_v"), kvDim)
		}
		if c.QKNorm {
			load(&l.QNorm, blk(i, "attn_q_norm"), c.HeadDim)
			load(&l.KNorm, blk(i, "attn_k_norm"), c.HeadDim)
		}
	}
	if err != nil {
		return nil, err
	}
	m.weightBytes = u.bytes
	if err := m.finish(opt); err != nil {
		return nil, err
	}
	ok = true
	return m, nil
}

// finish allocates the KV cache and scratch once the weights are in place.
func (m *Model) finish(opt Options) error {
	c := m.Cfg
	if opt.KVType != ops.F32 && opt.KVType != ops.F16 {
		return fmt.Errorf("model: KV cache type %s: want f32 or f16", opt.KVType)
	}
	var err error
	if m.KV, err = kv.New(m.ctx, kv.Config{Layers: c.Layers, KVHeads: c.KVHeads, HeadDim: c.HeadDim,
		Capacity: opt.CtxLen, Seqs: opt.Seqs, DType: opt.KVType}); err != nil {
		return err
	}
	return m.allocScratch()
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
	alloc(&m.q, "q", ops.F32, n, qDim)
	alloc(&m.att, "att", ops.F32, n, qDim)
	alloc(&m.k, "k", ops.F32, n, kvDim)
	alloc(&m.v, "v", ops.F32, n, kvDim)
	alloc(&m.gate, "gate", ops.F32, n, c.FFN)
	alloc(&m.up, "up", ops.F32, n, c.FFN)
	alloc(&m.logits, "logits", ops.F32, n, c.Vocab)
	alloc(&m.ids, "ids", ops.U32, n)
	alloc(&m.next, "next", ops.U32, n)
	// Prefill dequantises one quantised weight at a time into f16.
	largest := 0
	for _, w := range m.weights() {
		if w.DType.Quantized() || w.DType == ops.BF16 {
			largest = max(largest, w.Len())
		}
	}
	if largest > 0 && n > matVecMaxRows {
		alloc(&m.wdeq, "wdeq", ops.F16, largest)
	}
	if err != nil {
		return err
	}
	if m.rbTok, err = m.ctx.NewReadback(uint64(4 * n)); err != nil {
		return err
	}
	m.rbLog, err = m.ctx.NewReadback(uint64(4 * c.Vocab))
	return err
}

// weights lists every matrix a forward pass multiplies by.
func (m *Model) weights() []ops.Tensor {
	ws := []ops.Tensor{m.Output}
	for _, l := range m.Layers {
		ws = append(ws, l.Q, l.K, l.V, l.O, l.Gate, l.Up, l.Down)
	}
	return ws
}

// Memory reports the GPU bytes held: weights, KV cache, scratch.
func (m *Model) Memory() (weights, kvCache, scratch uint64) {
	var k uint64
	if m.KV != nil {
		k = m.KV.Bytes()
	}
	return m.weightBytes, k, m.scratchBytes
}

// Batch is the most tokens one Forward takes.
func (m *Model) Batch() int { return m.batch }

// Context is the GPU the model lives on.
func (m *Model) Context() *gpu.Context { return m.ctx }

// Close frees every GPU buffer.
func (m *Model) Close() {
	for _, t := range m.buffers {
		t.Buf.Destroy()
	}
	m.buffers = nil
	if m.KV != nil {
		m.KV.Close()
	}
	if m.rbTok != nil {
		m.rbTok.Release()
	}
	if m.rbLog != nil {
		m.rbLog.Release()
	}
}

// matVecMaxRows is the most activation rows the matvec kernels take; larger
// batches use the tiled matmul.
const matVecMaxRows = 8

// linear records dst[n, out] = x[n, in] · wᵀ for a weight w [out, in] of any
// stored type.
func (m *Model) linear(enc *gpu.Encoder, dst, x, w ops.Tensor) error {
	n := x.Shape[0]
	if n <= matVecMaxRows {
		if w.DType.Quantized() || w.DType == ops.BF16 {
			return ops.MatVecQuant(enc, dst, w, x)
		}
		return ops.MatVec(enc, dst, w, x)
	}
	if w.DType.Quantized() || w.DType == ops.BF16 {
		deq := m.wdeq.View(0, w.Shape...)
		if err := ops.Dequantize(enc, deq, w); err != nil {
			return err
		}
		w = deq
	}
	return ops.MatMul(enc, dst, x, w, true)
}

// rows is the first n rows of a [batch, cols] scratch tensor.
func rows(t ops.Tensor, n int) ops.Tensor { return t.View(0, n, t.Shape[len(t.Shape)-1]) }

// Step describes what a Forward call returns.
type Step int

const (
	// NextGreedy: the argmax token after the last position (one u32 read back).
	NextGreedy Step = iota
	// LastLogits: the logits after the last position.
	LastLogits
	// AllLogits: the logits after every position (perplexity).
	AllLogits
)

// Forward runs tokens through the model at the sequence's next positions in
// one GPU submission, appending their keys and values to the cache. With
// NextGreedy it returns the greedy next token; with LastLogits the last
// row's logits into logits[:vocab]; with AllLogits every row's, [n*vocab].
func (m *Model) Forward(seq int, tokens []int32, want Step, logits []float32) (int32, error) {
	c := m.Cfg
	n := len(tokens)
	if n == 0 || n > m.batch {
		return 0, fmt.Errorf("model: forward of %d tokens (1..%d per call)", n, m.batch)
	}
	for _, t := range tokens {
		if t < 0 || int(t) >= c.Vocab {
			return 0, fmt.Errorf("model: token id %d outside the vocabulary of %d", t, c.Vocab)
		}
	}
	pos, err := m.KV.Reserve(seq, n)
	if err != nil {
		return 0, err
	}
	tok, err := m.forward(seq, pos, tokens, want, logits)
	if err != nil {
		_ = m.KV.Truncate(seq, pos) // the reserved rows hold nothing valid
	}
	return tok, err
}

func (m *Model) forward(seq, pos int, tokens []int32, want Step, logits []float32) (int32, error) {
	c := m.Cfg
	n := len(tokens)
	qDim, kvDim := c.Heads*c.HeadDim, c.KVHeads*c.HeadDim
	ids := make([]uint32, n)
	for i, t := range tokens {
		ids[i] = uint32(t)
	}
	if err := m.ids.View(0, n).WriteUint32(ids); err != nil {
		return 0, err
	}
	enc, err := m.ctx.NewEncoder()
	if err != nil {
		return 0, err
	}
	defer enc.Release()

	x, h, tmp := rows(m.x, n), rows(m.h, n), rows(m.tmp, n)
	q, k, v, att := rows(m.q, n), rows(m.k, n), rows(m.v, n), rows(m.att, n)
	gate, up := rows(m.gate, n), rows(m.up, n)
	eps := float32(c.NormEps)
	rope := ops.RoPEOpts{Mode: ops.RoPENormal, NRot: c.RopeDims, Base: c.RopeBase, FreqScale: c.RopeScale, PosOffset: uint32(pos)}
	if c.RopeMode == RopeNeox {
		rope.Mode = ops.RoPENeox
	}

	// x [n, dim] = token embeddings
	if m.Embd.DType.Quantized() || m.Embd.DType == ops.BF16 {
		err = ops.EmbedQuant(enc, x, m.Embd, m.ids.View(0, n))
	} else {
		err = ops.Embed(enc, x, m.Embd, m.ids.View(0, n))
	}
	if err != nil {
		return 0, err
	}
	for li := range m.Layers {
		if err := m.Layers[li].forward(m, enc, li, seq, pos, n, x, h, tmp, q, k, v, att, gate, up, eps, rope, qDim, kvDim); err != nil {
			return 0, fmt.Errorf("model: layer %d: %w", li, err)
		}
	}

	// Only the rows whose logits are wanted go through the output matrix.
	first := n - 1
	if want == AllLogits {
		first = 0
	}
	hs := h.View(first*c.Dim, n-first, c.Dim)
	if err := ops.RMSNorm(enc, hs, x.View(first*c.Dim, n-first, c.Dim), m.Norm, eps); err != nil {
		return 0, err
	}
	lg := rows(m.logits, n-first)
	if err := m.linear(enc, lg, hs, m.Output); err != nil {
		return 0, fmt.Errorf("model: output: %w", err)
	}
	switch want {
	case NextGreedy:
		next := m.next.View(0, 1)
		if err := ops.Argmax(enc, next, lg.View((n-first-1)*c.Vocab, 1, c.Vocab)); err != nil {
			return 0, err
		}
		if err := enc.CopyToHost(m.rbTok, next.Buf, 0, 4); err != nil {
			return 0, err
		}
		if err := enc.Submit(); err != nil {
			return 0, err
		}
		var b [4]byte
		if err := m.rbTok.Read(b[:]); err != nil {
			return 0, err
		}
		return int32(binary.LittleEndian.Uint32(b[:])), nil
	case LastLogits:
		if len(logits) < c.Vocab {
			return 0, fmt.Errorf("model: logits buffer of %d for a vocabulary of %d", len(logits), c.Vocab)
		}
		if err := enc.CopyToHost(m.rbLog, lg.Buf, 0, uint64(4*c.Vocab)); err != nil {
			return 0, err
		}
		if err := enc.Submit(); err != nil {
			return 0, err
		}
		return 0, readFloats(m.rbLog, logits[:c.Vocab])
	default:
		if len(logits) < n*c.Vocab {
			return 0, fmt.Errorf("model: logits buffer of %d for %d×%d", len(logits), n, c.Vocab)
		}
		if err := enc.Submit(); err != nil {
			return 0, err
		}
		all, err := lg.Read()
		if err != nil {
			return 0, err
		}
		copy(logits, all)
		return 0, nil
	}
}

func readFloats(rb *gpu.Readback, dst []float32) error {
	raw := make([]byte, 4*len(dst))
	if err := rb.Read(raw); err != nil {
		return err
	}
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	return nil
}

// forward records one block: attention then the SwiGLU MLP, each added to
// the residual stream x.
func (l *Layer) forward(m *Model, enc *gpu.Encoder, li, seq, pos, n int, x, h, tmp, q, k, v, att, gate, up ops.Tensor,
	eps float32, rope ops.RoPEOpts, qDim, kvDim int) error {
	c := m.Cfg
	// h = rmsnorm(x) · attn_norm
	if err := ops.RMSNorm(enc, h, x, l.AttnNorm, eps); err != nil {
		return err
	}
	// q [n, heads·hd], k, v [n, kvHeads·hd]
	for _, p := range []struct{ dst, w, b ops.Tensor }{{q, l.Q, l.BQ}, {k, l.K, l.BK}, {v, l.V, l.BV}} {
		if err := m.linear(enc, p.dst, h, p.w); err != nil {
			return err
		}
		if p.b.Buf != nil {
			if err := ops.AddRow(enc, p.dst, p.dst, p.b); err != nil {
				return err
			}
		}
	}
	if c.QKNorm { // qwen3: RMSNorm over each head's vector
		qh := q.View(0, n*c.Heads, c.HeadDim)
		kh := k.View(0, n*c.KVHeads, c.HeadDim)
		if err := ops.RMSNorm(enc, qh, qh, l.QNorm, eps); err != nil {
			return err
		}
		if err := ops.RMSNorm(enc, kh, kh, l.KNorm, eps); err != nil {
			return err
		}
	}
	q3 := q.View(0, n, c.Heads, c.HeadDim)
	k3 := k.View(0, n, c.KVHeads, c.HeadDim)
	if err := ops.RoPE(enc, q3, q3, rope); err != nil {
		return err
	}
	if err := ops.RoPE(enc, k3, k3, rope); err != nil {
		return err
	}
	if err := m.KV.Write(enc, li, seq, pos, k, v); err != nil {
		return err
	}
	// att [n, heads, hd] = softmax(q·kᵀ/√hd, causal) · v over the cache
	if err := ops.Attention(enc, att.View(0, n, c.Heads, c.HeadDim), q3, m.KV.Keys(li, seq), m.KV.Values(li, seq),
		ops.AttentionOptions{Causal: true, QOffset: pos, KVLen: pos + n}); err != nil {
		return err
	}
	// x += att · Oᵀ
	if err := m.linear(enc, tmp, att, l.O); err != nil {
		return err
	}
	if err := ops.Add(enc, x, x, tmp); err != nil {
		return err
	}
	// x += (silu(h·Gateᵀ) * h·Upᵀ) · Downᵀ
	if err := ops.RMSNorm(enc, h, x, l.FFNNorm, eps); err != nil {
		return err
	}
	if err := m.linear(enc, gate, h, l.Gate); err != nil {
		return err
	}
	if err := m.linear(enc, up, h, l.Up); err != nil {
		return err
	}
	if err := ops.SiluMul(enc, gate, gate, up); err != nil {
		return err
	}
	if err := m.linear(enc, tmp, gate, l.Down); err != nil {
		return err
	}
	return ops.Add(enc, x, x, tmp)
}

// Tensors lists the weights (each once, also when the output is tied).
func (m *Model) Tensors() []ops.Tensor {
	ts := []ops.Tensor{m.Embd, m.Norm}
	if !m.Cfg.TiedOutput {
		ts = append(ts, m.Output)
	}
	for _, l := range m.Layers {
		for _, t := range []ops.Tensor{l.AttnNorm, l.FFNNorm, l.Q, l.K, l.V, l.O, l.BQ, l.BK, l.BV, l.QNorm, l.KNorm, l.Gate, l.Up, l.Down} {
			if t.Buf != nil {
				ts = append(ts, t)
			}
		}
	}
	return ts
}
