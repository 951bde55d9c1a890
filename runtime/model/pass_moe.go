package model

import "github.com/wgllm/wgllm/ops"

// moeScratch holds an MoE layer's intermediate values for a step of up to
// batch rows, K experts each.
type moeScratch struct {
	logits   ops.Tensor // [batch, experts] router logits
	ids      ops.Tensor // u32 [batch·K] chosen experts
	weights  ops.Tensor // [batch·K] their weights
	route    ops.Tensor // u32 [ops.RouteLen(experts, batch·K)] slots grouped by expert
	gate, up ops.Tensor // [batch·K, expert ffn]
	down     ops.Tensor // [batch·K, dim] the experts' outputs
	shGate   ops.Tensor // [batch] the shared expert's gate logit
}

// moeScratchBytes is what allocMoE allocates, for Estimate.
func moeScratchBytes(c Config, n int) uint64 {
	if c.Experts == 0 {
		return 0
	}
	k := n * c.ExpertsUsed
	return 4 * uint64(n*c.Experts+2*k+ops.RouteLen(c.Experts, k)+2*k*c.ExpertFFN+k*c.Dim+n)
}

func (m *Model) allocMoE(alloc func(dst *ops.Tensor, name string, dt ops.DType, shape ...int)) {
	c, n := m.Cfg, m.batch
	if c.Experts == 0 {
		return
	}
	k := n * c.ExpertsUsed
	s := &m.moe
	alloc(&s.logits, "moe_logits", ops.F32, n, c.Experts)
	alloc(&s.ids, "moe_ids", ops.U32, k)
	alloc(&s.weights, "moe_weights", ops.F32, k)
	alloc(&s.route, "moe_route", ops.U32, ops.RouteLen(c.Experts, k))
	alloc(&s.gate, "moe_gate", ops.F32, k, c.ExpertFFN)
	alloc(&s.up, "moe_up", ops.F32, k, c.ExpertFFN)
	alloc(&s.down, "moe_down", ops.F32, k, c.Dim)
	alloc(&s.shGate, "moe_shgate", ops.F32, n)
}

func biasOf(w Weight) *ops.Tensor {
	if !w.Has() {
		return nil
	}
	return &w.Tensor
}

// MoE on the GPU, for every row of the step at once: the router's logits
// (a matvec for decode rows, the matmul for prefill chunks), the top-K and
// the grouping of the step's slots by expert (ops.MoERoute, no readback),
// then each used expert's gate and up matrices (joined at load: one
// dispatch with the activation) and down matrix, each read once for all
// the slots routed to it (ops.MatVecExperts for decode rows and short
// chunks, the grouped ops.MatMulExperts for long chunks), and the weighted
// sum into x (ops.MoECombine). Every kernel computes a row or a slot alone,
// in a fixed order, so a decode row's result does not depend on the rest
// of the step.
func (p *pass) MoE(norm Weight, e *ExpertWeights, o MoEOpts) {
	m, c := p.m, p.m.Cfg
	if p.err != nil {
		return
	}
	n, k := p.n, c.ExpertsUsed
	s := &m.moe
	h := p.all(m.h)
	p.fail(ops.RMSNorm(p.enc, h, p.all(m.x), norm.Tensor, p.eps()))
	for _, g := range p.groups {
		lg, hg := rows(s.logits, g.row, g.n), rows(m.h, g.row, g.n)
		if g.fused { // the router's bias (gpt-oss) added by the matvec
			p.fail(p.matVecFused(e.Router.Tensor, hg, ops.MatVecOpts{Bias: biasOf(e.RouterB)}, lg))
			continue
		}
		p.fail(p.linear(g, lg, hg, e.Router.Tensor))
		if e.RouterB.Has() && p.err == nil {
			p.fail(ops.AddRow(p.enc, lg, lg, e.RouterB.Tensor))
		}
	}
	// Each row group routes and runs its experts apart: decode rows (and
	// short chunks) through the experts matvec, long prompt chunks through
	// the grouped matmul, which reads each expert's weights once per tile
	// of its slots. A slot's value depends only on its expert and x row
	// either way, so decode rows keep their bits whatever shares the step.
	for _, g := range p.groups {
		if p.err == nil {
			p.fail(p.experts(g, e, o))
		}
	}
	var sh, shGate *ops.Tensor
	if o.Shared != nil {
		sh, shGate = p.sharedExpert(o.Shared)
	}
	if p.err == nil {
		down, weights := s.down.View(0, n*k, c.Dim), s.weights.View(0, n, k)
		p.fail(ops.MoECombine(p.enc, p.all(m.x), down, weights, sh, shGate))
	}
}

