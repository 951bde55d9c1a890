package model

import (
	"fmt"

	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/runtime/gguf"
	"github.com/wgllm/wgllm/runtime/gpu"
)

// DTypeOf maps a GGUF tensor type to the GPU storage type that keeps it as
// stored (no dequantisation on load).
func DTypeOf(t gguf.GGMLType) (ops.DType, error) {
	switch t {
	case gguf.F32:
		return ops.F32, nil
	case gguf.F16:
		return ops.F16, nil
	case gguf.BF16:
		return ops.BF16, nil
	case gguf.Q4_0:
		return ops.Q4_0, nil
	case gguf.Q4_1:
		return ops.Q4_1, nil
	case gguf.Q5_0:
		return ops.Q5_0, nil
	case gguf.Q5_1:
		return ops.Q5_1, nil
	case gguf.Q8_0:
		return ops.Q8_0, nil
	case gguf.Q2_K:
		return ops.Q2_K, nil
	case gguf.Q3_K:
		return ops.Q3_K, nil
	case gguf.Q4_K:
		return ops.Q4_K, nil
	case gguf.Q5_K:
		return ops.Q5_K, nil
	case gguf.Q6_K:
		return ops.Q6_K, nil
	case gguf.IQ4_NL:
		return ops.IQ4_NL, nil
	case gguf.IQ4_XS:
		return ops.IQ4_XS, nil
	case gguf.MXFP4:
		return ops.MXFP4, nil
	}
	return 0, fmt.Errorf("model: tensor type %s is not supported on the GPU", t)
}

// uploader copies GGUF tensors to the GPU one at a time.
type uploader struct {
	ctx      *gpu.Context
	f        *gguf.File
	bytes    uint64
	progress func(done, total uint64)
	total    uint64
}

// load uploads the named tensor, checking it has the expected shape
// (outermost first, as ops shapes are: a weight is [rows=N, cols=K]).
func (u *uploader) load(name string, shape ...int) (ops.Tensor, error) {
	ti, ok := u.f.Tensor(name)
	if !ok {
		return ops.Tensor{}, fmt.Errorf("model: tensor %s is missing", name)
	}
	if len(ti.Dims) > len(shape) {
		return ops.Tensor{}, fmt.Errorf("model: tensor %s has dims %v, want %v", name, ti.Dims, shape)
	}
	// GGUF lists the innermost dimension first; pad with 1s.
	for i := range shape {
		d := uint64(1)
		if i < len(ti.Dims) {
			d = ti.Dims[i]
		}
		if d != uint64(shape[len(shape)-1-i]) {
			return ops.Tensor{}, fmt.Errorf("model: tensor %s has dims %v (innermost first), want shape %v", name, ti.Dims, shape)
		}
	}
	dt, err := DTypeOf(ti.Type)
	if err != nil {
		return ops.Tensor{}, fmt.Errorf("%w (tensor %s)", err, name)
	}
	// From the memory-mapped file: pages stream to the GPU without a copy
	// on the Go heap, so host memory stays near the file size.
	raw, err := u.f.TensorBytes(ti)
	if err != nil {
		return ops.Tensor{}, err
	}
	t, err := ops.FromBytes(u.ctx, name, dt, raw, shape...)
	if err != nil {
		return ops.Tensor{}, err
	}
	u.bytes += ti.Size
	if u.progress != nil {
		u.progress(u.bytes, u.total)
	}
	return t, nil
}
