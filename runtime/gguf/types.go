package gguf

import "fmt"

// GGMLType is a tensor's storage type, numbered as in ggml.
type GGMLType uint32

const (
	F32  GGMLType = 0
	F16  GGMLType = 1
	Q4_0 GGMLType = 2
	Q4_1 GGMLType = 3
	Q5_0 GGMLType = 6
	Q5_1 GGMLType = 7
	Q8_0 GGMLType = 8
	Q8_1 GGMLType = 9
	Q2_K GGMLType = 10
	Q3_K GGMLType = 11
	Q4_K GGMLType = 12
	Q5_K GGMLType = 13
	Q6_K GGMLType = 14
	Q8_K GGMLType = 15
	// IQ4_NL is a 32-element block {d f16; qs[16]} whose nibbles index a
	// fixed non-linear table (kvalues_iq4nl).
	IQ4_NL GGMLType = 20
	// IQ4_XS is a 256-element super-block {d f16; scales_h u16; scales_l[4];
	// qs[128]}: eight 32-element sub-blocks with 6-bit scales, IQ4_NL's table.
	IQ4_XS GGMLType = 23
	BF16   GGMLType = 30
	// MXFP4 is OCP microscaling FP4: a 32-element block {e E8M0; qs[16]} of
	// E2M1 values (gpt-oss's expert weights).
	MXFP4 GGMLType = 39
)

type typeInfo struct {
	name       string
	blockSize  int // elements per block
	blockBytes int // bytes per block
}

var typeInfos = map[GGMLType]typeInfo{
	F32:  {"F32", 1, 4},
	F16:  {"F16", 1, 2},
	BF16: {"BF16", 1, 2},
	Q4_0: {"Q4_0", 32, 18},
	Q4_1: {"Q4_1", 32, 20},
	Q5_0: {"Q5_0", 32, 22},
	Q5_1: {"Q5_1", 32, 24},
	Q8_0: {"Q8_0", 32, 34},
	Q8_1: {"Q8_1", 32, 36},
	Q2_K: {"Q2_K", 256, 84},
	Q3_K: {"Q3_K", 256, 110},
	Q4_K: {"Q4_K", 256, 144},
	Q5_K: {"Q5_K", 256, 176},
	Q6_K: {"Q6_K", 256, 210},
	Q8_K: {"Q8_K", 256, 292},
	// ggml-common.h: block_iq4_nl, block_iq4_xs, block_mxfp4.
	IQ4_NL: {"IQ4_NL", 32, 18},
	IQ4_XS: {"IQ4_XS", 256, 136},
	MXFP4:  {"MXFP4", 32, 17},
}

// Known reports whether this package knows the type's block layout.
func (t GGMLType) Known() bool { _, ok := typeInfos[t]; return ok }

func (t GGMLType) String() string {
	if i, ok := typeInfos[t]; ok {
		return i.name
	}
	return fmt.Sprintf("type(%d)", uint32(t))
}

// BlockSize is the number of elements in one block (1 for plain floats).
func (t GGMLType) BlockSize() int { return typeInfos[t].blockSize }

// BlockBytes is the encoded size of one block.
func (t GGMLType) BlockBytes() int { return typeInfos[t].blockBytes }

// RowBytes is the encoded size of n elements (n a multiple of BlockSize).
func (t GGMLType) RowBytes(n int) int { return n / t.BlockSize() * t.BlockBytes() }

// ParseType accepts names like "q4_k", "Q8_0", "f16".
func ParseType(s string) (GGMLType, bool) {
	for t, i := range typeInfos {
		if equalFold(i.name, s) {
			return t, true
		}
	}
	return 0, false
}

func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