// experts routes group g's rows to their K experts and records each slot's
// expert FFN into the down scratch [rows·K, dim] at the group's slots.
func (p *pass) experts(g rowGroup, e *ExpertWeights, o MoEOpts) error {
	m, c := p.m, p.m.Cfg
	s := &m.moe
	k := c.ExpertsUsed
	slot0, slots := g.row*k, g.n*k
	logits := rows(s.logits, g.row, g.n)
	ids, weights := s.ids.View(slot0, g.n, k), s.weights.View(slot0, g.n, k)
	route := s.route.View(0, ops.RouteLen(c.Experts, slots)) // reused group after group, in order
	if err := ops.MoERoute(p.enc, ids, weights, route, logits, ops.RouteOpts{K: k, Gating: o.Gating, Normalize: o.Normalize, Scale: o.Scale}); err != nil {
		return err
	}
	h := rows(m.h, g.row, g.n)
	gate, up := s.gate.View(slot0*c.ExpertFFN, slots, c.ExpertFFN), s.up.View(slot0*c.ExpertFFN, slots, c.ExpertFFN)
	down := s.down.View(slot0*c.Dim, slots, c.Dim)
	tiled := !g.fused && expertsTiled(e)
	mul, mulGated := ops.MatVecExperts, ops.MatVecExpertsGated
	if tiled {
		mul, mulGated = ops.MatMulExperts, ops.MatMulExpertsGated
	}
	if e.gateUp.Buf != nil { // gate and up joined at load: one dispatch with the activation
		var b *ops.Tensor
		if e.gateUpB.Buf != nil {
			b = &e.gateUpB
		}
		if err := mulGated(p.enc, gate, e.gateUp, h, route, b, k, o.Act); err != nil {
			return err
		}
	} else {
		// gate = act(h·Gate_eᵀ + bg, h·Up_eᵀ + bu) for each slot's expert e
		if err := mul(p.enc, gate, e.Gate.Tensor, h, route, biasOf(e.GateB), k); err != nil {
			return err
		}
		if err := mul(p.enc, up, e.Up.Tensor, h, route, biasOf(e.UpB), k); err != nil {
			return err
		}
		if err := ops.GatedAct(p.enc, gate, gate, up, o.Act); err != nil {
			return err
		}
	}
	// down [slots, dim] = gate · Down_eᵀ + bd
	return mul(p.enc, down, e.Down.Tensor, gate, route, biasOf(e.DownB), 1)
}

// expertsTiled is whether the grouped matmul takes these experts: it reads
// block-quantised and bf16 matrices (the experts matvec also takes f16 and
// f32).
func expertsTiled(e *ExpertWeights) bool {
	for _, w := range []ops.Tensor{e.gateUp, e.Gate.Tensor, e.Up.Tensor, e.Down.Tensor} {
		if w.Buf != nil && !w.DType.Quantized() && w.DType != ops.BF16 {
			return false
		}
	}
	return true
}

// sharedExpert records the shared expert's FFN of h into tmp [n, dim] and
// its gate logit h·GateInp into the shGate scratch [n].
func (p *pass) sharedExpert(sh *SharedExpert) (out, gate *ops.Tensor) {
	m, c := p.m, p.m.Cfg
	ff := c.SharedFFN
	gateInp := sh.GateInp.View(0, 1, c.Dim)
	for _, g := range p.groups {
		h := rows(m.h, g.row, g.n)
		gg, ug := m.gate.View(g.row*ff, g.n, ff), m.up.View(g.row*ff, g.n, ff)
		p.fail(p.linear(g, gg, h, sh.Gate.Tensor))
		p.fail(p.linear(g, ug, h, sh.Up.Tensor))
		if p.err == nil {
			p.fail(ops.GatedAct(p.enc, gg, gg, ug, ActSiLU))
		}
		p.fail(p.linear(g, rows(m.tmp, g.row, g.n), gg, sh.Down.Tensor))
		p.fail(p.linear(g, m.moe.shGate.View(g.row, g.n, 1), h, gateInp))
	}
	o, gl := p.all(m.tmp), m.moe.shGate.View(0, p.n)
	return &o, &gl
}
