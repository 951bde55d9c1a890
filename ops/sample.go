package ops

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/wgllm/wgllm/runtime/gpu"
	"github.com/wgllm/wgllm/wgsl"
)

// SampleMaxCandidates is the most candidates the GPU sampler sorts: rows
// whose top-k (or, without top-k, whose vocabulary) is larger take the
// sorted path only when no filter needs the order (top-p 1); otherwise
// they are sampled on the CPU (SampleSupported says which).
const SampleMaxCandidates = 1024

// SampleWords is the number of u32 parameter words per row.
const SampleWords = 16

// SampleInvalid is the token written for a row with a NaN or +Inf logit,
// or with every logit -Inf.
const SampleInvalid = math.MaxUint32

// NoWindowSlot: the chosen token is not written to the row's window.
const NoWindowSlot = -1

// SampleParams are one row's settings, with runtime/sample's meanings
// (penalties → top-k → top-p → min-p → temperature → draw; temperature 0
// is greedy). The draw's uniform number is Philox4x32-10 keyed by Seed at
// counter Step (ref.SampleUniform), so a row's token depends on nothing
// but its logits, its window and these values.
type SampleParams struct {
	Temperature                                      float32
	TopK                                             int // 0: off
	TopP, MinP                                       float32
	RepeatPenalty, FrequencyPenalty, PresencePenalty float32
	Seed, Step                                       uint64
	// WindowLen tokens at the start of the row's window count for the
	// penalties (in any order: only their counts matter); 0 turns the
	// penalties off.
	WindowLen int
	// WindowSlot is where the kernel writes the chosen token in the row's
	// window (the ring's next slot), or NoWindowSlot.
	WindowSlot int
	// WindowRow is the row of the window tensor that holds this row's
	// window (a sequence's own, across steps); rows may share none.
	WindowRow int
}

const (
	samplePathGreedy = iota
	samplePathSorted
	samplePathWhole
)

// samplePath is the kernel's path for p: greedy, the k best sorted (any
// filter that needs the order), or the whole row in id order.
func samplePath(p SampleParams, vocab int) (path, k int, err error) {
	if p.Temperature == 0 {
		return samplePathGreedy, 0, nil
	}
	k = vocab
	if p.TopK > 0 && p.TopK < vocab {
		k = p.TopK
	}
	if k == vocab && p.TopP >= 1 {
		return samplePathWhole, k, nil
	}
	if k > SampleMaxCandidates {
		return 0, 0, fmt.Errorf("ops.Sample: %d candidates to sort (top_k %d, top_p %v, vocabulary %d): the GPU sorts at most %d; sample this row on the CPU",
			k, p.TopK, p.TopP, vocab, SampleMaxCandidates)
	}
	return samplePathSorted, k, nil
}

// SampleSupported reports whether the GPU sampler takes p for a vocabulary
// of vocab with windows of windowCap tokens (the window row is checked by
// PackSampleParams); the error says why not.
func SampleSupported(p SampleParams, vocab, windowCap int) error {
	fin := func(x float32) bool { return !math.IsNaN(float64(x)) && !math.IsInf(float64(x), 0) }
	switch {
	case !fin(p.Temperature) || p.Temperature < 0:
		return fmt.Errorf("ops.Sample: temperature %v must be finite and ≥ 0", p.Temperature)
	case p.TopK < 0:
		return fmt.Errorf("ops.Sample: top_k %d must be ≥ 0", p.TopK)
	case !fin(p.TopP) || p.TopP <= 0 || p.TopP > 1:
		return fmt.Errorf("ops.Sample: top_p %v must be in (0, 1]", p.TopP)
	case !fin(p.MinP) || p.MinP < 0 || p.MinP > 1:
		return fmt.Errorf("ops.Sample: min_p %v must be in [0, 1]", p.MinP)
	case !fin(p.RepeatPenalty) || p.RepeatPenalty <= 0 || !fin(p.FrequencyPenalty) || !fin(p.PresencePenalty):
		return fmt.Errorf("ops.Sample: penalties %v, %v, %v must be finite (repeat > 0)", p.RepeatPenalty, p.FrequencyPenalty, p.PresencePenalty)
	case p.WindowLen < 0 || p.WindowLen > windowCap:
		return fmt.Errorf("ops.Sample: penalty window of %d tokens, the window holds %d", p.WindowLen, windowCap)
	case p.WindowSlot != NoWindowSlot && (p.WindowSlot < 0 || p.WindowSlot >= windowCap):
		return fmt.Errorf("ops.Sample: window slot %d outside a window of %d", p.WindowSlot, windowCap)
	}
	_, _, err := samplePath(p, vocab)
	return err
}

