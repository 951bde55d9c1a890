package ops

import (
	"fmt"
	"math"
	"sync"

	"github.com/wgllm/wgllm/runtime/gpu"
	"github.com/wgllm/wgllm/wgsl"
)

// ScoreLayout places per-head attention scores (or probabilities) in
// memory: element (head h, query i, key j) lies h*HeadStride + i*RowStride
// + j elements after the start of the view. A zero RowStride means Keys; a
// zero HeadStride means Queries*RowStride (head-major [Heads, Queries,
// Keys]). Query-major [Queries, Heads, Keys] is RowStride = Heads*Keys,
// HeadStride = Keys.
type ScoreLayout struct {
	Heads, Queries, Keys  int
	RowStride, HeadStride int
}

// resolve fills the default strides, checks that rows do not overlap and
// returns the number of elements the layout spans.
func (l ScoreLayout) resolve(op string) (ScoreLayout, int, error) {
	if l.RowStride == 0 {
		l.RowStride = l.Keys
	}
	if l.HeadStride == 0 {
		l.HeadStride = l.Queries * l.RowStride
	}
	if l.Heads <= 0 || l.Queries <= 0 || l.Keys <= 0 {
		return l, 0, fmt.Errorf("ops.%s: invalid score layout %+v (need heads, queries, keys > 0)", op, l)
	}
	headMajor := l.RowStride >= l.Keys && l.HeadStride >= l.Queries*l.RowStride
	queryMajor := l.HeadStride >= l.Keys && l.RowStride >= l.Heads*l.HeadStride
	if !headMajor && !queryMajor {
		return l, 0, fmt.Errorf("ops.%s: score layout %+v has overlapping rows", op, l)
	}
	return l, (l.Heads-1)*l.HeadStride + (l.Queries-1)*l.RowStride + l.Keys, nil
}

// TokenLayout places a token-major [Tokens, Heads, HeadDim] tensor in
// memory: element (t, h, d) lies t*TokenStride + h*HeadDim + d elements
// after the start of the view. A zero TokenStride means Heads*HeadDim; a
// larger one reads e.g. the V part of a fused QKV projection in place.
type TokenLayout struct {
	Tokens, Heads, HeadDim int
	TokenStride            int
}

func (l TokenLayout) resolve(op string) (TokenLayout, int, error) {
	if l.TokenStride == 0 {
		l.TokenStride = l.Heads * l.HeadDim
	}
	if l.Tokens <= 0 || l.Heads <= 0 || l.HeadDim <= 0 || l.TokenStride < l.Heads*l.HeadDim {
		return l, 0, fmt.Errorf("ops.%s: invalid token layout %+v (need sizes > 0 and token stride >= heads*headDim)", op, l)
	}
	return l, (l.Tokens-1)*l.TokenStride + l.Heads*l.HeadDim, nil
}

type wsumKey struct {
	WG int
	V  DType
}

func (k wsumKey) String() string { return fmt.Sprintf("attention_wsum_v%s_wg%d", k.V, k.WG) }

type wsumParams struct {
	Heads, Queries, Keys, HeadDim, Group uint32
	POff, PRowStride, PHeadStride        uint32
	VOff, VTokenStride                   uint32
	OOff                                 uint32
}

