package ops

import (
	"fmt"
	"maps"

	"github.com/wgllm/wgllm/runtime/gpu"
	"github.com/wgllm/wgllm/wgsl"
)

// quantKey specialises wgsl/dequant.wgsl: the kernel (matvec, experts,
// dequant, embed), the weight type, f16 output (dequant, embed) and for the
// matvecs the x rows M (experts: slots per tile), whether x can be read as
// vec4, the workgroup shape (lanes per row TPR, rows per lane RPT) and
// whether the groups are unrolled (GPUs).
type quantKey struct {
	Kernel  string
	T       DType
	M       int
	XVec    bool
	DstF16  bool
	WG      int
	TPR     int
	RPT     int
	UnrollJ bool
	StageX  bool
	U       int  // StageX: pieces per lane per pass
	Ahead   bool // not staged: two pieces per row in flight
	Bias    bool // experts: a bias per expert row
	SG      bool // the lanes of a row meet by subgroupShuffleXor (same bits)
	Q8      bool // matvec: x quantised by QuantizeQ8, weights summed by dot4I8Packed
	fusion
}

func (k quantKey) String() string {
	s := fmt.Sprintf("%s_%s", k.Kernel, k.T)
	if k.Kernel == "matvec" || k.Kernel == "experts" {
		s += fmt.Sprintf("_m%d", k.M)
		if k.XVec {
			s += "_xv4"
		}
		s += fmt.Sprintf("_wg%d_t%d_r%d", k.WG, k.TPR, k.RPT)
		if k.UnrollJ {
			s += "_uj"
		}
		if k.StageX {
			s += fmt.Sprintf("_sx%d", k.U)
		}
		if k.Ahead {
			s += "_ahead"
		}
		if k.Bias {
			s += "_bias"
		}
		if k.SG {
			s += "_sg"
		}
		if k.Q8 {
			s += "_q8"
		}
		return s + k.fusion.String()
	}
	if k.DstF16 {
		return s + "_df16"
	}
	return s + "_df32"
}

// quantParams mirrors Params in wgsl/dequant.wgsl.
type quantParams struct {
	Rows, K, NP    uint32
	WOff, WRow     uint32
	XOff, XStride  uint32
	DOff, DStride  uint32
	IDLo, IDHi     uint32
	Vocab, ZeroOOB uint32
	fusionParams
	expertParams
}

// quantLayout is how the shader walks a weight type: elements and bytes per
// block (for bf16 a pseudo-block of 8 values, counted in halves) and pieces
// per block (lanes sharing one block; each piece is 32 or 64 elements).
func quantLayout(dt DType) (bs, bb, ppb int, ok bool) {
	switch dt {
	case Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL, MXFP4:
		return 32, dt.BlockBytes(), 1, true
	case Q2_K, Q3_K, Q6_K:
		return 256, dt.BlockBytes(), 4, true
	case Q4_K, Q5_K, IQ4_XS:
		return 256, dt.BlockBytes(), 8, true
	case BF16:
		return 8, 8, 1, true
	}
	return 0, 0, 0, false
}

// pieceLayout is quantLayout extended with the plain float types the
// experts kernel also reads: f32 in pieces of 4 values (W units are words),
// f16 of 8 (halves).
func pieceLayout(dt DType) (bs, bb, ppb int, ok bool) {
	switch dt {
	case F32:
		return 4, 4, 1, true
	case F16:
		return 8, 8, 1, true
	}
	return quantLayout(dt)
}

// rowLayout is how the matvec kernels walk a row of k elements of dt: its
// W units (bytes for block types, halves for f16/bf16, words for f32) and
// pieces. Block types need whole blocks; float rows take any length.
func rowLayout(dt DType, k int) (rowUnits, np int, ok bool) {
	bs, bb, ppb, ok := pieceLayout(dt)
	switch {
	case !ok:
		return 0, 0, false
	case dt.Quantized():
		if k%bs != 0 {
			return 0, 0, false
		}
		return k / bs * bb, k / bs * ppb, true
	}
	return k, ceilDiv(k, bs), true
}

