package ops

import (
	"fmt"

	"github.com/wgllm/wgllm/runtime/gpu"
	"github.com/wgllm/wgllm/wgsl"
)

// matVecKey specialises the decode kernel: the weight dtype, how many rows of
// x one dispatch carries (one accumulator each per weight row), the weight
// rows per workgroup, the workgroup size, and whether the 16-byte load path
// applies (K and the offsets aligned).
type matVecKey struct {
	W   DType
	M   int
	R   int
	WG  int
	Vec bool
	SG  bool // first-level sum by subgroupAdd (gpu.Features.Subgroups)
	fusion
}

func (k matVecKey) String() string {
	load := "scalar"
	if k.Vec {
		load = "vec4"
	}
	sg := ""
	if k.SG {
		sg = "_sg"
	}
	return fmt.Sprintf("matvec_w%s_m%d_r%d_wg%d_%s%s%s", k.W, k.M, k.R, k.WG, load, sg, k.fusion)
}

type matVecParams struct {
	N, K, Chunks  uint32
	XOff, XStride uint32
	WOff          uint32
	DOff, DStride uint32
	fusionParams
}

// matVecNoSubgroups forces the workgroup-memory reduction where the device
// has subgroups (tests compare both; see SetMatVecSubgroups).
var matVecNoSubgroups bool

const (
	// matVecMaxM is the most rows of x one dispatch carries; more rows are
	// done in groups of this many.
	matVecMaxM = 8
	matVecWG   = 128
)

// matVecChunk is the elements one thread reads from a weight row at a time:
// 16 bytes of weight.
func matVecChunk(w DType) int {
	if w == F16 {
		return 8
	}
	return 4
}

// MatVec is the decode path: dst[m, n] = sum_k w[n, k] * x[m, k].
// w: [N, K] weights in GGUF layout (row n = output n), f32 or f16. x: [M, K] f32 with small M
// (1..8: a few sequences decoding together; each weight row is read once for all M rows).
// dst: [M, N] f32.
//
// A weight larger than one storage binding is split into row ranges, one
// dispatch each; x and dst must each fit one binding (else the error wraps
// gpu.ErrBindingTooLarge). Rows of x beyond 8 go in further dispatches of
// up to 8. A row's result does not depend on M (fixed reduction order).
func MatVec(enc *gpu.Encoder, dst, w, x Tensor) error {
	if len(w.Shape) != 2 || len(x.Shape) != 2 || len(dst.Shape) != 2 {
		return fmt.Errorf("ops.MatVec: want w [N, K], x [M, K], dst [M, N]; got w %s, x %s, dst %s", w, x, dst)
	}
	if n, k, m := w.Shape[0], w.Shape[1], x.Shape[0]; x.Shape[1] != k || dst.Shape[0] != m || dst.Shape[1] != n {
		return fmt.Errorf("ops.MatVec: shapes disagree: w %s [N, K], x %s [M, K], dst %s [M, N]", w, x, dst)
	}
	return matVec(enc, w, x, MatVecOpts{}, []Tensor{dst})
}

