package ops

import (
	"fmt"

	"github.com/wgllm/wgllm/runtime/gpu"
	"github.com/wgllm/wgllm/wgsl"
)

// matMulKey specialises the prefill kernel: b's dtype and layout, the output
// tile per 256-thread workgroup (BM x BN, so BM/16 x BN/16 outputs a thread),
// the K slice staged in workgroup memory, and whether a and b take the
// 16-byte load paths (their contiguous dimension and offsets aligned).
type matMulKey struct {
	B          DType
	TransB     bool
	BM, BN, BK int
	VA, VB     bool
}

func (k matMulKey) String() string {
	layout := "kn"
	if k.TransB {
		layout = "nk"
	}
	load := func(name string, vec bool) string {
		if vec {
			return name + "vec4"
		}
		return name + "scalar"
	}
	return fmt.Sprintf("matmul_b%s_%s_%dx%dx%d_wg256_%s_%s", k.B, layout, k.BM, k.BN, k.BK,
		load("a", k.VA), load("b", k.VB))
}

type matMulParams struct {
	M, N, K, Acc   uint32
	AOff, ARS, ABS uint32
	BOff, BRS, BBS uint32
	DOff, DRS, DBS uint32
}

const matMulBK = 16

// matMulTile picks the output tile: 128x128 (8x8 outputs a thread, twice the
// arithmetic per byte staged) once the problem has enough such tiles to fill
// a large GPU (H100: 132 SMs), else 64x64 for more workgroups. The choice
// never changes results: every output is the same fma chain over k.
func matMulTile(batch, m, n int) (bm, bn int) {
	if ceilDiv(m, 128)*ceilDiv(n, 128)*batch >= 120 {
		return 128, 128
	}
	return 64, 64
}

// MatMul: dst[b, m, n] = sum_k a[b, m, k] * B[b, k, n] where B = b^T when transB (b is [batch?, N, K],
// the GGUF weight layout, so transB=true is the prefill projection x·Wᵀ) and b is [batch?, K, N]
// otherwise. a and dst f32 ([batch?, M, K] / [batch?, M, N]); b f32 or f16; a 2-D b is broadcast
// over a's batch. Tiled through workgroup memory with register tiling.
//
// Operands larger than one storage binding are split (rows of a and dst;
// rows of b: N ranges when transB, K ranges otherwise, the later K ranges
// continuing each output's sum from dst) into several dispatches that give
// the same bits as one; a single row over the limit is an error wrapping
// gpu.ErrBindingTooLarge.
func MatMul(enc *gpu.Encoder, dst, a, b Tensor, transB bool) error {
	shapes := func() string {
		layout := "[K, N]"
		if transB {
			layout = "[N, K]"
		}
		return fmt.Sprintf("a %s, b %s (%s), dst %s", a, b, layout, dst)
	}
	ra, rb := len(a.Shape), len(b.Shape)
	if ra < 2 || ra > 3 || rb < 2 || rb > 3 || len(dst.Shape) != ra {
		return fmt.Errorf("ops.MatMul: want a [batch?, M, K], b [batch?, ...], dst [batch?, M, N]; got %s", shapes())
	}
	batch := 1
	if ra == 3 {
		batch = a.Shape[0]
	}
	m, k := a.Shape[ra-2], a.Shape[ra-1]
	n, kb := b.Shape[rb-1], b.Shape[rb-2]
	if transB {
		n, kb = b.Shape[rb-2], b.Shape[rb-1]
	}
	bBatched := rb == 3
	switch {
	case kb != k:
		return fmt.Errorf("ops.MatMul: K differs: %s", shapes())
	case bBatched && (ra != 3 || b.Shape[0] != batch):
		return fmt.Errorf("ops.MatMul: batch of b does not match a: %s", shapes())
	case dst.Shape[ra-2] != m || dst.Shape[ra-1] != n || (ra == 3 && dst.Shape[0] != batch):
		return fmt.Errorf("ops.MatMul: dst shape is not [batch?, M, N]: %s", shapes())
	case a.DType != F32 || dst.DType != F32:
		return fmt.Errorf("ops.MatMul: a and dst must be f32: %s", shapes())
	case b.DType != F32 && b.DType != F16:
		return fmt.Errorf("ops.MatMul: b must be f32 or f16: %s", shapes())
	}

	bm, bn := matMulTile(batch, m, n)
	mm := matMulPlan{enc: enc, transB: transB, bDType: b.DType, bm: bm, bn: bn, shapes: shapes}
	ctx := enc.Context()
	maxDim := int(ctx.MaxWorkgroupsPerDim())
	bStride := 0
	if bBatched {
		bStride = n * k
	}
	if batch <= maxDim && ceilDiv(m, bm) <= maxDim && ceilDiv(n, bn) <= maxDim &&
		matFits(ctx, a) && matFits(ctx, b) && matFits(ctx, dst) {
		return mm.dispatch(matMulCall{
			a: a, b: b, d: dst, m: m, n: n, k: k, z: batch,
			aBS: m * k, bBS: bStride, dBS: m * n,
		})
	}
	// Too big for one dispatch: one batch at a time, each split to fit.
	for z := 0; z < batch; z++ {
		bz := b.View(0, b.Shape[rb-2], b.Shape[rb-1])
		if bBatched {
			bz = b.View(z*n*k, b.Shape[rb-2], b.Shape[rb-1])
		}
		if err := mm.split(a.View(z*m*k, m, k), bz, dst.View(z*m*n, m, n), m, n, k); err != nil {
			return err
		}
	}
	return nil
}

