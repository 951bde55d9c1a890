package ops

import (
	"fmt"

	"github.com/wgllm/wgllm/runtime/gpu"
	"github.com/wgllm/wgllm/wgsl"
)

type moeCombineKey struct{ Shared, Gated bool }

func (k moeCombineKey) String() string {
	s := "moe_combine"
	if k.Shared {
		s += "_shared"
	}
	if k.Gated {
		s += "_gated"
	}
	return s
}

type moeCombineParams struct {
	N, Cols, K                   uint32
	XOff, YOff, WOff, SOff, GOff uint32
}

// MoECombine adds a token's expert outputs, weighted, to the residual
// stream x [n, dim]: x[t] += Σ_j w[t, j]·y[t·K+j] (j = 0..K-1 in order, as
// llama.cpp sums them), for y [n·K, dim] the experts' outputs and w [n, K]
// their router weights (MoERoute). A shared expert's output sh [n, dim] is
// added to that sum when sh is not nil, scaled by sigmoid(gate[t]) when gate
// [n] is not nil (qwen2moe's ffn_gate_inp_shexp).
func MoECombine(enc *gpu.Encoder, x, y, w Tensor, sh, gate *Tensor) error {
	n, dim, err := rowsCols("MoECombine", x)
	if err != nil {
		return err
	}
	if w.Len()%max(n, 1) != 0 || w.Len() == 0 {
		return fmt.Errorf("ops.MoECombine: weights %s are not [%d, K]", w, n)
	}
	k := w.Len() / n
	switch {
	case x.DType != F32 || y.DType != F32 || w.DType != F32:
		return fmt.Errorf("ops.MoECombine: x %s, y %s and weights %s must be f32", x, y, w)
	case y.Len() != n*k*dim:
		return fmt.Errorf("ops.MoECombine: y %s must be [%d, %d]", y, n*k, dim)
	case sh == nil && gate != nil:
		return fmt.Errorf("ops.MoECombine: a shared-expert gate without a shared expert")
	case sh != nil && (sh.DType != F32 || sh.Len() != n*dim):
		return fmt.Errorf("ops.MoECombine: shared expert %s must be f32 [%d, %d]", sh, n, dim)
	case gate != nil && (gate.DType != F32 || gate.Len() != n):
		return fmt.Errorf("ops.MoECombine: shared-expert gate %s must be f32 [%d]", gate, n)
	}
	ts := []Tensor{x, y, w}
	if sh != nil {
		ts = append(ts, *sh)
		if gate != nil {
			ts = append(ts, *gate)
		}
	}
	for _, t := range ts[1:] {
		if t.Buf == x.Buf {
			return fmt.Errorf("ops.MoECombine: x %s must not share a buffer with its inputs", x)
		}
	}
	args, offs, err := binds("MoECombine", ts...)
	if err != nil {
		return err
	}
	key := moeCombineKey{Shared: sh != nil, Gated: gate != nil}
	ctx := enc.Context()
	pipe, err := ctx.Pipeline(key, func() (gpu.PipelineSpec, error) {
		src, err := wgsl.Render("moe_combine.wgsl", map[string]any{"Shared": key.Shared, "Gated": key.Gated})
		storage := []gpu.Access{gpu.ReadWrite}
		for range ts[1:] {
			storage = append(storage, gpu.ReadOnly)
		}
		return gpu.PipelineSpec{Source: src, Storage: storage}, err
	})
	if err != nil {
		return err
	}
	prm := moeCombineParams{N: uint32(n), Cols: uint32(dim), K: uint32(k), XOff: offs[0], YOff: offs[1], WOff: offs[2]}
	if sh != nil {
		prm.SOff = offs[3]
		if gate != nil {
			prm.GOff = offs[4]
		}
	}
	gx, gy := ctx.Grid(uint32(ceilDiv(n*dim, 256)))
	return enc.Dispatch(pipe, prm, args, gx, gy, 1)
}