func matVec(enc *gpu.Encoder, w, x Tensor, o MatVecOpts, dsts []Tensor) error {
	if len(w.Shape) != 2 || len(x.Shape) != 2 {
		return fmt.Errorf("ops.MatVec: want w [N, K], x [M, K]; got w %s, x %s", w, x)
	}
	if w.DType != F32 && w.DType != F16 {
		return fmt.Errorf("ops.MatVec: weight %s must be f32 or f16", w)
	}
	k, m := w.Shape[1], x.Shape[0]
	if x.Shape[1] != k || x.DType != F32 {
		return fmt.Errorf("ops.MatVec: x %s must be f32 [M, %d] for w %s", x, k, w)
	}
	fu, err := o.plan("MatVec", w, m, dsts)
	if err != nil {
		return err
	}
	n := fu.rows // output rows (gate rows for Pair)
	ctx := enc.Context()
	// x and dst cannot be split: check them before recording anything.
	xArgs, xOffs, err := binds("MatVec", x)
	if err != nil {
		return fmt.Errorf("%w (x must fit one binding; only w is split)", err)
	}
	rowBytes := uint64(k * w.DType.Size())
	rowsPer, err := matRowsPerBinding(ctx, w, rowBytes, w.Shape[0])
	if err != nil {
		return fmt.Errorf("ops.MatVec: weight %s: %w", w, err)
	}
	if rowsPer < w.Shape[0] && fu.fusion != (fusion{}) {
		return fmt.Errorf("ops.MatVec: weight %s: a fused matvec needs the weight in one binding: %w", w, gpu.ErrBindingTooLarge)
	}
	v := matVecChunk(w.DType)
	for n0 := 0; n0 < n; n0 += rowsPer {
		nc := min(rowsPer, n-n0)
		wv := w.View(n0*k, nc, k)
		if fu.Pair {
			wv = w // one binding holds both halves
		}
		wArgs, wOffs, err := binds("MatVec", wv)
		if err != nil {
			return err
		}
		vec := k%v == 0 && int(wOffs[0])%v == 0 && xOffs[0]%4 == 0 && fu.normOff%4 == 0
		for m0 := 0; m0 < m; m0 += matVecMaxM {
			mc := min(matVecMaxM, m-m0)
			key := matVecKey{W: w.DType, M: mc, R: matVecRows(mc), WG: matVecWG, Vec: vec, SG: ctx.Features.Subgroups && !matVecNoSubgroups, fusion: fu.fusion}
			pipe, err := ctx.Pipeline(key, func() (gpu.PipelineSpec, error) {
				fan := 16
				if key.SG {
					fan = 32
				}
				src, err := wgsl.Render("matvec.wgsl", map[string]any{
					"W": key.W.String(), "M": key.M, "R": key.R, "WG": key.WG, "V": v, "Vec": key.Vec, "SG": key.SG,
					"Ms": matSeq(key.M), "Rs": matSeq(key.R),
					"RedSize": key.R * key.M * key.WG, "Red2Size": key.R * key.M * fan,
					"Acc": key.Acc, "Pair": key.Pair, "Act": key.Act.String(), "Segs": key.Segs, "Norm": key.Norm, "Bias": key.Bias,
				})
				if key.SG {
					src = "enable subgroups;\n" + src
				}
				return gpu.PipelineSpec{Source: src, Storage: fu.storage()}, err
			})
			if err != nil {
				return err
			}
			perWG := key.R
			if key.Pair {
				perWG /= 2
			}
			gx, gy := ctx.Grid(uint32(ceilDiv(nc, perWG)))
			fp := fu.params(m0)
			fp.FBOff += uint32(n0) // this dispatch's first row
			err = enc.Dispatch(pipe, matVecParams{
				N: uint32(nc), K: uint32(k), Chunks: uint32(ceilDiv(k, v)),
				XOff: xOffs[0] + uint32(m0*k), XStride: uint32(k),
				WOff: wOffs[0],
				DOff: fp.DOff + uint32(n0), DStride: fp.DStride,
				fusionParams: fp.fusionParams,
			}, fu.args(wArgs[0], xArgs[0]), gx, gy, 1)
			if err != nil {
				return fmt.Errorf("ops.MatVec: w %s, x %s: %w", w, x, err)
			}
		}
	}
	return nil
}

// matVecRows is the weight rows per workgroup: four rows share each load of
// x; with many rows of x, two keep the accumulators in registers.
func matVecRows(m int) int {
	if m <= 4 {
		return 4
	}
	return 2
}

// matRowsPerBinding is how many rows of t (rowBytes each, of total rows) one
// storage binding can always hold, wherever the range starts: all of them
// when the view fits, else what fits beside the binding's offset alignment.
func matRowsPerBinding(ctx *gpu.Context, t Tensor, rowBytes uint64, total int) (int, error) {
	limit := ctx.MaxBinding()
	if t.Bytes() <= limit {
		if _, _, _, err := t.Buf.Window(uint64(t.Off*t.DType.Size()), t.Bytes()); err == nil {
			return total, nil
		}
	}
	align := uint64(ctx.Limits.MinStorageBufferOffsetAlignment)
	if align == 0 {
		align = 256
	}
	if limit <= align || rowBytes > limit-align {
		return 0, fmt.Errorf("one row of %d bytes: %w (%d bytes)", rowBytes, gpu.ErrBindingTooLarge, limit)
	}
	return int((limit - align) / rowBytes), nil
}

// matSeq is 0..n-1, for unrolling loops in shader templates.
func matSeq(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}