// WeightedSum is the unfused P·V step of attention:
//
//	out[i, h, :] = Σ_j probs(h, i, j) · v[j, h / (pl.Heads/vl.Heads), :]
//
// probs (f32) is laid out by pl; v (f32 or f16, e.g. a KV cache) by vl, of
// which the first pl.Keys tokens are used; out (f32) is [pl.Queries,
// pl.Heads, vl.HeadDim], packed. vl.Heads (kv heads) must divide pl.Heads:
// grouped-query heads share a kv head. Each output sums the keys in order.
func WeightedSum(enc *gpu.Encoder, out, probs Tensor, pl ScoreLayout, v Tensor, vl TokenLayout) error {
	pl, pSpan, err := pl.resolve("WeightedSum")
	if err != nil {
		return err
	}
	vl, vSpan, err := vl.resolve("WeightedSum")
	if err != nil {
		return err
	}
	switch {
	case probs.DType != F32 || out.DType != F32:
		return fmt.Errorf("ops.WeightedSum: probs %s and out %s must be f32", probs, out)
	case v.DType != F32 && v.DType != F16:
		return fmt.Errorf("ops.WeightedSum: v %s must be f32 or f16", v)
	case pl.Heads%vl.Heads != 0:
		return fmt.Errorf("ops.WeightedSum: %d kv heads do not divide %d heads", vl.Heads, pl.Heads)
	case vl.Tokens < pl.Keys:
		return fmt.Errorf("ops.WeightedSum: v has %d tokens, probs %d keys", vl.Tokens, pl.Keys)
	case probs.Len() < pSpan:
		return fmt.Errorf("ops.WeightedSum: probs %s holds %d elements, layout %+v needs %d", probs, probs.Len(), pl, pSpan)
	case v.Len() < vSpan:
		return fmt.Errorf("ops.WeightedSum: v %s holds %d elements, layout %+v needs %d", v, v.Len(), vl, vSpan)
	case out.Len() != pl.Queries*pl.Heads*vl.HeadDim:
		return fmt.Errorf("ops.WeightedSum: out %s is not [%d, %d, %d]", out, pl.Queries, pl.Heads, vl.HeadDim)
	case out.Buf == probs.Buf || out.Buf == v.Buf:
		return fmt.Errorf("ops.WeightedSum: out must not share a buffer with probs or v")
	case !fitsU32(probs.Off+pSpan, v.Off+vSpan, out.Off+out.Len()):
		return fmt.Errorf("ops.WeightedSum: operands too large for 32-bit indexing")
	}
	args, offs, err := binds("WeightedSum", probs.View(0, pSpan), v.View(0, vSpan), out)
	if err != nil {
		return err
	}
	key := wsumKey{WG: 64, V: v.DType}
	if vl.HeadDim <= 32 {
		key.WG = 32
	}
	pipe, err := enc.Context().Pipeline(key, func() (gpu.PipelineSpec, error) {
		src, err := wgsl.Render("attention_wsum.wgsl", map[string]any{"WG": key.WG, "V": key.V.String()})
		return gpu.PipelineSpec{Source: src, Storage: []gpu.Access{gpu.ReadOnly, gpu.ReadOnly, gpu.ReadWrite}}, err
	})
	if err != nil {
		return err
	}
	gx, gy := enc.Context().Grid(uint32(pl.Queries * pl.Heads))
	return enc.Dispatch(pipe, wsumParams{
		Heads: uint32(pl.Heads), Queries: uint32(pl.Queries), Keys: uint32(pl.Keys),
		HeadDim: uint32(vl.HeadDim), Group: uint32(pl.Heads / vl.Heads),
		POff: offs[0], PRowStride: uint32(pl.RowStride), PHeadStride: uint32(pl.HeadStride),
		VOff: offs[1], VTokenStride: uint32(vl.TokenStride),
		OOff: offs[2],
	}, args, gx, gy, 1)
}

// AttentionVariant selects the flash-attention kernel.
type AttentionVariant uint8

const (
	// AttentionAuto picks AttentionSplitK for a single query, or when the
	// query block is small (queries × heads-per-kv-head <= 32, where the
	// prefill kernel would get one row tile per kv head), else
	// AttentionPrefill. The choice depends only on the sequence's own
	// shape, never on the batch size.
	AttentionAuto AttentionVariant = iota
	// AttentionPrefill tiles queries × keys in workgroup memory.
	AttentionPrefill
	// AttentionSplitK ("flash-decoding") cuts the keys into chunks handled
	// by separate workgroups, then merges the partial results.
	AttentionSplitK
)

func (v AttentionVariant) String() string {
	switch v {
	case AttentionAuto:
		return "auto"
	case AttentionPrefill:
		return "prefill"
	case AttentionSplitK:
		return "splitk"
	}
	return fmt.Sprintf("variant(%d)", uint8(v))
}

// AttentionOptions are the per-call settings of Attention.
type AttentionOptions struct {
	// Causal masks key j for query i when j > QOffset+i.
	Causal bool
	// QOffset is the absolute position of query 0 in the key sequence:
	// for a block of nq queries appended to a cache of KVLen tokens (the
	// block included) it is KVLen-nq. Causal only; QOffset+nq <= KVLen.
	QOffset int
	// KVLen is the number of valid leading tokens of k and v; 0 means
	// all of them (the cache capacity).
	KVLen int
	// Scale multiplies q·k; 0 means 1/sqrt(headDim).
	Scale float32
	// Variant forces a kernel; the zero value picks one from the shape.
	Variant AttentionVariant
	// MaxWorkgroupStorage caps the workgroup memory (bytes) a kernel may
	// use, to pick smaller tiles; 0 or more than the device allows means
	// the device limit.
	MaxWorkgroupStorage int

	// SoftCap, Window and Sinks are as in PagedOptions; with Window and
	// without Causal, query i still sits at position QOffset+i.
	SoftCap float32
	Window  int
	Sinks   *Tensor
}

