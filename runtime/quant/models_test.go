package quant_test

import (
	"bytes"
	"math"
	"path/filepath"
	"testing"

	"github.com/wgllm/wgllm/internal/sharedfiles"
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
	dir := filepath.Join(sharedfiles.SharedDir(t), "models")
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
// this package's quantiser reproduces the file's bytes block for block
// (the first 64K elements of each tensor):
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
				// Re-quantising whole tensors takes seconds: check the first
				// 64K elements of each (every block is encoded on its own, so
				// this exercises the same code), and only a few tensors in -short.
				if testing.Short() && i > 6 {
					continue
				}
				n := min(len(want), 1<<16)
				mine, err := quant.Quantize(ti.Type, want[:n])
				if err != nil {
					t.Fatal(err)
				}
				bb := ti.Type.BlockBytes()
				for b := 0; b < len(mine)/bb; b++ {
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

// The zoo's gpt-oss-f32 holds gpt-oss-mxfp4's expert weights decoded to F32
// (by gguf-py, which decodes as ggml does): every MXFP4 tensor decodes here
// to those floats bit for bit, and re-quantising the floats gives the MXFP4
// bytes back (gguf-py's quantiser is ggml's algorithm; each block's largest
// value decodes to 8 or 12 steps, so its exponent comes back the same).
func TestGPTOSSExperts(t *testing.T) {
	dir := filepath.Join(sharedfiles.SharedDir(t), "models", "zoo", "models")
	open := func(name string) *gguf.File {
		g, err := gguf.Open(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { g.Close() })
		return g
	}
	mx, f32 := open("gpt-oss-mxfp4.gguf"), open("gpt-oss-f32.gguf")
	count := 0
	for _, ti := range mx.Tensors {
		if ti.Type != gguf.MXFP4 {
			continue
		}
		count++
		fi, ok := f32.Tensor(ti.Name)
		if !ok || fi.Type != gguf.F32 || fi.Elements() != ti.Elements() {
			t.Fatalf("%s: gpt-oss-f32 has no F32 tensor of %d elements by that name", ti.Name, ti.Elements())
		}
		raw, got := decodeTensor(t, mx, ti)
		_, want := decodeTensor(t, f32, fi)
		for i := range want {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
				t.Fatalf("%s element %d: MXFP4 decodes to %v, the F32 file has %v", ti.Name, i, got[i], want[i])
			}
		}
		again, err := quant.Quantize(gguf.MXFP4, want)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(again, raw) {
			t.Errorf("%s: re-quantising the F32 values does not give the MXFP4 bytes back", ti.Name)
		}
	}
	if count == 0 {
		t.Fatal("gpt-oss-mxfp4.gguf has no MXFP4 tensors")
	}
	t.Logf("%d MXFP4 expert tensors decode to gpt-oss-f32's values and re-quantise to their bytes", count)
}
