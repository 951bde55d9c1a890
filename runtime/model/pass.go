package model

import (
	"errors"
	"fmt"

	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/runtime/gpu"
)

// pass is one step on the GPU: the Block the architectures' forward
// passes are recorded through. Rows are split into groups by how their
// projections run: single-token spans (decode) always through the fused
// matvec kernels, so their results do not depend on the step's other rows;
// the prompt chunks through the same kernels when they are few rows, or
// through RMSNorm and the tiled matmul when many.
type pass struct {
	m      *Model
	enc    *gpu.Encoder
	runs   []run
	want   Want
	n      int
	groups []rowGroup
	rope   ops.RoPEOpts // the step's positions
	err    error
	// Results: outRows says which run each result row belongs to; result
	// holds the logits or hidden states, nextIDs the argmax ids.
	outRows []outRow
	result  ops.Tensor
	nextIDs ops.Tensor
}

type rowGroup struct {
	row, n int
	runs   []int // indices into pass.runs
	fused  bool  // matvec kernels with the norm fused in (else norm + tiled matmul)
	decode bool  // single-token spans: attention takes them in one dispatch
}

type outRow struct{ run, row int }

// spanKind sorts a step's spans by how their rows are computed: 0 one
// token (decode), 1 a chunk of at most matVecMaxRows tokens (the fused
// matvec kernels, as a chunk that short takes alone), 2 a longer chunk
// (norm and the tiled matmul). Grouping by kind, not by the step's total,
// keeps every span's kernels, and so its bits, the same whatever shares
// its step.
func spanKind(n int) int {
	switch {
	case n == 1:
		return 0
	case n <= matVecMaxRows:
		return 1
	}
	return 2
}

func (m *Model) newPass(runs []run, want Want) (*pass, error) {
	c := m.Cfg
	last := runs[len(runs)-1]
	p := &pass{m: m, runs: runs, want: want, n: last.row + last.n}
	var byKind [3]rowGroup // decode, short chunks, long chunks (Step orders runs so)
	for i, r := range runs {
		g := &byKind[spanKind(r.n)]
		if g.n == 0 { // the group starts at its first span
			g.row = r.row
		}
		g.n += r.n
		g.runs = append(g.runs, i)
	}
	d, short, long := byKind[0], byKind[1], byKind[2]
	if d.n > 0 {
		d.decode = true
		d.fused = m.decodeTiledRows <= 0 || d.n < m.decodeTiledRows
		p.groups = append(p.groups, d)
	}
	if short.n > 0 { // the matvec's rows never depend on their batch-mates
		short.fused = true
		p.groups = append(p.groups, short)
	}
	if long.n > 0 { // nor do the tiled matmul's
		p.groups = append(p.groups, long)
	}
	ids := make([]uint32, 0, p.n)
	pos := make([]uint32, 0, p.n)
	for _, r := range runs {
		for j, t := range r.tokens {
			ids = append(ids, uint32(t))
			pos = append(pos, uint32(r.pos+j))
		}
	}
	if err := m.ids.View(0, p.n).WriteUint32(ids); err != nil {
		return nil, err
	}
	p.rope = ops.RoPEOpts{Mode: ops.RoPENormal, NRot: c.RopeDims, Base: c.RopeBase, FreqScale: c.RopeScale,
		ExtFactor: c.YarnExtFactor, AttnFactor: c.YarnAttnFactor, BetaFast: c.YarnBetaFast, BetaSlow: c.YarnBetaSlow,
		OrigCtx: c.RopeOrigCtx}
	if c.RopeMode == RopeNeox {
		p.rope.Mode = ops.RoPENeox
	}
	if len(runs) == 1 {
		p.rope.PosOffset = uint32(runs[0].pos)
	} else {
		pt := m.positions.View(0, p.n)
		if err := pt.WriteUint32(pos); err != nil {
			return nil, err
		}
		p.rope.Positions = &pt
	}
	enc, err := m.ctx.NewEncoder()
	if err != nil {
		return nil, err
	}
	p.enc = enc
	// Copy-on-write block copies and the block table go first.
	if err := m.KV.Sync(enc); err != nil {
		p.release()
		return nil, err
	}
	return p, nil
}

func (p *pass) release() {
	if p.enc != nil {
		p.enc.Release()
		p.enc = nil
	}
}

