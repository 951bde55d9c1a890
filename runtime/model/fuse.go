package model

import (
	"fmt"

	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/runtime/gpu"
)

// Decode reads each group of matrices that multiply the same input in one
// dispatch (ops.MatVecFused), and a dispatch costs a few µs whatever its
// size. So at load Q, K and V are joined into one matrix, and gate and up
// into another, where they share a type; the separate tensors stay, as
// views into the joined matrix, for prefill. A file's own fused matrices
// (attn_qkv, a 2·ffn ffn_up) get the same views. Memory does not grow:
// each original buffer is freed once copied.

func (a *AttnWeights) prepare(m *Model, layer string) error {
	c := m.Cfg
	qDim, kvDim := c.Heads*c.HeadDim, c.KVHeads*c.HeadDim
	if a.QKV.Has() { // the file's fused matrix: views for the unfused path
		a.Q.Tensor = a.QKV.View(0, qDim, c.Dim)
		a.K.Tensor = a.QKV.View(qDim*c.Dim, kvDim, c.Dim)
		a.V.Tensor = a.QKV.View((qDim+kvDim)*c.Dim, kvDim, c.Dim)
		if a.QKVB.Has() {
			a.BQ.Tensor = a.QKVB.View(0, qDim)
			a.BK.Tensor = a.QKVB.View(qDim, kvDim)
			a.BV.Tensor = a.QKVB.View(qDim+kvDim, kvDim)
		}
		return nil
	}
	joined, err := m.join(layer+".attn_qkv", &a.Q.Tensor, &a.K.Tensor, &a.V.Tensor)
	a.QKV.Tensor = joined
	if err != nil || joined.Buf == nil || !a.BQ.Has() || !a.BK.Has() || !a.BV.Has() {
		return err
	}
	// The biases too (qwen2, gpt-oss), for the fused matvec to add.
	a.QKVB.Tensor, err = m.joinVectors(layer+".attn_qkv_bias", &a.BQ.Tensor, &a.BK.Tensor, &a.BV.Tensor)
	return err
}

// joinVectors is join for 1-D tensors (biases): each part stays a 1-D
// view of the joined vector.
func (m *Model) joinVectors(name string, parts ...*ops.Tensor) (ops.Tensor, error) {
	cols := make([]ops.Tensor, len(parts))
	ptrs := make([]*ops.Tensor, len(parts))
	for i, p := range parts {
		if p.Buf == nil || len(p.Shape) != 1 {
			return ops.Tensor{}, nil
		}
		cols[i], ptrs[i] = p.View(0, p.Shape[0], 1), &cols[i]
	}
	joined, err := m.join(name, ptrs...)
	if err != nil || joined.Buf == nil {
		return ops.Tensor{}, err
	}
	for i, p := range parts {
		*p = cols[i].View(0, cols[i].Shape[0])
	}
	return joined.View(0, joined.Shape[0]), nil
}

func (f *GatedFFN) prepare(m *Model, layer string) error {
	joined, err := m.join(layer+".ffn_gate_up", &f.Gate.Tensor, &f.Up.Tensor)
	f.joined.GateUp.Tensor = joined
	return err
}

func (f *FusedFFN) prepare(m *Model, _ string) error {
	ffn, dim := m.Cfg.FFN, m.Cfg.Dim
	f.split.Gate.Tensor = f.GateUp.View(0, ffn, dim)
	f.split.Up.Tensor = f.GateUp.View(ffn*dim, ffn, dim)
	return nil
}

// join copies the row-major matrices parts (same type and columns) one after
// another into a new matrix and makes each part a view of it. It returns a
// zero tensor, and changes nothing, when the parts cannot be joined.
func (m *Model) join(name string, parts ...*ops.Tensor) (ops.Tensor, error) {
	first := *parts[0]
	rows := 0
	for _, p := range parts {
		if p.Buf == nil || p.DType != first.DType || len(p.Shape) != 2 || p.Shape[1] != first.Shape[1] ||
			p.Off != 0 || p.Bytes() != p.Buf.Size() || p.Bytes()%4 != 0 {
			return ops.Tensor{}, nil // mixed types (e.g. Q4_K_M's Q6_K attn_v), or not a whole buffer
		}
		rows += p.Shape[0]
	}
	cols := first.Shape[1]
	joined, err := ops.New(m.ctx, name, first.DType, rows, cols)
	if err != nil {
		return ops.Tensor{}, fmt.Errorf("model: joining %s: %w", name, err)
	}
	enc, err := m.ctx.NewEncoder()
	if err != nil {
		joined.Buf.Destroy()
		return ops.Tensor{}, err
	}
	var at uint64
	for _, p := range parts {
		if err := enc.Copy(joined.Buf, at, p.Buf, 0, p.Bytes()); err != nil {
			enc.Release()
			joined.Buf.Destroy()
			return ops.Tensor{}, fmt.Errorf("model: joining %s: %w", name, err)
		}
		at += p.Bytes()
	}
	if err := enc.SubmitAndWait(); err != nil {
		joined.Buf.Destroy()
		return ops.Tensor{}, fmt.Errorf("model: joining %s: %w", name, err)
	}
	m.buffers = append(m.buffers, joined)
	row := 0
	for _, p := range parts {
		old := p.Buf
		*p = joined.View(row*cols, p.Shape[0], cols)
		row += p.Shape[0]
		m.replaceBuffer(old, *p)
	}
	return joined, nil
}

// replaceBuffer frees a buffer the model owns; its entry in the weight
// list becomes the view that replaced it, or goes when view is unbound.
func (m *Model) replaceBuffer(b *gpu.Buffer, view ops.Tensor) {
	kept := m.buffers[:0]
	for _, t := range m.buffers {
		if t.Buf != b {
			kept = append(kept, t)
		}
	}
	m.buffers = kept
	weights := m.weights[:0]
	for _, w := range m.weights {
		switch {
		case w.Buf != b:
			weights = append(weights, w)
		case view.Buf != nil: // a joined part of two is listed once
			weights = append(weights, view)
		}
	}
	m.weights = weights
	b.Destroy()
}
