package quant_test

import (
	"path/filepath"
	"testing"

	"github.com/wgllm/wgllm/internal/testdata"
	"github.com/wgllm/wgllm/runtime/gguf"
	"github.com/wgllm/wgllm/runtime/quant"
)

// Relative RMS error allowed between a quantised kjv-30m tensor and the
// same tensor of the f16 file (measured: Q8_0 0.56%, Q4_0 8.7%, Q4_K 7.2%,
// Q6_K 1.8%).
var modelBound = map[gguf.GGMLType]float64{
	gguf.Q8_0: 0.01, gguf.Q4_0: 0.10, gguf.Q4_K: 0.10, gguf.Q6_K: 0.03,
}

type modelPair struct {
	ref, q *gguf.File
}

func openModels(t *testing.T, quantName string) modelPair {
	t.Helper()
	dir := filepath.Join(testdata.SharedDir(t), "models")
	open := func(name string) *gguf.File {
		g, err := gguf.Open(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { g.Close() })
		return g
	}
	return modelPair{open("kjv-30m-f16.gguf"), open("kjv-30m-" + quantName + ".gguf")}
}

func decodeTensor(t *testing.T, g *gguf.File, ti gguf.TensorInfo) ([]byte, []float32) {
	t.Helper()
	raw, err := g.ReadTensor(ti)
	if err != nil {
		t.Fatal(err)
	}
	x, err := quant.Dequantize(ti.Type, raw, int(ti.Elements()))
	if err != nil {
		t.Fatalf("%s (%s): %v", ti.Name, ti.Type, err)
	}
	return raw, x
}

// Every tensor of each quantised kjv-30m file decodes to within its type's
// error of the f16 file's tensor, and re-quantising the f16 values with
// this package's quantiser reproduces the file's bytes block for block:
// the files came from llama-quantize without an importance matrix, which
// runs ggml's quantize_row_*_ref.
func TestKJVModels(t *testing.T) {
	for _, name := range []string{"q8_0", "q4_0", "q4_k_m"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			m := openModels(t, name)
			seen := map[gguf.GGMLType]int{}
			for i, ti := range m.q.Tensors {
				ri, ok := m.ref.Tensor(ti.Name)
				if !ok || ri.Elements() != ti.Elements() || ri.Dims[0] != ti.Dims[0] {
					t.Fatalf("%s: no matching tensor in the f16 file (%v vs %v)", ti.Name, ti.Dims, ri.Dims)
				}
				raw, got := decodeTensor(t, m.q, ti)
				refRaw, want := decodeTensor(t, m.ref, ri)
				seen[ti.Type]++
				if ti.Type == ri.Type {
					if string(raw) != string(refRaw) {
						t.Errorf("%s: %s tensor differs from the f16 file's", ti.Name, ti.Type)
					}
					continue
				}
				bound, ok := modelBound[ti.Type]
				if !ok {
					t.Fatalf("%s: unexpected type %s", ti.Name, ti.Type)
				}
				if e := relRMS(got, want); e > bound || e == 0 {
					t.Errorf("%s (%s): relative RMS error vs f16 %.5f, want (0, %g]", ti.Name, ti.Type, e, bound)
				}
				// Re-quantising every tensor takes seconds; -short checks a few.
				if testing.Short() && i > 6 {
					continue
				}
				mine, err := quant.Quantize(ti.Type, want)
				if err != nil {
					t.Fatal(err)
				}
				bb := ti.Type.BlockBytes()
				for b := 0; b < len(raw)/bb; b++ {
					if string(raw[b*bb:(b+1)*bb]) != string(mine[b*bb:(b+1)*bb]) {
						t.Errorf("%s (%s): re-quantised block %d differs from llama-quantize's:\n file % x\n ours % x",
							ti.Name, ti.Type, b, raw[b*bb:(b+1)*bb], mine[b*bb:(b+1)*bb])
						break
					}
				}
			}
			t.Logf("tensors by type: %v", seen)
		})
	}
}