func (p *pass) submit() error {
	err := p.enc.Submit()
	p.enc.Release()
	p.enc = nil
	return err
}

// fail keeps the first error.
func (p *pass) fail(err error) {
	if err != nil && p.err == nil {
		p.err = err
	}
}

// rows is rows [row, row+n) of a [batch, cols] tensor.
func rows(t ops.Tensor, row, n int) ops.Tensor {
	cols := t.Shape[len(t.Shape)-1]
	return t.View(row*cols, n, cols)
}

// all is the step's rows of a [batch, cols] scratch tensor.
func (p *pass) all(t ops.Tensor) ops.Tensor { return rows(t, 0, p.n) }

func (p *pass) Config() Config { return p.m.Cfg }

func (p *pass) MaxSeqLen() int { return p.m.KV.Config().MaxSeqLen }

func (p *pass) Embed(table Weight, scale float32) {
	if p.err != nil {
		return
	}
	x, ids := p.all(p.m.x), p.m.ids.View(0, p.n)
	if table.DType.Quantized() || table.DType == ops.BF16 {
		p.fail(ops.EmbedQuant(p.enc, x, table.Tensor, ids))
	} else {
		p.fail(ops.Embed(p.enc, x, table.Tensor, ids))
	}
	if scale != 0 && scale != 1 && p.err == nil {
		p.fail(ops.Scale(p.enc, x, x, scale))
	}
}

// Layer submits every layersPerSubmit layers: the GPU starts on the first
// layers while the CPU records the rest (recording a layer costs about as
// much CPU time as the GPU takes to run it, so one submission at the end
// would serialise them).
func (p *pass) Layer(li int) {
	if p.err != nil || li == 0 || li%layersPerSubmit != 0 {
		return
	}
	if err := p.enc.Submit(); err != nil {
		p.fail(err)
		return
	}
	p.enc.Release()
	enc, err := p.m.ctx.NewEncoder()
	if err != nil {
		p.enc = nil
		p.fail(err)
		return
	}
	p.enc = enc
}

func (p *pass) eps() float32 { return float32(p.m.Cfg.NormEps) }

func (p *pass) QKV(norm Weight, a *AttnWeights) (q, k, v Act) {
	m := p.m
	q, k, v = Act{t: p.all(m.q)}, Act{t: p.all(m.k)}, Act{t: p.all(m.v)}
	if p.err != nil {
		return
	}
	for _, g := range p.groups {
		x := rows(m.x, g.row, g.n)
		qg, kg, vg := rows(m.q, g.row, g.n), rows(m.k, g.row, g.n), rows(m.v, g.row, g.n)
		if g.fused && a.QKV.Buf != nil && norm.DType == ops.F32 {
			// q, k, v = (rmsnorm(x) · attn_norm) · QKVᵀ (+ the joined
			// biases) in one dispatch
			p.fail(p.matVecFused(a.QKV.Tensor, x, ops.MatVecOpts{Norm: &norm.Tensor, Eps: p.eps(), Bias: biasOf(a.QKVB)}, qg, kg, vg))
			if !a.QKVB.Has() { // biases that could not be joined (or none)
				p.addBiases(a, qg, kg, vg)
			}
			continue
		}
		if g.fused && a.QKV.Buf == nil && norm.DType == ops.F32 {
			// Q, K and V of different types (Q4_K_M's Q6_K attn_v): each
			// matvec normalises x itself, which saves the RMSNorm dispatch
			nopt := ops.MatVecOpts{Norm: &norm.Tensor, Eps: p.eps()}
			p.fail(p.matVecFused(a.Q.Tensor, x, nopt, qg))
			p.fail(p.matVecFused(a.K.Tensor, x, nopt, kg))
			p.fail(p.matVecFused(a.V.Tensor, x, nopt, vg))
			p.addBiases(a, qg, kg, vg)
			continue
		}
		h := rows(m.h, g.row, g.n)
		p.fail(ops.RMSNorm(p.enc, h, x, norm.Tensor, p.eps()))
		p.fail(p.linear(g, qg, h, a.Q.Tensor))
		p.fail(p.linear(g, kg, h, a.K.Tensor))
		p.fail(p.linear(g, vg, h, a.V.Tensor))
		p.addBiases(a, qg, kg, vg)
	}
	return
}