func (o AttentionOptions) mods() attnMods { return attnMods{o.SoftCap, o.Window, o.Sinks} }

// Largest head dim: tiles of Q, K and V rows must fit workgroup memory.
const maxAttentionHeadDim = 256

// Attention computes softmax(q·kᵀ·scale + mask)·v with flash attention
// (online softmax over key tiles; no score matrix is materialised).
//
// Layouts are token-major, as a QKV projection produces them:
//
//	q, out: f32 [batch, nq, heads, headDim]    (3-D [nq, heads, headDim]: batch 1)
//	k, v:   f32 or f16 [batch, kvCap, kvHeads, headDim]   (3-D likewise)
//
// Only the first opt.KVLen tokens of k and v are read (a KV cache with
// room to spare). kvHeads must divide heads; head h reads kv head
// h/(heads/kvHeads) (grouped-query; kvHeads = 1 is multi-query). headDim
// must be a multiple of 4, at most 256. The batch dimension of k and v
// matches q's: each sequence has its own cache. out may not share a buffer
// with q, k or v. The split-K variant uses a per-context scratch buffer
// (see ReleaseAttentionScratch).
func Attention(enc *gpu.Encoder, out, q, k, v Tensor, opt AttentionOptions) error {
	d, err := attentionDims(out, q, k, v, &opt)
	if err != nil {
		return err
	}
	ctx := enc.Context()
	smem := int(ctx.Limits.MaxComputeWorkgroupStorageSize)
	if opt.MaxWorkgroupStorage > 0 && opt.MaxWorkgroupStorage < smem {
		smem = opt.MaxWorkgroupStorage
	}
	mods := opt.mods()
	ts := []Tensor{q, k, v, out}
	if mods.Sinks != nil {
		ts = append(ts, *mods.Sinks)
	}
	args, offs, err := binds("Attention", ts...)
	if err != nil {
		return err
	}
	if k.DType == F16 && (offs[1]%2 != 0 || offs[2]%2 != 0) {
		return fmt.Errorf("ops.Attention: f16 k and v views must start at an even element (offsets %d, %d)", k.Off, v.Off)
	}
	prm := attnParams{
		NRows: uint32(d.nq * d.group), Group: uint32(d.group), KVLen: uint32(opt.KVLen), Pos0: uint32(opt.QOffset),
		QOff: offs[0], KOff: offs[1], VOff: offs[2], OOff: offs[3],
		QBStride: uint32(d.nq * d.heads * d.hd), QTStride: uint32(d.heads * d.hd),
		KVBStride: uint32(d.cap * d.kvHeads * d.hd), KVTStride: uint32(d.kvHeads * d.hd),
		NKVH: uint32(d.kvHeads), Batch: uint32(d.batch),
	}
	var sinkOff uint32
	if mods.Sinks != nil {
		sinkOff = offs[4]
	}
	mods.setParams(&prm, opt.Scale, sinkOff)
	feat := mods.features()
	variant := pickAttentionVariant(opt.Variant, d.nq, d.group)
	if variant == AttentionPrefill {
		tiles, err := choosePrefillTiles(d.hd, smem)
		if err != nil {
			return err
		}
		key := attnPrefillKey{D: d.hd, KV: k.DType, Causal: opt.Causal, T: tiles, attnFeatures: feat}
		pipe, err := ctx.Pipeline(key, key.build)
		if err != nil {
			return err
		}
		rowTiles := ceilDiv(d.nq*d.group, tiles.BQ)
		prm.RowTiles = uint32(rowTiles)
		gx, gy := ctx.Grid(uint32(rowTiles))
		return enc.Dispatch(pipe, prm, args, gx, gy, uint32(d.batch*d.kvHeads))
	}

	tiles, err := chooseSplitTiles(d.hd, k.DType, d.nq*d.group, smem)
	if err != nil {
		return err
	}
	rowTiles := ceilDiv(d.nq*d.group, tiles.RT)
	prm.RowTiles = uint32(rowTiles)
	// The chunks cover the keys from the first query's window start on
	// (the shader derives the same start from pos0).
	span := opt.KVLen - min(opt.KVLen, windowStart(opt.QOffset, opt.Window))
	nTiles := ceilDiv(span, tiles.BK)
	splitLen := ceilDiv(nTiles, attentionSplits(ctx, d.kvHeads, rowTiles)) * tiles.BK
	nSplit := max(1, ceilDiv(span, splitLen))
	partials := d.batch * d.nq * d.heads * nSplit // one per (sequence, row, split)
	scratchArg, err := splitScratch(ctx, "Attention", partials, d.hd)
	if err != nil {
		return err
	}
	prm.NSplit, prm.SplitLen = uint32(nSplit), uint32(splitLen)
	prm.PartOff, prm.MLOff = 0, uint32(partials*d.hd)

	skey := attnSplitKey{D: d.hd, KV: k.DType, Causal: opt.Causal, T: tiles, attnFeatures: feat.split()}
	spipe, err := ctx.Pipeline(skey, skey.build)
	if err != nil {
		return err
	}
	ckey := attnCombineKey{D: d.hd, WG: combineWG, Sinks: feat.Sinks}
	cpipe, err := ctx.Pipeline(ckey, ckey.build)
	if err != nil {
		return err
	}
	if err := enc.Dispatch(spipe, prm, []gpu.Arg{args[0], args[1], args[2], scratchArg},
		uint32(nSplit), uint32(rowTiles), uint32(d.batch*d.kvHeads)); err != nil {
		return err
	}
	gx, gy := ctx.Grid(uint32(d.batch * d.nq * d.heads)) // a workgroup per output row
	return enc.Dispatch(cpipe, prm, combineArgs(scratchArg, args[3], args[4:]), gx, gy, 1)
}

