package quantize

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/wgllm/wgllm/runtime/gguf"
)

// FileType is llama.cpp's llama_ftype, the value of general.file_type: the
// main tensor type of a model file, and for the _S/_M/_L mixes which
// tensors get more bits.
type FileType uint32

// The file types, numbered as llama.cpp numbers them.
const (
	AllF32      FileType = 0
	MostlyF16   FileType = 1
	MostlyQ4_0  FileType = 2
	MostlyQ4_1  FileType = 3
	MostlyQ8_0  FileType = 7
	MostlyQ5_0  FileType = 8
	MostlyQ5_1  FileType = 9
	MostlyQ2_K  FileType = 10
	MostlyQ3_KS FileType = 11
	MostlyQ3_KM FileType = 12
	MostlyQ3_KL FileType = 13
	MostlyQ4_KS FileType = 14
	MostlyQ4_KM FileType = 15
	MostlyQ5_KS FileType = 16
	MostlyQ5_KM FileType = 17
	MostlyQ6_K  FileType = 18
	MostlyIQ4NL FileType = 25
	MostlyIQ4XS FileType = 30
	MostlyBF16  FileType = 32
	// MostlyMXFP4MoE is llama.cpp's MXFP4_MOE: MXFP4 for expert tensors,
	// Q8_0 for the other matrices.
	MostlyMXFP4MoE FileType = 38
)

// fileTypes maps the types this package writes to their name and the
// tensor type most tensors get (llama_ftype_get_default_type).
var fileTypes = map[FileType]struct {
	name string
	base gguf.GGMLType
}{
	AllF32:         {"F32", gguf.F32},
	MostlyF16:      {"F16", gguf.F16},
	MostlyBF16:     {"BF16", gguf.BF16},
	MostlyQ4_0:     {"Q4_0", gguf.Q4_0},
	MostlyQ4_1:     {"Q4_1", gguf.Q4_1},
	MostlyQ5_0:     {"Q5_0", gguf.Q5_0},
	MostlyQ5_1:     {"Q5_1", gguf.Q5_1},
	MostlyQ8_0:     {"Q8_0", gguf.Q8_0},
	MostlyQ2_K:     {"Q2_K", gguf.Q2_K},
	MostlyQ3_KS:    {"Q3_K_S", gguf.Q3_K},
	MostlyQ3_KM:    {"Q3_K_M", gguf.Q3_K},
	MostlyQ3_KL:    {"Q3_K_L", gguf.Q3_K},
	MostlyQ4_KS:    {"Q4_K_S", gguf.Q4_K},
	MostlyQ4_KM:    {"Q4_K_M", gguf.Q4_K},
	MostlyQ5_KS:    {"Q5_K_S", gguf.Q5_K},
	MostlyQ5_KM:    {"Q5_K_M", gguf.Q5_K},
	MostlyQ6_K:     {"Q6_K", gguf.Q6_K},
	MostlyIQ4NL:    {"IQ4_NL", gguf.IQ4_NL},
	MostlyIQ4XS:    {"IQ4_XS", gguf.IQ4_XS},
	MostlyMXFP4MoE: {"MXFP4_MOE", gguf.MXFP4},
}

// otherNames names llama.cpp file types this package reads in metadata but
// does not write (importance-matrix and ternary types).
var otherNames = map[FileType]string{
	19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S",
	26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 31: "IQ1_M", 36: "TQ1_0", 37: "TQ2_0",
}

func (t FileType) String() string {
	if ft, ok := fileTypes[t]; ok {
		return ft.name
	}
	if n, ok := otherNames[t]; ok {
		return n
	}
	return fmt.Sprintf("file type %d", uint32(t))
}

// Writable reports whether Convert can produce t.
func (t FileType) Writable() bool { _, ok := fileTypes[t]; return ok }

// BaseType is the tensor type most of t's tensors get.
func (t FileType) BaseType() gguf.GGMLType { return fileTypes[t].base }

// WritableNames lists the file types Convert produces, by name.
func WritableNames() []string {
	var names []string
	for _, ft := range fileTypes {
		names = append(names, ft.name)
	}
	sort.Strings(names)
	return names
}

// ParseFileType reads a file type the way llama-quantize does: a name
// (case-insensitive: q4_k_m, Q8_0, f16) or llama.cpp's number (15). Only
// types Convert writes are accepted.
func ParseFileType(s string) (FileType, error) {
	s = strings.TrimSpace(s)
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		if ft := FileType(n); ft.Writable() {
			return ft, nil
		}
	}
	for ft, v := range fileTypes {
		if strings.EqualFold(v.name, s) {
			return ft, nil
		}
	}
	return 0, fmt.Errorf("quantize: unknown or unsupported type %q (want one of %s)", s, strings.Join(WritableNames(), ", "))
}

// Describe names a model file's type: general.file_type when the file has
// it, else the tensor type holding most of the file's bytes.
func Describe(g *gguf.File) string {
	if v, ok := g.Uint("general.file_type"); ok {
		return FileType(v).String()
	}
	bytes := map[gguf.GGMLType]uint64{}
	for _, t := range g.Tensors {
		bytes[t.Type] += t.Size
	}
	best, bestBytes := "", uint64(0)
	for typ, n := range bytes {
		if n > bestBytes || (n == bestBytes && typ.String() < best) {
			best, bestBytes = typ.String(), n
		}
	}
	if best == "" {
		return "-"
	}
	return best
}
