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
// the slots routed to it (ops.MatVecExperts), and the weighted
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
	logits := rows(s.logits, 0, n)
	for _, g := range p.groups {
		p.fail(p.linear(g, rows(s.logits, g.row, g.n), rows(m.h, g.row, g.n), e.Router.Tensor))
	}
	if e.RouterB.Has() && p.err == nil {
		p.fail(ops.AddRow(p.enc, logits, logits, e.RouterB.Tensor))
	}
	ids, weights := s.ids.View(0, n, k), s.weights.View(0, n, k)
	route := s.route.View(0, ops.RouteLen(c.Experts, n*k))
	if p.err == nil {
		p.fail(ops.MoERoute(p.enc, ids, weights, route, logits, ops.RouteOpts{K: k, Gating: o.Gating, Normalize: o.Normalize, Scale: o.Scale}))
	}
	gate, up := s.gate.View(0, n*k, c.ExpertFFN), s.up.View(0, n*k, c.ExpertFFN)
	down := s.down.View(0, n*k, c.Dim)
	steps := []func() error{
		// gate = act(h·Gate_eᵀ + bg, h·Up_eᵀ + bu) for each slot's expert e
		func() error { return ops.MatVecExperts(p.enc, gate, e.Gate.Tensor, h, route, biasOf(e.GateB), k) },
		func() error { return ops.MatVecExperts(p.enc, up, e.Up.Tensor, h, route, biasOf(e.UpB), k) },
		func() error { return ops.GatedAct(p.enc, gate, gate, up, o.Act) },
	}
	if e.gateUp.Buf != nil { // the same in one dispatch (joined at load)
		var b *ops.Tensor
		if e.gateUpB.Buf != nil {
			b = &e.gateUpB
		}
		steps = []func() error{func() error { return ops.MatVecExpertsGated(p.enc, gate, e.gateUp, h, route, b, k, o.Act) }}
	}
	// down [n·K, dim] = gate · Down_eᵀ + bd
	steps = append(steps, func() error { return ops.MatVecExperts(p.enc, down, e.Down.Tensor, gate, route, biasOf(e.DownB), 1) })
	for _, st := range steps {
		if p.err == nil {
			p.fail(st())
		}
	}
	var sh, shGate *ops.Tensor
	if o.Shared != nil {
		sh, shGate = p.sharedExpert(o.Shared)
	}
	if p.err == nil {
		p.fail(ops.MoECombine(p.enc, p.all(m.x), down, weights, sh, shGate))
	}
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

func (p *pass) AddBias(b Weight) {
	if p.err != nil {
		return
	}
	x := p.all(p.m.x)
	p.fail(ops.AddRow(p.enc, x, x, b.Tensor))
}
