package model

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"

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
	KVType    ops.DType // ops.F32 or ops.F16
	Batch     int       // most tokens one Forward takes (prefill chunk); 0: 512
	Progress  func(done, total uint64)
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

// Layer is one transformer block's weights. Shapes are [out, in] (GGUF
// row-major: row n is output n).
type Layer struct {
	AttnNorm, FFNNorm ops.Tensor // [dim]
	Q, K, V, O        ops.Tensor // [qDim, dim], [kvDim, dim] ×2, [dim, qDim]
	BQ, BK, BV        ops.Tensor // qwen2 biases [qDim], [kvDim] ×2
	QNorm, KNorm      ops.Tensor // qwen3 per-head norms [headDim]
	Gate, Up, Down    ops.Tensor // [ffn, dim] ×2, [dim, ffn]
	// Q, K, V joined ([qDim+2·kvDim, dim]) and Gate, Up joined ([2·ffn,
	// dim]) when each group shares a type; Q, K, V, Gate, Up are then views
	// into them. Zero tensors otherwise.
	QKV, GateUp ops.Tensor
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
	KV     *kv.Paged

	batch int
	// Scratch, all [batch, ...] f32 unless noted.
	x, h, tmp    ops.Tensor // [batch, dim]
	q, att       ops.Tensor // [batch, qDim]
	k, v         ops.Tensor // [batch, kvDim]
	gate, up     ops.Tensor // [batch, ffn]
	logits       ops.Tensor // [batch, vocab]
	ids          ops.Tensor // [batch] u32
	positions    ops.Tensor // [batch] u32 (rows of several sequences)
	next         ops.Tensor // [batch] u32 (argmax)
	wdeq         ops.Tensor // f16 [largest weight] for prefill of quantised weights
	step         *kv.Step   // per-step sequence info and KV write slots
	rbTok, rbLog *gpu.Readback
	rbLogSize    uint64
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
	if err := m.fuseLayers(); err != nil {
		return err
	}
	var err error
	if m.KV, err = kv.NewPaged(m.ctx, kv.PagedConfig{Layers: c.Layers, KVHeads: c.KVHeads, HeadDim: c.HeadDim,
		BlockSize: opt.BlockSize, Blocks: (opt.KVTokens + opt.BlockSize - 1) / opt.BlockSize, Seqs: opt.Seqs,
		MaxSeqLen: opt.CtxLen, DType: opt.KVType}); err != nil {
		return err
	}
	if m.step, err = m.KV.NewStep(opt.Seqs, m.batch); err != nil {
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
	// q, k and v share one buffer: a fused QKV matvec writes all three.
	var qkv ops.Tensor
	alloc(&qkv, "qkv", ops.F32, n*(qDim+2*kvDim))
	m.q = qkv.View(0, n, qDim)
	m.k = qkv.View(n*qDim, n, kvDim)
	m.v = qkv.View(n*(qDim+kvDim), n, kvDim)
	alloc(&m.att, "att", ops.F32, n, qDim)
	alloc(&m.gate, "gate", ops.F32, n, c.FFN)
	alloc(&m.up, "up", ops.F32, n, c.FFN)
	alloc(&m.logits, "logits", ops.F32, n, c.Vocab)
	alloc(&m.ids, "ids", ops.U32, n)
	alloc(&m.positions, "positions", ops.U32, n)
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
	// Logits of up to a decode batch's rows come back with their submission;
	// more (perplexity) are read separately.
	m.rbLogSize = uint64(4 * c.Vocab * min(n, 64))
	m.rbLog, err = m.ctx.NewReadback(m.rbLogSize)
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
	if m.step != nil {
		m.step.Close()
	}
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

// linear records dst[n, out] = x[n, in] · wᵀ for a weight w [out, in] of any
// stored type. decode rows always take the matvec kernels, in groups of
// matVecMaxRows: their per-row results do not depend on how many rows share
// the call, so a sequence decodes the same alone or in a batch.
func (m *Model) linear(enc *gpu.Encoder, dst, x, w ops.Tensor, decode bool) error {
	n := x.Shape[0]
	if decode || n <= matVecMaxRows {
		in, out := x.Shape[1], dst.Shape[1]
		for r := 0; r < n; r += matVecMaxRows {
			k := min(matVecMaxRows, n-r)
			xs, ds := x.View(r*in, k, in), dst.View(r*out, k, out)
			var err error
			if w.DType.Quantized() || w.DType == ops.BF16 {
				err = ops.MatVecQuant(enc, ds, w, xs)
			} else {
				err = ops.MatVec(enc, ds, w, xs)
			}
			if err != nil {
				return err
			}
		}
		return nil
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

// Step describes what a forward call returns.
type Step int

const (
	// NextGreedy: the argmax token after each sequence's last position (a
	// u32 per sequence read back).
	NextGreedy Step = iota
	// LastLogits: the logits after each sequence's last position.
	LastLogits
	// AllLogits: the logits after every position (perplexity).
	AllLogits
)

// span is a run of consecutive rows of one sequence at consecutive positions.
type span struct{ seq, row, n, pos int }

// Forward runs tokens through the model at the sequence's next positions in
// one GPU submission, appending their keys and values to the cache. With
// NextGreedy it returns the greedy next token; with LastLogits the last
// row's logits into logits[:vocab]; with AllLogits every row's, [n*vocab].
func (m *Model) Forward(seq int, tokens []int32, want Step, logits []float32) (int32, error) {
	var next [1]int32
	if err := m.run([]int{seq}, [][]int32{tokens}, want, logits, next[:], false); err != nil {
		return 0, err
	}
	return next[0], nil
}

// DecodeBatch advances several sequences by one token each in one GPU
// submission: tokens[i] is appended to seqs[i]. With NextGreedy next[i] gets
// each sequence's greedy token; with LastLogits logits gets one row of
// logits per sequence ([len(seqs)*vocab]). Each sequence's result is
// bit-identical to decoding it alone.
func (m *Model) DecodeBatch(seqs []int, tokens []int32, want Step, logits []float32, next []int32) error {
	if len(seqs) != len(tokens) {
		return fmt.Errorf("model: %d sequences, %d tokens", len(seqs), len(tokens))
	}
	if want == AllLogits {
		want = LastLogits // one row per sequence either way
	}
	per := make([][]int32, len(tokens))
	for i := range tokens {
		per[i] = tokens[i : i+1]
	}
	return m.run(seqs, per, want, logits, next, true)
}

func (m *Model) run(seqs []int, tokens [][]int32, want Step, logits []float32, next []int32, decode bool) error {
	c := m.Cfg
	n := 0
	for i, ts := range tokens {
		if len(ts) == 0 {
			return fmt.Errorf("model: no tokens for sequence %d", seqs[i])
		}
		n += len(ts)
		for _, t := range ts {
			if t < 0 || int(t) >= c.Vocab {
				return fmt.Errorf("model: token id %d outside the vocabulary of %d", t, c.Vocab)
			}
		}
	}
	if n == 0 || n > m.batch {
		return fmt.Errorf("model: forward of %d tokens (1..%d per call)", n, m.batch)
	}
	if want != AllLogits && len(next) < len(seqs) && want == NextGreedy {
		return fmt.Errorf("model: room for %d next tokens, %d sequences", len(next), len(seqs))
	}
	// Attention reads the batch as [sequences, queries per sequence]: one
	// sequence's tokens (prefill), or one token of each sequence (decode).
	if len(seqs) > 1 && n != len(seqs) {
		return fmt.Errorf("model: a batch of several sequences takes one token each")
	}
	spans := make([]span, len(seqs))
	batch := make([]kv.StepSeq, len(seqs))
	row := 0
	for i, s := range seqs {
		pos, err := m.KV.Reserve(s, len(tokens[i]))
		if err != nil {
			for _, done := range spans[:i] {
				_ = m.KV.Truncate(done.seq, done.pos)
			}
			return err
		}
		spans[i] = span{seq: s, row: row, n: len(tokens[i]), pos: pos}
		batch[i] = kv.StepSeq{Seq: s, New: len(tokens[i])}
		row += len(tokens[i])
	}
	err := m.step.Set(m.KV, batch)
	if err == nil {
		err = m.forward(spans, tokens, want, logits, next, decode)
	}
	if err != nil {
		for _, sp := range spans { // the reserved rows hold nothing valid
			_ = m.KV.Truncate(sp.seq, sp.pos)
		}
	}
	return err
}

func (m *Model) forward(spans []span, tokens [][]int32, want Step, logits []float32, next []int32, decode bool) error {
	c := m.Cfg
	last := spans[len(spans)-1]
	n := last.row + last.n
	ids := make([]uint32, 0, n)
	pos := make([]uint32, 0, n)
	for i, sp := range spans {
		for j, t := range tokens[i] {
			ids = append(ids, uint32(t))
			pos = append(pos, uint32(sp.pos+j))
		}
	}
	if err := m.ids.View(0, n).WriteUint32(ids); err != nil {
		return err
	}
	rope := ops.RoPEOpts{Mode: ops.RoPENormal, NRot: c.RopeDims, Base: c.RopeBase, FreqScale: c.RopeScale}
	if c.RopeMode == RopeNeox {
		rope.Mode = ops.RoPENeox
	}
	if len(spans) == 1 {
		rope.PosOffset = uint32(spans[0].pos)
	} else {
		p := m.positions.View(0, n)
		if err := p.WriteUint32(pos); err != nil {
			return err
		}
		rope.Positions = &p
	}
	enc, err := m.ctx.NewEncoder()
	if err != nil {
		return err
	}
	defer func() { enc.Release() }()
	// Copy-on-write block copies and the block table go first.
	if err := m.KV.Sync(enc); err != nil {
		return err
	}

	st := &state{x: rows(m.x, n), h: rows(m.h, n), tmp: rows(m.tmp, n), q: rows(m.q, n), k: rows(m.k, n),
		v: rows(m.v, n), att: rows(m.att, n), gate: rows(m.gate, n), up: rows(m.up, n),
		spans: spans, n: n, rope: rope, decode: decode}

	// x [n, dim] = token embeddings
	if m.Embd.DType.Quantized() || m.Embd.DType == ops.BF16 {
		err = ops.EmbedQuant(enc, st.x, m.Embd, m.ids.View(0, n))
	} else {
		err = ops.Embed(enc, st.x, m.Embd, m.ids.View(0, n))
	}
	if err != nil {
		return err
	}
	for li := range m.Layers {
		if err := m.Layers[li].forward(m, enc, li, st); err != nil {
			return fmt.Errorf("model: layer %d: %w", li, err)
		}
		// The GPU starts on the first layers while the CPU records the
		// rest: recording a layer costs about as much CPU time as the GPU
		// takes to run it, so one submission at the end would serialise them.
		if (li+1)%layersPerSubmit == 0 && li+1 < len(m.Layers) {
			if err := enc.Submit(); err != nil {
				return err
			}
			if enc, err = m.ctx.NewEncoder(); err != nil {
				return err
			}
		}
	}

	// Only the rows whose logits are wanted go through the output matrix:
	// every row for AllLogits, else each sequence's last row.
	var out []int // rows of x, in order
	for _, sp := range spans {
		if want == AllLogits {
			for r := sp.row; r < sp.row+sp.n; r++ {
				out = append(out, r)
			}
		} else {
			out = append(out, sp.row+sp.n-1)
		}
	}
	lg := rows(m.logits, len(out))
	fusedOut := false
	if (decode || len(out) <= matVecMaxRows) && m.Norm.DType == ops.F32 && (len(out) == n || len(out) == 1) {
		// logits = (rmsnorm(x) · norm) · Outputᵀ in one dispatch per 8 rows
		xs := st.x.View(out[0]*c.Dim, len(out), c.Dim)
		err := m.matVecFused(enc, m.Output, xs, ops.MatVecOpts{Norm: &m.Norm, Eps: float32(c.NormEps)}, lg)
		if err != nil && !errors.Is(err, gpu.ErrBindingTooLarge) {
			return fmt.Errorf("model: output: %w", err)
		}
		fusedOut = err == nil
	}
	if !fusedOut {
		if err := m.normedOutput(enc, st, out, lg, decode); err != nil {
			return err
		}
	}
	switch want {
	case NextGreedy:
		nx := m.next.View(0, len(out))
		if err := ops.Argmax(enc, nx, lg); err != nil {
			return err
		}
		if err := enc.CopyToHost(m.rbTok, nx.Buf, 0, uint64(4*len(out))); err != nil {
			return err
		}
		if err := enc.Submit(); err != nil {
			return err
		}
		raw := make([]byte, 4*len(out))
		if err := m.rbTok.Read(raw); err != nil {
			return err
		}
		// A *ops.NonFiniteError names the sequences without a token.
		return ops.ArgmaxResults(raw, next[:len(out)])
	default:
		size := len(out) * c.Vocab
		if len(logits) < size {
			return fmt.Errorf("model: logits buffer of %d for %d×%d", len(logits), len(out), c.Vocab)
		}
		if uint64(4*size) <= m.rbLogSize {
			if err := enc.CopyToHost(m.rbLog, lg.Buf, 0, uint64(4*size)); err != nil {
				return err
			}
			if err := enc.Submit(); err != nil {
				return err
			}
			return readFloats(m.rbLog, logits[:size])
		}
		if err := enc.Submit(); err != nil {
			return err
		}
		all, err := lg.Read()
		if err != nil {
			return err
		}
		copy(logits, all)
		return nil
	}
}

// normedOutput records logits = (rmsnorm(x[out]) · norm) · Outputᵀ as
// separate norm and projection dispatches.
func (m *Model) normedOutput(enc *gpu.Encoder, st *state, out []int, lg ops.Tensor, decode bool) error {
	c := m.Cfg
	n := st.n
	hs := rows(m.h, len(out))
	if len(out) == n { // every row, already in place
		if err := ops.RMSNorm(enc, hs, st.x, m.Norm, float32(c.NormEps)); err != nil {
			return err
		}
	} else {
		for i, r := range out {
			if err := ops.RMSNorm(enc, hs.View(i*c.Dim, 1, c.Dim), st.x.View(r*c.Dim, 1, c.Dim), m.Norm, float32(c.NormEps)); err != nil {
				return err
			}
		}
	}
	if err := m.linear(enc, lg, hs, m.Output, decode); err != nil {
		return fmt.Errorf("model: output: %w", err)
	}
	return nil
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

// state is one forward pass's views of the scratch buffers, [n, ...] each.
type state struct {
	x, h, tmp, q, k, v, att, gate, up ops.Tensor
	spans                             []span
	n                                 int
	rope                              ops.RoPEOpts
	decode                            bool
}

// forward records one block: attention then the SwiGLU MLP, each added to
// the residual stream x.
func (l *Layer) forward(m *Model, enc *gpu.Encoder, li int, s *state) error {
	c := m.Cfg
	eps := float32(c.NormEps)
	n := s.n
	fused := s.decode || n <= matVecMaxRows
	if fused && l.QKV.Buf != nil && l.AttnNorm.DType == ops.F32 {
		// q, k, v = (rmsnorm(x) · attn_norm) · QKVᵀ in one dispatch
		if err := m.matVecFused(enc, l.QKV, s.x, ops.MatVecOpts{Norm: &l.AttnNorm, Eps: eps}, s.q, s.k, s.v); err != nil {
			return err
		}
	} else {
		// h = rmsnorm(x) · attn_norm
		if err := ops.RMSNorm(enc, s.h, s.x, l.AttnNorm, eps); err != nil {
			return err
		}
		// q [n, heads·hd], k, v [n, kvHeads·hd]
		for _, p := range []struct{ dst, w ops.Tensor }{{s.q, l.Q}, {s.k, l.K}, {s.v, l.V}} {
			if err := m.linear(enc, p.dst, s.h, p.w, s.decode); err != nil {
				return err
			}
		}
	}
	for _, p := range []struct{ dst, b ops.Tensor }{{s.q, l.BQ}, {s.k, l.BK}, {s.v, l.BV}} {
		if p.b.Buf != nil {
			if err := ops.AddRow(enc, p.dst, p.dst, p.b); err != nil {
				return err
			}
		}
	}
	if c.QKNorm { // qwen3: RMSNorm over each head's vector
		qh := s.q.View(0, n*c.Heads, c.HeadDim)
		kh := s.k.View(0, n*c.KVHeads, c.HeadDim)
		if err := ops.RMSNorm(enc, qh, qh, l.QNorm, eps); err != nil {
			return err
		}
		if err := ops.RMSNorm(enc, kh, kh, l.KNorm, eps); err != nil {
			return err
		}
	}
	// RoPE on q and k, and the new K/V rows to their cache slots, in one
	// dispatch; attention reads every sequence's cache through the block
	// table in one more.
	q3 := s.q.View(0, n, c.Heads, c.HeadDim)
	k3 := s.k.View(0, n, c.KVHeads, c.HeadDim)
	v3 := s.v.View(0, n, c.KVHeads, c.HeadDim)
	if err := m.KV.WriteRotated(enc, li, q3, k3, v3, m.step.Slots, s.rope); err != nil {
		return err
	}
	nSeq := len(s.spans)
	nq := n / nSeq
	if err := ops.AttentionPaged(enc, s.att.View(0, nSeq, nq, c.Heads, c.HeadDim), s.q.View(0, nSeq, nq, c.Heads, c.HeadDim),
		m.KV.Keys(li), m.KV.Values(li), m.KV.BlockTable(), m.step.Info,
		ops.PagedOptions{Causal: true, MaxKVLen: m.KV.Config().MaxSeqLen}); err != nil {
		return err
	}
	if fused {
		// x += att · Oᵀ
		if err := m.matVecFused(enc, l.O, s.att, ops.MatVecOpts{Accumulate: true}, s.x); err != nil {
			return err
		}
		// x += (silu(h·Gateᵀ) * h·Upᵀ) · Downᵀ with h = rmsnorm(x) · ffn_norm
		if l.GateUp.Buf != nil && l.FFNNorm.DType == ops.F32 {
			if err := m.matVecFused(enc, l.GateUp, s.x, ops.MatVecOpts{Pair: true, Norm: &l.FFNNorm, Eps: eps}, s.gate); err != nil {
				return err
			}
		} else if err := l.gateUp(m, enc, s, eps); err != nil {
			return err
		}
		return m.matVecFused(enc, l.Down, s.gate, ops.MatVecOpts{Accumulate: true}, s.x)
	}
	// x += att · Oᵀ
	if err := m.linear(enc, s.tmp, s.att, l.O, s.decode); err != nil {
		return err
	}
	if err := ops.Add(enc, s.x, s.x, s.tmp); err != nil {
		return err
	}
	// x += (silu(h·Gateᵀ) * h·Upᵀ) · Downᵀ
	if err := l.gateUp(m, enc, s, eps); err != nil {
		return err
	}
	if err := m.linear(enc, s.tmp, s.gate, l.Down, s.decode); err != nil {
		return err
	}
	return ops.Add(enc, s.x, s.x, s.tmp)
}

// gateUp records gate = silu(h·Gateᵀ) * h·Upᵀ with h = rmsnorm(x) · ffn_norm
// as separate dispatches (prefill, and weights that could not be joined).
func (l *Layer) gateUp(m *Model, enc *gpu.Encoder, s *state, eps float32) error {
	if err := ops.RMSNorm(enc, s.h, s.x, l.FFNNorm, eps); err != nil {
		return err
	}
	if err := m.linear(enc, s.gate, s.h, l.Gate, s.decode); err != nil {
		return err
	}
	if err := m.linear(enc, s.up, s.h, l.Up, s.decode); err != nil {
		return err
	}
	return ops.SiluMul(enc, s.gate, s.gate, s.up)
}

// matVecFused records ops.MatVecFused over the rows of x in groups of
// matVecMaxRows (the most one quantised matvec takes); dsts are [n, ...]
// like x.
func (m *Model) matVecFused(enc *gpu.Encoder, w, x ops.Tensor, o ops.MatVecOpts, dsts ...ops.Tensor) error {
	n := x.Shape[0]
	part := make([]ops.Tensor, len(dsts))
	for r := 0; r < n; r += matVecMaxRows {
		k := min(matVecMaxRows, n-r)
		for i, d := range dsts {
			cols := d.Shape[len(d.Shape)-1]
			part[i] = d.View(r*cols, k, cols)
		}
		in := x.Shape[1]
		if err := ops.MatVecFused(enc, w, x.View(r*in, k, in), o, part...); err != nil {
			return err
		}
	}
	return nil
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