// stageVec4 is how many vec4 of one x row a pass of the quantised matvec's
// piece loop reads (TPR pieces), which StageX copies to workgroup memory.
func stageVec4(dt DType, tpr int) int {
	bs, _, ppb, _ := pieceLayout(dt)
	return tpr * bs / ppb / 4
}

// stageBytes is the workgroup memory of a matvec kernel: the staged x of m
// rows (U pieces per lane) and the tree of m·rpt accumulators per lane.
func stageBytes(dt DType, tpr, u, m, rpt, wg int) uint64 {
	cv := stageVec4(dt, tpr) * u
	return uint64(16*m*(cv+cv/8) + 4*m*rpt*wg)
}

// groupsPerPiece is G in the shader: runs of four elements per piece.
func groupsPerPiece(dt DType) int {
	bs, _, ppb, _ := pieceLayout(dt)
	return bs / ppb / 4
}

type accSlot struct{ M, I int }

// pairSlot is output m of a gate/up row pair: accumulators G and U.
type pairSlot struct{ M, G, U int }

func quantPipeline(ctx *gpu.Context, key quantKey) (*gpu.Pipeline, error) {
	return ctx.Pipeline(key, func() (gpu.PipelineSpec, error) {
		src, err := renderQuant(key, ctx.Features)
		if key.SG {
			src = "enable subgroups;\n" + src
		}
		storage := []gpu.Access{gpu.ReadOnly, gpu.ReadWrite}
		if key.Kernel != "dequant" {
			storage = []gpu.Access{gpu.ReadOnly, gpu.ReadOnly, gpu.ReadWrite}
		}
		// g (the int8 matvec's x carries the norm), or the experts' routes.
		if (key.Norm && !key.Q8) || key.Kernel == "experts" {
			storage = append(storage, gpu.ReadOnly)
		}
		if key.Bias || key.fusion.Bias { // the experts' bias, or the dense matvec's
			storage = append(storage, gpu.ReadOnly)
		}
		return gpu.PipelineSpec{Source: src, Storage: storage}, err
	})
}