type matMulPlan struct {
	enc    *gpu.Encoder
	transB bool
	bDType DType
	bm, bn int
	shapes func() string
}

// matMulCall is one dispatch: the views to bind (whole rows of a, b and d);
// column offsets inside those rows (a K range of a, an N range of b [K, N]
// and of d); the sizes of this piece; z batches with the given strides; and
// whether to continue the sums already in d (later K ranges).
type matMulCall struct {
	a, b, d          Tensor
	aCol, bCol, dCol int
	m, n, k, z       int
	aBS, bBS, dBS    int
	acc              bool
}

// split runs one batch's product ([m, k] x b -> [m, n]) in pieces whose
// operands each fit one binding.
func (mm matMulPlan) split(a, b, d Tensor, m, n, k int) error {
	ctx := mm.enc.Context()
	maxDim := int(ctx.MaxWorkgroupsPerDim())
	es := mm.bDType.Size()
	mRowsA, err := matRowsPerBinding(ctx, a, uint64(4*k), m)
	if err != nil {
		return fmt.Errorf("ops.MatMul: a: %s: %w", mm.shapes(), err)
	}
	mRowsD, err := matRowsPerBinding(ctx, d, uint64(4*n), m)
	if err != nil {
		return fmt.Errorf("ops.MatMul: dst: %s: %w", mm.shapes(), err)
	}
	mRows := matChunk(min(mRowsA, mRowsD, maxDim*mm.bm), m)
	nRows, kRows := n, k
	if mm.transB {
		nRows, err = matRowsPerBinding(ctx, b, uint64(es*k), n)
	} else {
		kRows, err = matRowsPerBinding(ctx, b, uint64(es*n), k)
	}
	if err != nil {
		return fmt.Errorf("ops.MatMul: b: %s: %w", mm.shapes(), err)
	}
	nRows = matChunk(min(nRows, maxDim*mm.bn), n)
	kRows = matChunk(kRows, k)
	for m0 := 0; m0 < m; m0 += mRows {
		mc := min(mRows, m-m0)
		av, dv := a.View(m0*k, mc, k), d.View(m0*n, mc, n)
		for n0 := 0; n0 < n; n0 += nRows {
			nc := min(nRows, n-n0)
			for k0 := 0; k0 < k; k0 += kRows {
				kc := min(kRows, k-k0)
				bv, bCol := b, 0
				if mm.transB {
					bv = b.View(n0*k, nc, k)
				} else {
					bv, bCol = b.View(k0*n, kc, n), n0
				}
				err := mm.dispatch(matMulCall{
					a: av, b: bv, d: dv, aCol: k0, bCol: bCol, dCol: n0,
					m: mc, n: nc, k: kc, z: 1, acc: k0 > 0,
				})
				if err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// matChunk rounds a chunk of rows down to a multiple of 16 (keeping later
// chunks' offsets 16-byte aligned) unless it covers everything.
func matChunk(rows, total int) int {
	if rows >= total {
		return total
	}
	if rows >= 16 {
		return rows / 16 * 16
	}
	return rows
}

func (mm matMulPlan) dispatch(c matMulCall) error {
	ctx := mm.enc.Context()
	args, offs, err := binds("MatMul", c.a, c.b, c.d)
	if err != nil {
		return err
	}
	// Row strides: a and d rows are whole rows of the original tensors.
	aRS, dRS := c.a.Shape[len(c.a.Shape)-1], c.d.Shape[len(c.d.Shape)-1]
	bRS := c.b.Shape[len(c.b.Shape)-1]
	aOff, bOff, dOff := int(offs[0])+c.aCol, int(offs[1])+c.bCol, int(offs[2])+c.dCol
	vb := 4
	if mm.bDType == F16 {
		vb = 8
	}
	key := matMulKey{
		B: mm.bDType, TransB: mm.transB, BM: mm.bm, BN: mm.bn, BK: matMulBK,
		VA: aRS%4 == 0 && aOff%4 == 0 && c.aBS%4 == 0,
		VB: bRS%vb == 0 && bOff%vb == 0 && c.bBS%vb == 0,
	}
	pipe, err := ctx.Pipeline(key, func() (gpu.PipelineSpec, error) {
		src, err := wgsl.Render("matmul.wgsl", matMulTemplate(key))
		return gpu.PipelineSpec{Source: src, Storage: []gpu.Access{gpu.ReadOnly, gpu.ReadOnly, gpu.ReadWrite}}, err
	})
	if err != nil {
		return err
	}
	acc := uint32(0)
	if c.acc {
		acc = 1
	}
	err = mm.enc.Dispatch(pipe, matMulParams{
		M: uint32(c.m), N: uint32(c.n), K: uint32(c.k), Acc: acc,
		AOff: uint32(aOff), ARS: uint32(aRS), ABS: uint32(c.aBS),
		BOff: uint32(bOff), BRS: uint32(bRS), BBS: uint32(c.bBS),
		DOff: uint32(dOff), DRS: uint32(dRS), DBS: uint32(c.dBS),
	}, args, uint32(ceilDiv(c.m, key.BM)), uint32(ceilDiv(c.n, key.BN)), uint32(c.z))
	if err != nil {
		return fmt.Errorf("ops.MatMul: %s: %w", mm.shapes(), err)
	}
	return nil
}

// matMulRow is output row R of a thread: component I (named C) of its V-th
// vec4 of a.
type matMulRow struct {
	R, V, I int
	C       string
}

// matMulComp is vec4 component J, named C, for unrolled shader code.
type matMulComp struct {
	J int
	C string
}

func matMulTemplate(k matMulKey) map[string]any {
	const wg = 256
	eb := 4
	bslot := "vec4<f32>"
	if k.B == F16 {
		eb, bslot = 8, "mat2x4<f32>"
	}
	nsb := k.BN * k.BK / eb
	// Elements of a b load slot, for unrolled code: v[c][i] of a mat2x4 or v[j] of a vec4.
	type slotElem struct {
		J     int
		Index string
	}
	elems := make([]slotElem, eb)
	for j := range elems {
		elems[j] = slotElem{J: j, Index: fmt.Sprintf("[%d]", j)}
		if eb == 8 {
			elems[j].Index = fmt.Sprintf("[%d][%d]", j/4, j%4)
		}
	}
	rows := make([]matMulRow, k.BM/16)
	for r := range rows {
		rows[r] = matMulRow{R: r, V: r / 4, I: r % 4, C: "xyzw"[r%4 : r%4+1]}
	}
	return map[string]any{
		"B": k.B.String(), "TransB": k.TransB, "VA": k.VA, "VB": k.VB,
		"BM": k.BM, "BN": k.BN, "BK": k.BK, "TM": k.BM / 16, "TN": k.BN / 16,
		"EB": eb, "NSB": nsb, "BSlot": bslot, "BSlotElems": elems,
		"AsSize": k.BK * k.BM / 4, "BsSize": k.BK * k.BN / 4,
		"SA": matSeq(k.BM * k.BK / 4 / wg), "SB": matSeq(ceilDiv(nsb, wg)),
		"AV": matSeq(k.BM / 64), "BV": matSeq(k.BN / 64), "Rows": rows,
		"Comps": []matMulComp{{0, "x"}, {1, "y"}, {2, "z"}, {3, "w"}},
	}
}

// matFits reports whether the view can be bound as one storage binding.
func matFits(ctx *gpu.Context, t Tensor) bool {
	if t.Bytes() > ctx.MaxBinding() {
		return false
	}
	_, _, _, err := t.Buf.Window(uint64(t.Off*t.DType.Size()), t.Bytes())
	return err == nil
}