// combineArgs binds the combine kernel: scratch, out, then the sinks if
// bound (sinks holds them or is empty).
func combineArgs(scratch, out gpu.Arg, sinks []gpu.Arg) []gpu.Arg {
	return append([]gpu.Arg{scratch, out}, sinks...)
}

// The split count depends only on kvLen (batch invariance): at most this
// many chunks of whole key tiles (attentionSplits picks fewer for models
// with many kv heads and on software adapters).
const maxAttentionSplits = 64

type attnDims struct {
	batch, nq, heads, hd, cap, kvHeads, group int
}

// attentionDims validates Attention's operands and fills opt's defaults.
func attentionDims(out, q, k, v Tensor, opt *AttentionOptions) (attnDims, error) {
	var d attnDims
	fail := func(format string, a ...any) (attnDims, error) {
		return d, fmt.Errorf("ops.Attention: q %s, k %s, v %s, out %s: %s", q, k, v, out, fmt.Sprintf(format, a...))
	}
	switch len(q.Shape) {
	case 3:
		d.batch, d.nq, d.heads, d.hd = 1, q.Shape[0], q.Shape[1], q.Shape[2]
	case 4:
		d.batch, d.nq, d.heads, d.hd = q.Shape[0], q.Shape[1], q.Shape[2], q.Shape[3]
	default:
		return fail("q must be [batch, nq, heads, headDim] or [nq, heads, headDim]")
	}
	if len(k.Shape) != len(q.Shape) {
		return fail("k must have q's rank")
	}
	if len(k.Shape) == 3 {
		d.cap, d.kvHeads = k.Shape[0], k.Shape[1]
	} else {
		if k.Shape[0] != d.batch {
			return fail("k's batch %d differs from q's %d", k.Shape[0], d.batch)
		}
		d.cap, d.kvHeads = k.Shape[1], k.Shape[2]
	}
	switch {
	case q.DType != F32 || out.DType != F32:
		return fail("q and out must be f32")
	case k.DType != v.DType || (k.DType != F32 && k.DType != F16):
		return fail("k and v must both be f32 or both f16")
	case !equalShape(k.Shape, v.Shape):
		return fail("k and v shapes differ")
	case !equalShape(out.Shape, q.Shape):
		return fail("out must have q's shape")
	case k.Shape[len(k.Shape)-1] != d.hd:
		return fail("head dims of q and k differ")
	case d.batch <= 0 || d.nq <= 0 || d.heads <= 0 || d.hd <= 0 || d.cap <= 0 || d.kvHeads <= 0:
		return fail("empty dimension")
	case d.hd%4 != 0 || d.hd > maxAttentionHeadDim:
		return fail("head dim %d must be a multiple of 4 and at most %d", d.hd, maxAttentionHeadDim)
	case d.heads%d.kvHeads != 0:
		return fail("%d kv heads do not divide %d heads", d.kvHeads, d.heads)
	case out.Buf == q.Buf || out.Buf == k.Buf || out.Buf == v.Buf:
		return fail("out must not share a buffer with q, k or v")
	}
	d.group = d.heads / d.kvHeads
	if opt.KVLen == 0 {
		opt.KVLen = d.cap
	}
	if opt.KVLen < 1 || opt.KVLen > d.cap {
		return fail("kvLen %d outside [1, %d]", opt.KVLen, d.cap)
	}
	if opt.QOffset < 0 || (opt.Causal && opt.QOffset+d.nq > opt.KVLen) {
		return fail("qOffset %d with %d queries does not fit %d keys", opt.QOffset, d.nq, opt.KVLen)
	}
	if err := opt.mods().check(d.heads, out); err != nil {
		return fail("%v", err)
	}
	if !opt.Causal && opt.Window == 0 {
		opt.QOffset = 0
	}
	if opt.Scale == 0 {
		opt.Scale = float32(1 / math.Sqrt(float64(d.hd)))
	}
	if math.IsNaN(float64(opt.Scale)) || math.IsInf(float64(opt.Scale), 0) {
		return fail("scale %v is not finite", opt.Scale)
	}
	if opt.Variant > AttentionSplitK {
		return fail("unknown variant %v", opt.Variant)
	}
	if !fitsU32(q.Off+q.Len(), k.Off+k.Len(), v.Off+v.Len(), out.Off+out.Len()) {
		return fail("too large for 32-bit indexing")
	}
	return d, nil
}