func seq(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

// renderQuant fills dequant.wgsl for key. The matvec kernels' products,
// tree and stores are a "body" per count of x rows (slots): the matvec has
// one of M rows; the experts kernel one of M slots and, for M > 1, one of a
// single slot (decode's one token per expert). f decides whether a
// subgroup reduction (SG) needs workgroup memory for its upper levels.
func renderQuant(key quantKey, f gpu.Features) (string, error) {
	bs, bb, ppb, _ := pieceLayout(key.T)
	rpt := max(key.RPT, 1)
	jexprs := []string{"j"}
	if key.UnrollJ {
		jexprs = jexprs[:0]
		for j := 0; j < groupsPerPiece(key.T); j++ {
			jexprs = append(jexprs, fmt.Sprintf("%du", j))
		}
	}
	cv := stageVec4(key.T, key.TPR) * max(key.U, 1)
	experts := key.Kernel == "experts"
	// Workgroup memory for the row sums: without subgroups, where a
	// subgroup may be narrower than a row (TPR lanes), and for the norm's sum.
	wgRed := !key.SG || f.SubgroupMinSize < uint32(key.TPR) || (key.Norm && !key.Q8)
	data := map[string]any{
		"SG": key.SG, "Q8": key.Q8, "WGRed": wgRed, "TGroups": q8ScaleGroupExprs(key.T, key.UnrollJ),
		"StageX": key.StageX, "Ahead": key.Ahead, "CV": cv, "XSLen": key.M * (cv + cv/8), "Us": seq(max(key.U, 1)),
		"Acc": key.Acc, "Pair": key.Pair, "Act": key.Act.String(), "Segs": key.Segs, "Norm": key.Norm,
		"Kernel": key.Kernel, "T": key.T.String(), "XVec": key.XVec, "DstF16": key.DstF16,
		"Rowwise": key.Kernel == "matvec" || experts, "Experts": experts, "Bias": key.Bias, "DBias": key.fusion.Bias,
		"WG": key.WG, "TPR": key.TPR, "RPT": rpt, "Rs": seq(rpt), "UnrollJ": key.UnrollJ, "JExprs": jexprs,
		"Tail": !key.T.Quantized(), "BS": bs, "BB": bb, "PPB": ppb,
	}
	ms := []int{key.M}
	if experts && key.M > 1 {
		ms = append(ms, 1)
	}
	var bodies []map[string]any
	for _, m := range ms {
		b := maps.Clone(data)
		maps.Copy(b, bodyData(m, rpt, key.Pair))
		bodies = append(bodies, b)
	}
	maps.Copy(data, bodies[0]) // the widest body sizes the declarations
	data["Bodies"] = bodies
	return wgsl.Render("dequant.wgsl", data)
}

// bodyData are the template names of a body of m x rows: accumulator
// acc<r·m + i> holds row r times x row i.
func bodyData(m, rpt int, pair bool) map[string]any {
	rms := make([][]accSlot, rpt)
	for r := range rms {
		for i := 0; i < m; i++ {
			rms[r] = append(rms[r], accSlot{M: i, I: r*m + i})
		}
	}
	var pairs [][]pairSlot
	if pair {
		for r := 0; r < rpt/2; r++ {
			var ps []pairSlot
			for i := 0; i < m; i++ {
				ps = append(ps, pairSlot{M: i, G: r*m + i, U: (r+rpt/2)*m + i})
			}
			pairs = append(pairs, ps)
		}
	}
	return map[string]any{"M": m, "Ms": seq(m), "NAcc": m * rpt, "Accs": seq(m * rpt), "RMs": rms, "Pairs": pairs}
}

// matVecQuantUnroll unrolls the quantised matvec's groups on software
// adapters too, so tests there cover the GPUs' code (SetMatVecQuantUnroll).
var matVecQuantUnroll bool

// MaxMatVecRows is the most x rows MatVecQuant takes in one call.
const MaxMatVecRows = 8

// Lanes per weight row of the quantised matvec: they fix each output's
// reduction order, so they never depend on M or N. The workgroup size and
// the rows per lane (RPT) only decide which rows run together.
const (
	// matVecQuantU is the pieces per lane per pass of the staged kernel.
	// More keep more weight loads in flight across each pass's barriers,
	// but on the H100 U = 2, 4, 8 decoded 9%, 23% and 44% slower than 1
	// (Llama-2-7B Q4_0), so the template's U loop stays at one.
	matVecQuantU   = 1
	matVecQuantTPR = 32
	matVecQuantWG  = 256
)

// matVecQuantShapeOverride is a workgroup shape for the tuning benchmark:
// U pieces a pass of staged x (0: x not staged), Ahead two pieces in flight.
type matVecQuantShapeOverride struct {
	TPR, RPT, WG, U int
	Ahead           bool
}

// matVecQuantTuning overrides the workgroup shape for the tuning benchmark
// (a different TPR changes the reduction order, so never in use).
var matVecQuantTuning *matVecQuantShapeOverride

// matVecQuantRPT is how many weight rows one lane computes: more rows share
// each x read, fewer give small N enough workgroups; at most 8 accumulators
// per lane. With x staged in workgroup memory the H100 decoded fastest with
// one row per lane below 8192 rows and two above (TinyLlama Q4_0 551 tok/s
// against 527 with 2 and 4; Llama-2-7B Q4_0 211 against 207).
func matVecQuantRPT(n, m int) int {
	rpt := 1
	if n >= 8192 {
		rpt = 2
	}
	return max(1, min(rpt, MaxMatVecRows/m))
}

// matVecQuantWide is the shape for one x row over many weight rows on a
// GPU: four rows per lane, 128-lane workgroups, x read straight from
// global memory (each lane's x stays in L1 across its four rows). On the
// H200 (wgpu-native, Llama-3-8B gate/up 14336x4096, 2026-12-04) it read
// Q4_K at 976 GB/s against 906 for the staged two-row shape, Q6_K 1,367
// against 1,247, Q4_0 1,098 against ~1,050, Q8_0 1,809 against 1,797
// (ops BenchmarkMatVecQuantTuning). Bit for bit the same results: only TPR
// fixes the order.
func matVecQuantWide(n, m int, software bool) bool {
	return !software && m == 1 && n >= 8192
}

// matVecQuantShape is the quantised matvecs' workgroup for m x rows over n
// weight rows (gate rows with Pair, before its pairing): rows per lane,
// lanes, and whether x may be staged in workgroup memory.
func matVecQuantShape(n, m int, software bool) (rpt, wg int, staged bool) {
	if matVecQuantWide(n, m, software) {
		return 4, 128, false
	}
	return matVecQuantRPT(n, m), matVecQuantWG, true
}

// MatVecQuant computes dst[m, n] = sum_k w[n, k] x[m, k] for a weight w
// [N, K] stored block-quantised (any of Q4_0 ... Q6_K, IQ4_NL, IQ4_XS, MXFP4,
// as in GGUF) or bf16, x [M, K] f32 with 1 <= M <= 8 and dst [M, N] f32. Each
// weight block is read once for all M rows, and row n's result is
// bit-identical whatever M is.
// Weights larger than one storage binding are split over several dispatches
// by rows.
func MatVecQuant(enc *gpu.Encoder, dst, w, x Tensor) error {
	if len(x.Shape) >= 1 && len(w.Shape) == 2 && x.Shape[len(x.Shape)-1] == w.Shape[1] && x.Len()%w.Shape[1] == 0 {
		m := x.Len() / w.Shape[1]
		if dst.Len() == m*w.Shape[0] && dst.DType == F32 { // any shape of the right size, as before
			dst = dst.View(0, m, w.Shape[0])
		}
		x = x.View(0, m, w.Shape[1])
	}
	return matVecQuant(enc, w, x, MatVecOpts{}, []Tensor{dst})
}

func matVecQuant(enc *gpu.Encoder, w, x Tensor, o MatVecOpts, dsts []Tensor) error {
	if _, _, _, ok := quantLayout(w.DType); !ok {
		return fmt.Errorf("ops.MatVecQuant: weight %s is not block-quantised or bf16", w)
	}
	if len(w.Shape) != 2 {
		return fmt.Errorf("ops.MatVecQuant: weight %s must be [N, K]", w)
	}
	n, k := w.Shape[0], w.Shape[1]
	if n <= 0 || k <= 0 || k%w.DType.BlockSize() != 0 {
		return fmt.Errorf("ops.MatVecQuant: weight %s: rows must be whole %s blocks", w, w.DType)
	}
	if x.DType != F32 || len(x.Shape) != 2 || x.Shape[1] != k {
		return fmt.Errorf("ops.MatVecQuant: x %s must be f32 rows of K=%d (weight %s)", x, k, w)
	}
	m := x.Shape[0]
	if m < 1 || m > MaxMatVecRows {
		return fmt.Errorf("ops.MatVecQuant: x %s has %d rows; 1 to %d are supported", x, m, MaxMatVecRows)
	}
	for _, d := range dsts {
		if d.DType != F32 {
			return fmt.Errorf("ops.MatVecQuant: x %s and dst %s must be f32", x, d)
		}
	}
	fu, err := o.plan("MatVecQuant", w, m, dsts)
	if err != nil {
		return fmt.Errorf("%w (x %s)", err, x)
	}
	args, offs, err := binds("MatVecQuant", x)
	if err != nil {
		return err
	}
	ctx := enc.Context()
	rowUnits, np, _ := rowLayout(w.DType, k) // bytes per row, or halves for bf16
	rowBytes := uint64(rowUnits)
	if w.DType == BF16 {
		rowBytes = uint64(2 * k)
	}
	chunk, err := rowsPerBinding(ctx, w, rowBytes, n)
	if err != nil {
		return fmt.Errorf("ops.MatVecQuant: weight %s: %w", w, err)
	}
	if chunk < n && fu.fusion != (fusion{}) {
		return fmt.Errorf("ops.MatVecQuant: weight %s: a fused matvec needs the weight in one binding: %w", w, gpu.ErrBindingTooLarge)
	}
	rpt, wg, staged := matVecQuantShape(fu.rows, m, ctx.Software())
	tpr, u0 := matVecQuantTPR, 0 // u0 0: not staged
	if staged {
		u0 = matVecQuantU
	}
	ahead := false
	if t := matVecQuantTuning; t != nil { // benchmarks only
		tpr, wg, u0, ahead = t.TPR, t.WG, t.U, t.Ahead
		rpt = max(1, min(t.RPT, MaxMatVecRows/m))
	}
	if fu.Pair {
		rpt = 2 * max(1, rpt/2) // a gate row and its up row per output
	}
	key := quantKey{Kernel: "matvec", T: w.DType, M: m, XVec: offs[0]%4 == 0 && k%4 == 0 && fu.normOff%4 == 0,
		WG: wg, TPR: tpr, RPT: rpt, UnrollJ: !ctx.Software() || matVecQuantUnroll, fusion: fu.fusion,
		SG: ctx.Features.Subgroups && !matVecNoSubgroups, Q8: useInt8Dot(ctx, w.DType)}
	if ahead {
		key.Ahead, u0 = true, 0 // not staged
	}
	xArg, xOff, xStride := args[0], offs[0], uint32(k)
	if key.Q8 {
		// x (normed by g, without its 1 / rms) becomes int8 blocks first.
		key.XVec = false
		xq, err := quantizeForMatVec(enc, x, o)
		if err != nil {
			return err
		}
		xa, xo, err := binds("MatVecQuant", xq)
		if err != nil {
			return err
		}
		if xo[0]%4 != 0 {
			return fmt.Errorf("ops.MatVecQuant: int8 x scratch at word %d: not vec4-aligned", xo[0])
		}
		xArg, xOff, xStride = xa[0], xo[0], uint32(Q8RowWords(k))
	} else {
		for u := u0; u >= 1; u /= 2 {
			if stageBytes(w.DType, tpr, u, m, rpt, key.WG) <= uint64(ctx.Limits.MaxComputeWorkgroupStorageSize) {
				key.StageX, key.U = true, u
				break
			}
		}
	}
	pipe, err := quantPipeline(ctx, key)
	if err != nil {
		return err
	}
	bindArgs := func(w gpu.Arg) []gpu.Arg {
		if key.Q8 {
			if key.fusion.Bias {
				return []gpu.Arg{w, xArg, fu.d, fu.b}
			}
			return []gpu.Arg{w, xArg, fu.d}
		}
		return fu.args(w, xArg)
	}
	outPerWG := key.WG / key.TPR * key.RPT
	if key.Pair {
		outPerWG /= 2
	}
	rows := fu.rows
	for n0 := 0; n0 < rows; n0 += chunk {
		nc := min(chunk, rows-n0)
		wv := w.View(n0*k, nc, k)
		if fu.Pair {
			wv = w
		}
		wa, wo, err := binds("MatVecQuant", wv)
		if err != nil {
			return err
		}
		gx, gy := ctx.Grid(uint32(ceilDiv(nc, outPerWG)))
		fp := fu.params(0)
		fp.FBOff += uint32(n0) // this dispatch's first row
		err = enc.Dispatch(pipe, quantParams{
			Rows: uint32(nc), K: uint32(k), NP: uint32(np),
			WOff: wo[0], WRow: uint32(rowUnits),
			XOff: xOff, XStride: xStride,
			DOff: fp.DOff + uint32(n0), DStride: fp.DStride,
			fusionParams: fp.fusionParams,
		}, bindArgs(wa[0]), gx, gy, 1)
		if err != nil {
			return err
		}
	}
	return nil
}

// rowsPerBinding is how many rows of rowBytes of t fit one storage binding:
// all n when t's whole buffer fits one (so every view shares its bind
// group); otherwise as many as fit a window, which starts up to one offset
// alignment before the rows.
func rowsPerBinding(ctx *gpu.Context, t Tensor, rowBytes uint64, n int) (int, error) {
	if t.Buf == nil {
		return 0, fmt.Errorf("tensor %s has no buffer", t)
	}
	limit := ctx.MaxBinding()
	if t.Buf.Size() <= limit {
		return n, nil
	}
	align := uint64(ctx.Limits.MinStorageBufferOffsetAlignment)
	if align == 0 {
		align = 256
	}
	rows := (limit - align) / rowBytes
	if rows == 0 {
		return 0, fmt.Errorf("one row of %d bytes exceeds the storage binding limit of %d bytes", rowBytes, limit)
	}
	return int(min(rows, uint64(n))), nil
}

// q8ScaleGroups is NSG in the shader's int8 accessors: scale groups per
// piece (0: the type has no int8 decoder).
func q8ScaleGroups(dt DType) int {
	switch dt {
	case Q4_0, Q4_1, Q5_0, Q5_1, Q8_0:
		return 1
	case Q4_K, Q5_K:
		return 2
	case Q2_K, Q3_K, Q6_K:
		return 4
	}
	return 0
}

// q8TypeNames are the weight types the int8 matvec decodes.
func q8TypeNames() []string {
	var s []string
	for _, dt := range []DType{Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K} {
		s = append(s, dt.String())
	}
	return s
}

// useInt8Dot: the int8 matvec runs for w's type on ctx.
func useInt8Dot(ctx *gpu.Context, dt DType) bool {
	return kernelOptions(ctx).Int8Dot && ctx.Features.DotI8Packed && q8ScaleGroups(dt) > 0
}

type q8Group struct {
	T     string // the scale group's index expression
	Quads []q8Quad
}

// q8Quad is four consecutive groups, which read one vec4 of x quants.
type q8Quad struct {
	J0     string   // the first group's index expression
	Js, Cs []string // each group's index, and its component of the vec4
}

// q8ScaleGroupExprs unrolls the int8 consume's loops over scale groups and
// their groups (or leaves one loop each, as "t" and "j").
func q8ScaleGroupExprs(dt DType, unroll bool) []q8Group {
	nsg := q8ScaleGroups(dt)
	if nsg == 0 {
		return nil
	}
	if !unroll {
		return []q8Group{{T: "t", Quads: []q8Quad{{J0: "t * GS + jq", Js: []string{"t * GS + jq + i"}, Cs: []string{"i"}}}}}
	}
	gs := groupsPerPiece(dt) / nsg
	out := make([]q8Group, nsg)
	for t := range out {
		out[t].T = fmt.Sprintf("%du", t)
		for j0 := t * gs; j0 < (t+1)*gs; j0 += 4 {
			q := q8Quad{J0: fmt.Sprintf("%du", j0)}
			for c := 0; c < 4; c++ {
				q.Js = append(q.Js, fmt.Sprintf("%du", j0+c))
				q.Cs = append(q.Cs, fmt.Sprint(c))
			}
			out[t].Quads = append(out[t].Quads, q)
		}
	}
	return out
}

// quantizeForMatVec quantises x (normed by o.Norm) into the context's q8
// scratch for one int8 matvec.
func quantizeForMatVec(enc *gpu.Encoder, x Tensor, o MatVecOpts) (Tensor, error) {
	m, k := x.Shape[0], x.Shape[1]
	words := m * Q8RowWords(k)
	buf, err := q8ScratchBuffer(enc.Context(), uint64(4*words))
	if err != nil {
		return Tensor{}, err
	}
	xq := Tensor{Buf: buf, DType: U32, Shape: []int{words}}
	return xq, QuantizeQ8(enc, xq, x, o.Norm, o.Eps)
}
