package model

import (
	"fmt"

	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/runtime/gpu"
)

// fuseLayers joins each layer's Q, K and V weights into one matrix and its
// gate and up weights into another, where they share a type: decode then
// reads each group in one dispatch (ops.MatVecFused), and a dispatch costs a
// few µs whatever its size. The separate tensors stay, as views into the
// joined matrix, for prefill. Memory does not grow: each original buffer is
// freed once copied.
func (m *Model) fuseLayers() error {
	for i := range m.Layers {
		l := &m.Layers[i]
		var err error
		if l.QKV, err = m.join(fmt.Sprintf("blk.%d.attn_qkv", i), &l.Q, &l.K, &l.V); err != nil {
			return err
		}
		if l.GateUp, err = m.join(fmt.Sprintf("blk.%d.ffn_gate_up", i), &l.Gate, &l.Up); err != nil {
			return err
		}
	}
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
	row := 0
	for _, p := range parts {
		old := p.Buf
		*p = joined.View(row*cols, p.Shape[0], cols)
		row += p.Shape[0]
		m.dropBuffer(old)
	}
	m.buffers = append(m.buffers, joined)
	return joined, nil
}

// dropBuffer frees a buffer the model owns and forgets it.
func (m *Model) dropBuffer(b *gpu.Buffer) {
	kept := m.buffers[:0]
	for _, t := range m.buffers {
		if t.Buf == b {
			continue
		}
		kept = append(kept, t)
	}
	m.buffers = kept
	b.Destroy()
}