func equalShape(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// attnParams is the uniform shared by the three attention kernels.
type attnParams struct {
	NRows, Group, KVLen, Pos0 uint32 // rows per (batch, kv head) = nq·group
	QOff, KOff, VOff, OOff    uint32
	QBStride, QTStride        uint32 // q and out: batch and token strides
	KVBStride, KVTStride      uint32
	NKVH, RowTiles            uint32
	Scale                     float32 // scale·log2(e): the kernels use exp2
	NSplit, SplitLen          uint32
	PartOff, MLOff            uint32 // split-K scratch: partial outputs, then (max, sum) pairs
	Batch                     uint32
	// Paged variant only (AttentionPaged): pool size in blocks, block
	// table offset, row stride and row count, sequence-info offset, and
	// the split cap the per-sequence split length is derived from.
	NBlocks, TblOff, TblStride, TblRows uint32
	InfoOff, MaxSplit                   uint32
	// Score modifications (attnMods): cap·log2(e), the window, and the
	// sinks' offset.
	SoftCap         float32
	Window, SinkOff uint32
	// Q8_0 pools (AttentionPaged): the word where their scale plane starts.
	KVScOff uint32
}

// prefillTiles is the prefill kernel's blocking: BQ rows × BK keys per
// tile, WG threads; each thread computes a TQ×TK block of scores and an
// OQ×OV (vec4) block of the output.
type prefillTiles struct{ BQ, BK, WG, TQ, TK, OQ, OV int }

type attnPrefillKey struct {
	D      int
	KV     DType
	Causal bool
	T      prefillTiles
	attnFeatures
}

func (k attnPrefillKey) String() string {
	c := ""
	if k.Causal {
		c = "_causal"
	}
	return fmt.Sprintf("attention_prefill_d%d_kv%s%s_bq%d_bk%d_wg%d_s%dx%d_o%dx%d%s",
		k.D, k.KV, c, k.T.BQ, k.T.BK, k.T.WG, k.T.TQ, k.T.TK, k.T.OQ, k.T.OV, k.attnFeatures)
}

func (k attnPrefillKey) build() (gpu.PipelineSpec, error) { return k.render(0) }

// render fills attention_prefill.wgsl; a block size bs > 0 gives the paged
// variant (two more storage bindings: block table and sequence info).
func (k attnPrefillKey) render(bs int) (gpu.PipelineSpec, error) {
	t, d4 := k.T, k.D/4
	storage := attnStorage(bs)
	src, err := wgsl.Render("attention_prefill.wgsl", k.template(map[string]any{
		"BQ": t.BQ, "BK": t.BK, "D": k.D, "D4": d4, "RS4": d4 + 1, "SS": t.BK + 1, "WG": t.WG,
		"TQ": t.TQ, "TK": t.TK, "SQN": t.BQ / t.TQ, "SKN": t.BK / t.TK, "TQK": t.TQ * t.TK,
		"OQ": t.OQ, "OV": t.OV, "OQN": t.BQ / t.OQ, "OCN": d4 / t.OV, "OQV": t.OQ * t.OV,
		"QSLen": t.BQ * (d4 + 1), "KVLen": t.BK * (d4 + 1), "SSLen": t.BQ * (t.BK + 1),
		"RP": t.rowThreads(), "RedLen": t.BQ * t.rowThreads(),
		"KV": k.KV.String(), "Causal": k.Causal, "Paged": bs > 0, "BS": bs,
	}, len(storage)+1))
	if k.Sinks {
		storage = append(storage, gpu.ReadOnly)
	}
	return gpu.PipelineSpec{Source: src, Storage: storage}, err
}

// attnStorage lists the storage bindings of the prefill and split-K
// kernels: q, k, v, then the output (or scratch); the paged variant adds
// the block table and the sequence info.
func attnStorage(bs int) []gpu.Access {
	s := []gpu.Access{gpu.ReadOnly, gpu.ReadOnly, gpu.ReadOnly, gpu.ReadWrite}
	if bs > 0 {
		s = append(s, gpu.ReadOnly, gpu.ReadOnly)
	}
	return s
}

// rowThreads is the number of threads sharing a row's softmax update.
func (t prefillTiles) rowThreads() int { return min(t.WG/t.BQ, t.BK) }

// prefillSmem is the workgroup memory of the prefill kernel in bytes: Q
// tile, one K/V tile (V is staged over K), the score tile, the row scales
// and the partial maxima and sums of the row softmax.
func prefillSmem(d, bq, bk, wg int) int {
	return 16*(bq+bk)*(d/4+1) + 4*(bq*(bk+1)+bq) + 8*wg
}

// choosePrefillTiles takes the first blocking, largest first, that fits the
// workgroup memory; rows × head dim is capped so the Q tile stays within
// 16 KiB (BQ 64 for head dim 64, 32 for 128, 16 for 256). With 48 KiB
// (H100) head dim 128 gets 32×32, with 32 KiB (lavapipe) 32×16.
func choosePrefillTiles(d, smem int) (prefillTiles, error) {
	const wg = 128
	for _, c := range [][2]int{{64, 32}, {32, 32}, {32, 16}, {16, 16}, {16, 8}, {8, 8}} {
		bq, bk := c[0], c[1]
		if bq*d > 4096 || prefillSmem(d, bq, bk, wg) > smem {
			continue
		}
		tq, tk, ok1 := microTile(bq, bk, wg, 16)
		oq, ov, ok2 := microTile(bq, d/4, wg, 16)
		if ok1 && ok2 {
			return prefillTiles{BQ: bq, BK: bk, WG: wg, TQ: tq, TK: tk, OQ: oq, OV: ov}, nil
		}
	}
	return prefillTiles{}, fmt.Errorf("ops.Attention: no prefill tile for head dim %d fits %d bytes of workgroup memory", d, smem)
}

// microTile splits a rows×cols block over at most wg threads: each thread
// takes tr rows × tc columns (tr | rows, tc | cols), tr·tc <= maxPer. It
// picks the fewest elements per thread, then the fewest loads (tr+tc),
// then more rows (column loads are vector loads).
func microTile(rows, cols, wg, maxPer int) (tr, tc int, ok bool) {
	best := [3]int{1 << 30, 1 << 30, 0}
	for r := 1; r <= rows; r++ {
		if rows%r != 0 {
			continue
		}
		for c := 1; c <= cols; c++ {
			if cols%c != 0 || r*c > maxPer || (rows/r)*(cols/c) > wg {
				continue
			}
			score := [3]int{r * c, r + c, -r}
			if score[0] < best[0] || (score[0] == best[0] && (score[1] < best[1] || (score[1] == best[1] && score[2] < best[2]))) {
				best, tr, tc, ok = score, r, c, true
			}
		}
	}
	return tr, tc, ok
}

// splitTiles is the split-K kernel's blocking: RT rows per workgroup, key
// tiles of BK, WG threads (a multiple of BK: WG/BK threads share each
// key's dot products).
type splitTiles struct{ RT, BK, WG int }

type attnSplitKey struct {
	D            int
	KV           DType
	Causal       bool
	T            splitTiles
	attnFeatures // SoftCap and Window only: the combine kernel adds the sinks
}

func (k attnSplitKey) String() string {
	c := ""
	if k.Causal {
		c = "_causal"
	}
	return fmt.Sprintf("attention_splitk_d%d_kv%s%s_rt%d_bk%d_wg%d%s",
		k.D, k.KV, c, k.T.RT, k.T.BK, k.T.WG, k.attnFeatures)
}

func (k attnSplitKey) build() (gpu.PipelineSpec, error) { return k.render(0) }

// render fills attention_split.wgsl; a block size bs > 0 gives the paged
// variant.
func (k attnSplitKey) render(bs int) (gpu.PipelineSpec, error) {
	t, d4 := k.T, k.D/4
	tr := t.softmaxThreads()
	kl := t.WG / d4
	ks, raw := splitTileTypes(k.KV)
	src, err := wgsl.Render("attention_split.wgsl", k.template(map[string]any{
		"RT": t.RT, "BK": t.BK, "D": k.D, "D4": d4, "RS": d4 + 1, "WG": t.WG,
		"KT": t.WG / t.BK, "TR": tr, "NE": t.BK / tr, "KL": kl, "KPL": ceilDiv(t.BK, kl),
		"KSI": ceilDiv(t.BK*d4, t.WG), "DKM": ceilDiv(d4, t.WG/t.BK),
		"QSLen": t.RT * d4, "SMLen": splitSmemK(d4, k.KV, t), "SSLen": t.WG * t.RT,
		"KS": ks, "Raw": raw,
		"KV": k.KV.String(), "Causal": k.Causal, "Paged": bs > 0, "BS": bs,
	}, 0))
	return gpu.PipelineSpec{Source: src, Storage: attnStorage(bs)}, err
}

// softmaxThreads is the number of threads sharing a row's softmax step.
func (t splitTiles) softmaxThreads() int { return min(t.WG/t.RT, t.BK) }

// splitTileTypes are the split kernel's K tile element (f16 keeps the
// pairs as loaded; f32 and dequantised q8_0 are vec4<f32>) and the type
// its V registers hold until used.
func splitTileTypes(kv DType) (tile, raw string) {
	switch kv {
	case F16:
		return "vec2<u32>", "vec2<u32>"
	case Q8_0:
		return "vec4<f32>", "vec3<u32>"
	}
	return "vec4<f32>", "vec4<f32>"
}

// splitSmemK is the element count of the K tile / lane-partials region
// (for f16 two pair elements per vec4 of lane partials).
func splitSmemK(d4 int, kv DType, t splitTiles) int {
	lanes := t.WG / d4 * t.RT * d4
	if kv == F16 {
		lanes *= 2
	}
	return max(t.BK*(d4+1), lanes)
}

// splitSmem is the split kernel's workgroup memory in bytes: Q, the K tile
// (or lane partials), score parts, partial maxima and the row scales.
func splitSmem(d int, kv DType, t splitTiles) int {
	d4 := d / 4
	elem := 16
	if kv == F16 {
		elem = 8
	}
	return 16*t.RT*d4 + elem*splitSmemK(d4, kv, t) + 4*(t.WG*t.RT+t.WG+t.RT)
}

// chooseSplitTiles: up to 8 rows per workgroup (the G heads of one query
// share the K/V reads) and the largest key tile that fits, at most 8,192
// head-dim values (64 keys of 128: 64 V values a thread held in registers
// while the tile is scored); with little workgroup memory, fewer rows.
func chooseSplitTiles(d int, kv DType, rows, smem int) (splitTiles, error) {
	const wg = 128
	rt := 1
	for rt < rows && rt < 8 {
		rt *= 2
	}
	for ; rt >= 1; rt /= 2 {
		for _, bk := range []int{64, 32, 16, 8} {
			t := splitTiles{RT: rt, BK: bk, WG: wg}
			if bk*d <= 8192 && splitSmem(d, kv, t) <= smem {
				return t, nil
			}
		}
	}
	return splitTiles{}, fmt.Errorf("ops.Attention: no split-K tile for head dim %d fits %d bytes of workgroup memory", d, smem)
}

// attnSplitTarget, when > 0, replaces attentionSplits' workgroup target
// (tests run the hardware policy on a software adapter).
var attnSplitTarget int

// attentionSplits is the most chunks a sequence's keys are cut into. It
// depends on the model's shape and the device only, never on the batch:
// enough workgroups for one sequence to fill a GPU (about 512: 64 chunks
// × 8 kv heads, 16 × 32 kv heads), few on a software adapter, where each
// workgroup is a CPU thread's task and more chunks only add merge work.
func attentionSplits(ctx *gpu.Context, kvHeads, rowTiles int) int {
	target := 512
	if ctx.Software() {
		target = 16
	}
	if attnSplitTarget > 0 {
		target = attnSplitTarget
	}
	return max(1, min(maxAttentionSplits, ceilDiv(target, kvHeads*rowTiles)))
}

// combineWG is the combine kernel's workgroup: one output row of at most
// 64 vec4s, its splits shared among WG/(D/4) groups of threads.
const combineWG = 128

type attnCombineKey struct {
	D, WG int
	Sinks bool // adds the attention sinks to each row's denominator
}

func (k attnCombineKey) String() string {
	s := fmt.Sprintf("attention_combine_d%d_wg%d", k.D, k.WG)
	if k.Sinks {
		s += "_sinks"
	}
	return s
}

func (k attnCombineKey) build() (gpu.PipelineSpec, error) {
	src, err := wgsl.Render("attention_combine.wgsl", map[string]any{
		"D": k.D, "D4": k.D / 4, "WG": k.WG, "SG": k.WG / (k.D / 4), "MS": maxAttentionSplits, "Sinks": k.Sinks})
	storage := []gpu.Access{gpu.ReadOnly, gpu.ReadWrite}
	if k.Sinks {
		storage = append(storage, gpu.ReadOnly)
	}
	return gpu.PipelineSpec{Source: src, Storage: storage}, err
}

// The split-K partials live in one scratch buffer per context. It only
// grows; a replaced buffer is kept alive because encoders recorded (not yet
// submitted) may still reference it. Dispatches in one queue run in order,
// so reusing the buffer across layers and submissions is safe.
var attnScratch = struct {
	sync.Mutex
	bufs map[*gpu.Context][]*gpu.Buffer // the last one is current
}{bufs: map[*gpu.Context][]*gpu.Buffer{}}

func attentionScratch(ctx *gpu.Context, bytes uint64) (*gpu.Buffer, error) {
	attnScratch.Lock()
	defer attnScratch.Unlock()
	list := attnScratch.bufs[ctx]
	if n := len(list); n > 0 && list[n-1].Size() >= bytes {
		return list[n-1], nil
	}
	size := bytes
	if n := len(list); n > 0 {
		size = max(size, min(2*list[n-1].Size(), ctx.MaxBinding()))
	}
	b, err := ctx.NewBuffer("attention_scratch", size)
	if err != nil {
		return nil, fmt.Errorf("ops.Attention: %w", err)
	}
	attnScratch.bufs[ctx] = append(list, b)
	return b, nil
}

// ReleaseAttentionScratch frees the split-K scratch buffers Attention keeps
// for ctx. Call it only when no recorded or submitted work still uses them,
// e.g. before ctx.Close; a later Attention call allocates afresh.
func ReleaseAttentionScratch(ctx *gpu.Context) {
	attnScratch.Lock()
	defer attnScratch.Unlock()
	for _, b := range attnScratch.bufs[ctx] {
		b.Destroy()
	}
	delete(attnScratch.bufs, ctx)
}

// pickAttentionVariant resolves AttentionAuto: split-K ("flash-decoding")
// when few query rows share a KV head (decode), the tiled prefill kernel
// otherwise.
func pickAttentionVariant(v AttentionVariant, nq, group int) AttentionVariant {
	if v != AttentionAuto {
		return v
	}
	if nq == 1 || nq*group <= 32 {
		return AttentionSplitK
	}
	return AttentionPrefill
}

// splitScratch binds the split-K scratch: per partial row, hd output sums
// plus its running max and sum.
func splitScratch(ctx *gpu.Context, op string, partials, hd int) (gpu.Arg, error) {
	elems := partials * (hd + 2)
	if !fitsU32(elems) || uint64(elems)*4 > ctx.MaxBinding() {
		return gpu.Arg{}, fmt.Errorf("ops.%s: split-K scratch of %d partial rows × %d floats exceeds the binding limit of %d bytes",
			op, partials, hd+2, ctx.MaxBinding())
	}
	scratch, err := attentionScratch(ctx, uint64(elems)*4)
	if err != nil {
		return gpu.Arg{}, err
	}
	return gpu.Arg{Buf: scratch, Offset: 0, Size: uint64(elems) * 4}, nil
}