// addBiases adds the Q, K and V biases (where the file has them) to a
// group's rows.
func (p *pass) addBiases(a *AttnWeights, q, k, v ops.Tensor) {
	for _, b := range []struct {
		dst  ops.Tensor
		bias ops.Tensor
	}{{q, a.BQ.Tensor}, {k, a.BK.Tensor}, {v, a.BV.Tensor}} {
		if b.bias.Buf != nil && p.err == nil {
			p.fail(ops.AddRow(p.enc, b.dst, b.dst, b.bias))
		}
	}
}

func (p *pass) HeadNorms(q, k Act, qNorm, kNorm Weight) {
	if p.err != nil {
		return
	}
	hd := p.m.Cfg.HeadDim
	heads := func(t Act) ops.Tensor { return t.t.View(0, t.t.Len()/hd, hd) }
	qh, kh := heads(q), heads(k)
	if qh.Buf == kh.Buf && qNorm.DType == kNorm.DType { // one dispatch for both
		p.fail(ops.RMSNormTwo(p.enc, qh, kh, qNorm.Tensor, kNorm.Tensor, p.eps()))
		return
	}
	p.fail(ops.RMSNorm(p.enc, qh, qh, qNorm.Tensor, p.eps()))
	p.fail(ops.RMSNorm(p.enc, kh, kh, kNorm.Tensor, p.eps()))
}

func (p *pass) Attention(li int, q, k, v Act, o AttnOpts) Act {
	m, c := p.m, p.m.Cfg
	att := Act{t: p.all(m.att)}
	if p.err != nil {
		return att
	}
	rope := p.rope
	if o.Rope.Base != 0 {
		rope.Base = o.Rope.Base
	}
	if o.Rope.FreqScale != 0 {
		rope.FreqScale = o.Rope.FreqScale
	}
	if o.Rope.Factors.Has() {
		rope.FreqFactors = &o.Rope.Factors.Tensor
	}
	// RoPE on q and k, and the new K/V rows to their cache slots, in one
	// dispatch; attention reads every sequence's cache through the block
	// table.
	q3 := q.t.View(0, p.n, c.Heads, c.HeadDim)
	k3 := k.t.View(0, p.n, c.KVHeads, c.HeadDim)
	v3 := v.t.View(0, p.n, c.KVHeads, c.HeadDim)
	if err := m.KV.WriteRotated(p.enc, li, q3, k3, v3, m.step.Slots, rope); err != nil {
		p.fail(err)
		return att
	}
	opt := ops.PagedOptions{Causal: true, MaxKVLen: m.KV.Config().MaxSeqLen, Scale: o.Scale, SoftCap: o.SoftCap, Window: o.Window}
	if o.Sinks.Has() {
		opt.Sinks = &o.Sinks.Tensor
	}
	attend := func(infoRow, nSeq, row, nq int) {
		info := m.step.Info.View(infoRow*3, nSeq, 3)
		out := m.att.View(row*c.Heads*c.HeadDim, nSeq, nq, c.Heads, c.HeadDim)
		qs := q.t.View(row*c.Heads*c.HeadDim, nSeq, nq, c.Heads, c.HeadDim)
		p.fail(ops.AttentionPaged(p.enc, out, qs, m.KV.Keys(li), m.KV.Values(li), m.KV.BlockTable(), info, opt))
	}
	for _, g := range p.groups {
		if g.decode { // one token of each sequence: one dispatch for all
			attend(g.runs[0], len(g.runs), g.row, 1)
			continue
		}
		for _, ri := range g.runs {
			r := p.runs[ri]
			attend(ri, 1, r.row, r.n)
		}
	}
	return att
}

func (p *pass) Residual(in Act, w Weight, postNorm Weight) { p.residual(in, w, postNorm, Weight{}) }

func (p *pass) ResidualBiased(in Act, w, bias Weight) { p.residual(in, w, Weight{}, bias) }