// PackSampleParams writes the rows' parameter words (SampleWords each,
// little-endian) into dst, which must hold 4·SampleWords·len(ps) bytes,
// for a window tensor of windowRows rows of windowCap tokens. It allocates
// nothing.
func PackSampleParams(dst []byte, ps []SampleParams, vocab, windowRows, windowCap int) error {
	if len(dst) < 4*SampleWords*len(ps) {
		return fmt.Errorf("ops.PackSampleParams: %d bytes for %d rows", len(dst), len(ps))
	}
	for i, p := range ps {
		if err := SampleSupported(p, vocab, windowCap); err != nil {
			return fmt.Errorf("row %d: %w", i, err)
		}
		if p.WindowRow < 0 || p.WindowRow >= windowRows {
			return fmt.Errorf("ops.PackSampleParams: row %d: window row %d of %d", i, p.WindowRow, windowRows)
		}
		path, k, _ := samplePath(p, vocab)
		wlen := p.WindowLen
		if p.RepeatPenalty == 1 && p.FrequencyPenalty == 0 && p.PresencePenalty == 0 {
			wlen = 0
		}
		slot := uint32(SampleInvalid)
		if p.WindowSlot != NoWindowSlot {
			slot = uint32(p.WindowSlot)
		}
		// float32(log(min_p)), as runtime/sample computes its threshold;
		// log(0) = -Inf keeps every token.
		lnMinP := float32(math.Log(float64(p.MinP)))
		words := [SampleWords]uint32{
			f32bits(p.Temperature), uint32(k), f32bits(p.TopP), f32bits(lnMinP),
			f32bits(p.RepeatPenalty), f32bits(p.FrequencyPenalty), f32bits(p.PresencePenalty),
			uint32(wlen), slot,
			uint32(p.Seed), uint32(p.Seed >> 32), uint32(p.Step), uint32(p.Step >> 32),
			uint32(path), uint32(p.WindowRow),
		}
		row := dst[4*SampleWords*i:]
		for j, w := range words {
			binary.LittleEndian.PutUint32(row[4*j:], w)
		}
	}
	return nil
}

type sampleKey struct {
	WG, Cap int
}

func (k sampleKey) String() string { return fmt.Sprintf("sample_wg%d_cap%d", k.WG, k.Cap) }

type sampleParams struct {
	Rows, Cols    uint32
	XOff, XStride uint32
	SOff          uint32
	WOff, WStride uint32
	DOff          uint32
}

// Sample records one draw per row: dst[r] (u32) gets the token chosen from
// logits[r] (f32 [rows, vocab], penalised in place) under the row's packed
// parameters (u32 [rows, SampleWords], PackSampleParams) and its penalty
// window (a row of window, u32 [windowRows, windowCap], windowCap ≥ 1), or
// SampleInvalid. One workgroup per row.
func Sample(enc *gpu.Encoder, dst, logits, params, window Tensor) error {
	rows, cols, err := rowsCols("Sample", logits)
	if err != nil {
		return err
	}
	switch {
	case logits.DType != F32:
		return fmt.Errorf("ops.Sample: logits %s must be f32", logits)
	case dst.DType != U32 || dst.Len() != rows:
		return fmt.Errorf("ops.Sample: dst %s must be u32 with one element per row of logits %s", dst, logits)
	case params.DType != U32 || params.Len() != rows*SampleWords:
		return fmt.Errorf("ops.Sample: params %s must be u32 [%d, %d]", params, rows, SampleWords)
	case window.DType != U32 || len(window.Shape) != 2 || window.Shape[0] < 1 || window.Shape[1] < 1:
		return fmt.Errorf("ops.Sample: window %s must be u32 [windowRows, windowCap]", window)
	}
	for _, o := range []Tensor{dst, params, window} {
		if o.Buf == logits.Buf {
			return fmt.Errorf("ops.Sample: %s must not share a buffer with logits %s", o, logits)
		}
	}
	if dst.Buf == window.Buf {
		return fmt.Errorf("ops.Sample: dst %s must not share a buffer with the window %s", dst, window)
	}
	args, offs, err := binds("Sample", logits, params, window, dst)
	if err != nil {
		return err
	}
	key := sampleKey{WG: 256, Cap: SampleMaxCandidates}
	pipe, err := enc.Context().Pipeline(key, func() (gpu.PipelineSpec, error) {
		src, err := wgsl.Render("sample.wgsl", map[string]any{"WG": key.WG, "CAP": key.Cap})
		return gpu.PipelineSpec{Source: src, Storage: []gpu.Access{gpu.ReadWrite, gpu.ReadOnly, gpu.ReadWrite, gpu.ReadWrite}}, err
	})
	if err != nil {
		return err
	}
	gx, gy := enc.Context().Grid(uint32(rows))
	return enc.Dispatch(pipe, sampleParams{
		Rows: uint32(rows), Cols: uint32(cols),
		XOff: offs[0], XStride: uint32(cols),
		SOff: offs[1],
		WOff: offs[2], WStride: uint32(window.Shape[1]),
		DOff: offs[3],
	}, args, gx, gy, 1)
}
