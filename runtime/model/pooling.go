package model

import "fmt"

// Pooling is how an embedding is made of a sequence's hidden states, as
// the GGUF key <arch>.pooling_type says. The zero value is PoolLast,
// llama.cpp's choice for a decoder language model without the key.
type Pooling int

const (
	PoolLast Pooling = iota // the last token's state
	PoolMean                // the mean of every token's
	PoolCLS                 // the first token's
	PoolNone                // one embedding per token
)

func (p Pooling) String() string {
	switch p {
	case PoolLast:
		return "last"
	case PoolMean:
		return "mean"
	case PoolCLS:
		return "cls"
	case PoolNone:
		return "none"
	}
	return fmt.Sprintf("pooling(%d)", int(p))
}

// readPooling reads <arch>.pooling_type in llama.cpp's numbering (0 none,
// 1 mean, 2 cls, 3 last); absent: last.
func readPooling(m *Meta) Pooling {
	v, ok := m.f.ArchUint("pooling_type")
	if !ok {
		return PoolLast
	}
	switch v {
	case 0:
		return PoolNone
	case 1:
		return PoolMean
	case 2:
		return PoolCLS
	case 3:
		return PoolLast
	}
	m.fail("%s.pooling_type = %d is not one this runtime pools by (0 none, 1 mean, 2 cls, 3 last)", m.arch, v)
	return PoolLast
}
