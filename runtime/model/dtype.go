package model

import (
	"fmt"

	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/runtime/gguf"
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