// residual adds in·wᵀ (+ bias) to x, RMS-normalised by postNorm first when
// it is bound.
func (p *pass) residual(in Act, w, postNorm, bias Weight) {
	m := p.m
	if p.err != nil {
		return
	}
	for _, g := range p.groups {
		x, ing := rows(m.x, g.row, g.n), rows(in.t, g.row, g.n)
		switch {
		case g.fused && !postNorm.Has():
			// x += in · wᵀ (+ bias) as the matvec stores
			p.fail(p.matVecFused(w.Tensor, ing, ops.MatVecOpts{Accumulate: true, Bias: biasOf(bias)}, x))
		case postNorm.Has():
			// x += rmsnorm(in · wᵀ) · post_norm: the norm needs whole rows,
			// so the product goes to tmp and one dispatch adds its norm
			tmp := rows(m.tmp, g.row, g.n)
			p.fail(p.linear(g, tmp, ing, w.Tensor))
			if bias.Has() && p.err == nil {
				p.fail(ops.AddRow(p.enc, tmp, tmp, bias.Tensor))
			}
			p.fail(ops.RMSNormAdd(p.enc, x, tmp, postNorm.Tensor, p.eps()))
		default:
			tmp := rows(m.tmp, g.row, g.n)
			p.fail(p.linear(g, tmp, ing, w.Tensor))
			p.fail(ops.Add(p.enc, x, x, tmp))
			if bias.Has() && p.err == nil {
				p.fail(ops.AddRow(p.enc, x, x, bias.Tensor))
			}
		}
	}
}

func (p *pass) FFN(norm Weight, f FFN, act Activation) Act {
	m := p.m
	gate := Act{t: p.all(m.gate)}
	if p.err != nil {
		return gate
	}
	w := f.parts()
	for _, g := range p.groups {
		x, gg := rows(m.x, g.row, g.n), rows(m.gate, g.row, g.n)
		if g.fused && w.GateUp.Buf != nil && norm.DType == ops.F32 {
			// gate = act(h·Gateᵀ) * (h·Upᵀ) with h = rmsnorm(x) · ffn_norm
			p.fail(p.matVecFused(w.GateUp.Tensor, x, ops.MatVecOpts{Pair: true, Act: act, Norm: &norm.Tensor, Eps: p.eps()}, gg))
			continue
		}
		h, ug := rows(m.h, g.row, g.n), rows(m.up, g.row, g.n)
		p.fail(ops.RMSNorm(p.enc, h, x, norm.Tensor, p.eps()))
		p.fail(p.linear(g, gg, h, w.Gate.Tensor))
		p.fail(p.linear(g, ug, h, w.Up.Tensor))
		p.fail(ops.GatedAct(p.enc, gg, gg, ug, act))
	}
	return gate
}

func (p *pass) Head(norm, out Weight, softCap float32) {
	m := p.m
	if p.err != nil {
		return
	}
	// Only the rows whose results are wanted go through the head: every
	// row for AllLogits and Hidden, else each span's last row. Each group's
	// wanted rows are computed apart, so decode rows see the same kernels
	// whatever shares the step.
	dst := m.logits
	if p.want == Hidden {
		dst = m.h
	}
	at := 0
	for _, g := range p.groups {
		var want []outRow
		for _, ri := range g.runs {
			r := p.runs[ri]
			if p.want == AllLogits || p.want == Hidden {
				for row := r.row; row < r.row+r.n; row++ {
					want = append(want, outRow{run: ri, row: row})
				}
			} else {
				want = append(want, outRow{run: ri, row: r.row + r.n - 1})
			}
		}
		res := rows(dst, at, len(want))
		p.fail(p.headRows(g, want, norm, out, res))
		p.outRows = append(p.outRows, want...)
		at += len(want)
	}
	p.result = rows(dst, 0, at)
	if softCap != 0 && p.want != Hidden && p.err == nil {
		// logits = cap·tanh(logits/cap), before the argmax
		p.fail(ops.SoftCap(p.enc, p.result, p.result, softCap))
	}
	if p.want == NextGreedy && p.err == nil {
		p.nextIDs = m.next.View(0, at)
		if m.sampling != nil && m.sampling.params != nil {
			p.fail(p.sampleHead()) // StepSampled: a draw instead of the argmax
		} else {
			p.fail(ops.Argmax(p.enc, p.nextIDs, p.result))
		}
	}
}

