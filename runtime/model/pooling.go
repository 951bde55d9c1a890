package model

import (
	"fmt"

	"github.com/wgllm/wgllm/runtime/gguf"
)

// Pooling is how an embedding is made of a sequence's hidden states, as
// the GGUF key <arch>.pooling_type says (llama.cpp's values).
type Pooling int

const (
	PoolNone Pooling = 0 // one embedding per token
	PoolMean Pooling = 1
	PoolCLS  Pooling = 2 // the first token's
	PoolLast Pooling = 3 // the last token's
)

func (p Pooling) String() string {
	switch p {
	case PoolNone:
		return "none"
	case PoolMean:
		return "mean"
	case PoolCLS:
		return "cls"
	case PoolLast:
		return "last"
	}
	return fmt.Sprintf("pooling(%d)", int(p))
}

// poolingFromGGUF reads <arch>.pooling_type; a decoder language model
// without the key pools the last token's state, as llama.cpp does.
func poolingFromGGUF(f *gguf.File) (Pooling, error) {
	v, ok := f.ArchUint("pooling_type")
	if !ok {
		return PoolLast, nil
	}
	if v > uint64(PoolLast) {
		return 0, fmt.Errorf("model: %s.pooling_type = %d is not one this runtime pools by (0 none, 1 mean, 2 cls, 3 last)", f.Architecture(), v)
	}
	return Pooling(v), nil
}
