package ops

import (
	"fmt"
	"strconv"
	"sync"

	"github.com/wgllm/wgllm/runtime/gpu"
	"github.com/wgllm/wgllm/wgsl"
)

// quantizeQ8Key specialises wgsl/quantize_q8.wgsl: whether x is
// RMS-normalised and scaled by g first.
type quantizeQ8Key struct {
	WG   int
	Norm bool
}

func (k quantizeQ8Key) String() string {
	s := fmt.Sprintf("quantize_q8_wg%d", k.WG)
	if k.Norm {
		s += "_norm"
	}
	return s
}

// quantizeQ8Params mirrors Params in wgsl/quantize_q8.wgsl.
type quantizeQ8Params struct {
	K             uint32
	XOff, XStride uint32
	DOff, DStride uint32
	GOff          uint32
	Eps           float32
}

const quantizeQ8WG = 256

// Q8RowWords is the u32 words one x row of k elements (a multiple of 32)
// takes quantised by QuantizeQ8: k/4 words of packed int8 quants, k/32
// scales, k/16 sums of 16 quants and the row's 1 / rms, padded to a
// multiple of 4 so that every row's quants are read as vec4.
func Q8RowWords(k int) int { return (k/4 + k/32 + k/16 + 1 + 3) &^ 3 }

// QuantizeQ8 quantises each row of x (f32 [M, K], K a multiple of 32) to
// int8 blocks of 32 for the int8 matvec: q = round(127 x / amax) with ties
// away from zero, computed exactly, and the block scale amax * f32(1/127)
// (ref.QuantizeQ8 models it bit for bit). With norm (f32 [K]) the rows are
// first scaled by norm, and the row's 1 / sqrt(mean(x²) + eps) is stored for
// the matvec to apply after its sums. dst is u32 [M, Q8RowWords(K)].
func QuantizeQ8(enc *gpu.Encoder, dst, x Tensor, norm *Tensor, eps float32) error {
	if x.DType != F32 || len(x.Shape) != 2 || x.Shape[1]%32 != 0 || x.Shape[1] == 0 {
		return fmt.Errorf("ops.QuantizeQ8: x %s must be f32 [M, K] with K a multiple of 32", x)
	}
	m, k := x.Shape[0], x.Shape[1]
	if dst.DType != U32 || dst.Len() != m*Q8RowWords(k) {
		return fmt.Errorf("ops.QuantizeQ8: dst %s must be u32 [%d, %d] for x %s", dst, m, Q8RowWords(k), x)
	}
	ts := []Tensor{x, dst}
	if norm != nil {
		if norm.DType != F32 || norm.Len() != k {
			return fmt.Errorf("ops.QuantizeQ8: norm weight %s must be f32 [%d]", *norm, k)
		}
		if !(eps > 0) {
			return fmt.Errorf("ops.QuantizeQ8: norm epsilon %g must be positive", eps)
		}
		ts = append(ts, norm.View(0, k))
	}
	args, offs, err := binds("QuantizeQ8", ts...)
	if err != nil {
		return err
	}
	prm := quantizeQ8Params{K: uint32(k), XOff: offs[0], XStride: uint32(k), DOff: offs[1], DStride: uint32(Q8RowWords(k)), Eps: eps}
	if norm != nil {
		prm.GOff = offs[2]
	}
	return quantizeQ8(enc, quantizeQ8Key{WG: quantizeQ8WG, Norm: norm != nil}, prm, args, m)
}

func quantizeQ8(enc *gpu.Encoder, key quantizeQ8Key, prm quantizeQ8Params, args []gpu.Arg, m int) error {
	pipe, err := enc.Context().Pipeline(key, func() (gpu.PipelineSpec, error) {
		src, err := wgsl.Render("quantize_q8.wgsl", map[string]any{
			"WG": key.WG, "Norm": key.Norm, "Inv127": strconv.FormatFloat(float64(float32(1.0/127)), 'e', -1, 64),
		})
		storage := []gpu.Access{gpu.ReadOnly, gpu.ReadWrite}
		if key.Norm {
			storage = append(storage, gpu.ReadOnly)
		}
		return gpu.PipelineSpec{Source: src, Storage: storage}, err
	})
	if err != nil {
		return err
	}
	return enc.Dispatch(pipe, prm, args, uint32(ceilDiv(int(prm.K)/32, key.WG)), uint32(m), 1)
}

// The int8 matvec quantises x into one scratch buffer per context, reused
// by every call: dispatches of a queue run in order, so the next call's
// quantisation cannot overwrite x before the last matvec has read it. It
// only grows; a replaced buffer is kept alive for encoders that still
// reference it.
var q8Scratch = struct {
	sync.Mutex
	bufs map[*gpu.Context][]*gpu.Buffer // the last one is current
}{bufs: map[*gpu.Context][]*gpu.Buffer{}}

func q8ScratchBuffer(ctx *gpu.Context, bytes uint64) (*gpu.Buffer, error) {
	q8Scratch.Lock()
	defer q8Scratch.Unlock()
	list := q8Scratch.bufs[ctx]
	if n := len(list); n > 0 && list[n-1].Size() >= bytes {
		return list[n-1], nil
	}
	size := max(bytes, 64<<10)
	if n := len(list); n > 0 {
		size = max(size, min(2*list[n-1].Size(), ctx.MaxBinding()))
	}
	b, err := ctx.NewBuffer("q8_scratch", size)
	if err != nil {
		return nil, fmt.Errorf("ops: int8 matvec scratch: %w", err)
	}
	q8Scratch.bufs[ctx] = append(list, b)
	return b, nil
}

// ReleaseQ8Scratch frees the scratch buffers the int8 matvec keeps for ctx.
// Call it only when no recorded or submitted work still uses them, e.g.
// before ctx.Close; a later call allocates afresh.
func ReleaseQ8Scratch(ctx *gpu.Context) {
	q8Scratch.Lock()
	defer q8Scratch.Unlock()
	for _, b := range q8Scratch.bufs[ctx] {
		b.Destroy()
	}
	delete(q8Scratch.bufs, ctx)
}