// headRows records res = (rmsnorm(x[want]) · norm) · outᵀ (or the normed
// rows alone for Hidden).
func (p *pass) headRows(g rowGroup, want []outRow, norm, out Weight, res ops.Tensor) error {
	m := p.m
	contiguous := true
	for i := range want {
		if want[i].row != want[0].row+i {
			contiguous = false
		}
	}
	if p.want == Hidden {
		for i, w := range want { // res is h itself: normalise row by row into place
			if err := ops.RMSNorm(p.enc, rows(res, i, 1), rows(m.x, w.row, 1), norm.Tensor, p.eps()); err != nil {
				return err
			}
		}
		return nil
	}
	if (g.fused || len(want) <= matVecMaxRows) && norm.DType == ops.F32 {
		// logits = (rmsnorm(x) · norm) · outᵀ in one dispatch per 8 rows of
		// each run of consecutive wanted rows (a chunk's last row alone):
		// each row's logits the same as when its span runs alone.
		var err error
		for i := 0; i < len(want) && err == nil; {
			j := i + 1
			for j < len(want) && want[j].row == want[i].row+(j-i) {
				j++
			}
			xs := rows(m.x, want[i].row, j-i)
			err = p.matVecFused(out.Tensor, xs, ops.MatVecOpts{Norm: &norm.Tensor, Eps: p.eps()}, rows(res, i, j-i))
			i = j
		}
		if err == nil || !errors.Is(err, gpu.ErrBindingTooLarge) {
			if err != nil {
				return fmt.Errorf("model: output: %w", err)
			}
			return nil
		}
	}
	// Separate norm and projection: the rows gathered into h first.
	hs := rows(m.h, g.row, len(want))
	if contiguous {
		if err := ops.RMSNorm(p.enc, hs, rows(m.x, want[0].row, len(want)), norm.Tensor, p.eps()); err != nil {
			return err
		}
	} else {
		for i, w := range want {
			if err := ops.RMSNorm(p.enc, rows(hs, i, 1), rows(m.x, w.row, 1), norm.Tensor, p.eps()); err != nil {
				return err
			}
		}
	}
	if err := p.linear(g, res, hs, out.Tensor); err != nil {
		return fmt.Errorf("model: output: %w", err)
	}
	return nil
}

// linear records dst[n, out] = x[n, in] · wᵀ for a weight w [out, in] of
// any stored type. Fused groups take the matvec kernels, in groups of
// matVecMaxRows: their per-row results do not depend on how many rows
// share the call. Others take the tiled matmul: on the weight as stored
// with Options.QuantMatMul, else on the weight dequantised to f16.
func (p *pass) linear(g rowGroup, dst, x, w ops.Tensor) error {
	if p.err != nil {
		return nil
	}
	n := x.Shape[0]
	if g.fused || n <= matVecMaxRows {
		in, out := x.Shape[1], dst.Shape[1]
		for r := 0; r < n; r += matVecMaxRows {
			k := min(matVecMaxRows, n-r)
			xs, ds := x.View(r*in, k, in), dst.View(r*out, k, out)
			var err error
			if w.DType.Quantized() || w.DType == ops.BF16 {
				err = ops.MatVecQuant(p.enc, ds, w, xs)
			} else {
				err = ops.MatVec(p.enc, ds, w, xs)
			}
			if err != nil {
				return err
			}
		}
		return nil
	}
	if w.DType.Quantized() || w.DType == ops.BF16 {
		if p.m.quantMatMul {
			return ops.MatMulQuant(p.enc, dst, x, w)
		}
		deq := p.m.wdeq.View(0, w.Shape...)
		if err := ops.Dequantize(p.enc, deq, w); err != nil {
			return err
		}
		w = deq
	}
	return ops.MatMul(p.enc, dst, x, w, true)
}

// matVecFused records ops.MatVecFused over the rows of x in groups of
// matVecMaxRows (the most one quantised matvec takes); dsts are [n, ...]
// like x.
func (p *pass) matVecFused(w, x ops.Tensor, o ops.MatVecOpts, dsts ...ops.Tensor) error {
	if p.err != nil {
		return nil
	}
	n := x.Shape[0]
	part := make([]ops.Tensor, len(dsts))
	for r := 0; r < n; r += matVecMaxRows {
		k := min(matVecMaxRows, n-r)
		for i, d := range dsts {
			cols := d.Shape[len(d.Shape)-1]
			part[i] = d.View(r*cols, k, cols)
		}
		in := x.Shape[1]
		if err := ops.MatVecFused(p.enc, w, x.View(r*in, k, in), o, part...); err != nil {
			return err
		}
	}
	return nil
}
