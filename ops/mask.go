package ops

import (
	"fmt"
	"math"

	"github.com/wgllm/wgllm/runtime/gpu"
	"github.com/wgllm/wgllm/wgsl"
)

type maskKey struct{ WG, Chunk int }

func (k maskKey) String() string { return fmt.Sprintf("causal_mask_wg%d_chunk%d", k.WG, k.Chunk) }

type maskParams struct {
	Heads, Queries, Keys       uint32
	Off, RowStride, HeadStride uint32
	QOffset                    uint32
	Chunks                     uint32
	NegInf                     float32
}

// CausalMask applies the causal mask in place to scores (f32) laid out by
// l: query i of the block sits at absolute position qOffset+i of the key
// sequence and may see keys 0..qOffset+i; every later entry of its row
// (key j > qOffset+i, j < l.Keys) becomes -inf. Other entries, and memory
// between rows, are left untouched. The mask is computed in the kernel from
// indices, so the host never builds or uploads an nq×nk mask.
func CausalMask(enc *gpu.Encoder, scores Tensor, l ScoreLayout, qOffset int) error {
	l, span, err := l.resolve("CausalMask")
	if err != nil {
		return err
	}
	if scores.DType != F32 {
		return fmt.Errorf("ops.CausalMask: scores %s must be f32", scores)
	}
	if scores.Len() < span {
		return fmt.Errorf("ops.CausalMask: scores %s holds %d elements, layout %+v needs %d", scores, scores.Len(), l, span)
	}
	if qOffset < 0 || !fitsU32(qOffset+l.Queries+1, scores.Off+span) {
		return fmt.Errorf("ops.CausalMask: qOffset %d out of range for layout %+v", qOffset, l)
	}
	args, offs, err := binds("CausalMask", scores.View(0, span))
	if err != nil {
		return err
	}
	key := maskKey{WG: 256, Chunk: 1024}
	pipe, err := enc.Context().Pipeline(key, func() (gpu.PipelineSpec, error) {
		src, err := wgsl.Render("mask.wgsl", map[string]any{"WG": key.WG, "Chunk": key.Chunk})
		return gpu.PipelineSpec{Source: src, Storage: []gpu.Access{gpu.ReadWrite}}, err
	})
	if err != nil {
		return err
	}
	chunks := ceilDiv(l.Keys, key.Chunk)
	total := l.Heads * l.Queries * chunks
	if !fitsU32(total) {
		return fmt.Errorf("ops.CausalMask: layout %+v needs too many workgroups", l)
	}
	gx, gy := enc.Context().Grid(uint32(total))
	return enc.Dispatch(pipe, maskParams{
		Heads: uint32(l.Heads), Queries: uint32(l.Queries), Keys: uint32(l.Keys),
		Off: offs[0], RowStride: uint32(l.RowStride), HeadStride: uint32(l.HeadStride),
		QOffset: uint32(qOffset),
		Chunks:  uint32(chunks),
		NegInf:  float32(math.Inf(-1)),
	}, args, gx, gy, 1)
}
