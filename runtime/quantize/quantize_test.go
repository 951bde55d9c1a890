package quantize_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wgllm/wgllm/internal/sharedfiles"
	"github.com/wgllm/wgllm/runtime/gguf"
	"github.com/wgllm/wgllm/runtime/half"
	"github.com/wgllm/wgllm/runtime/quant"
	"github.com/wgllm/wgllm/runtime/quantize"
)

func convert(t *testing.T, in string, ft quantize.FileType) (string, quantize.Result) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out.gguf")
	res, err := quantize.Convert(in, out, ft, quantize.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return out, res
}

func open(t *testing.T, path string) *gguf.File {
	t.Helper()
	g, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

// The shared kjv-30m Q8_0, Q4_0 and Q4_K_M files were made from the f16
// file by llama.cpp's llama-quantize: converting the f16 file here gives
// the same files byte for byte (metadata, tensor order and types, blocks).
func TestMatchesLlamaQuantize(t *testing.T) {
	dir := filepath.Join(sharedfiles.SharedDir(t), "models")
	src := filepath.Join(dir, "kjv-30m-f16.gguf")
	for _, name := range []string{"q8_0", "q4_0", "q4_k_m"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ft, err := quantize.ParseFileType(name)
			if err != nil {
				t.Fatal(err)
			}
			refPath := filepath.Join(dir, "kjv-30m-"+name+".gguf")
			// The plan alone names the tensor whose type differs.
			ref := open(t, refPath)
			plans, err := quantize.Plan(open(t, src), ft)
			if err != nil {
				t.Fatal(err)
			}
			for i, p := range plans {
				rt := ref.Tensors[i]
				if p.Tensor.Name != rt.Name || p.Type != rt.Type {
					t.Fatalf("tensor %d: planned %s %s, llama-quantize wrote %s %s", i, p.Tensor.Name, p.Type, rt.Name, rt.Type)
				}
			}
			out, res := convert(t, src, ft)
			got, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			want, err := os.ReadFile(refPath)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				at := min(len(got), len(want))
				for i := range at {
					if got[i] != want[i] {
						at = i
						break
					}
				}
				t.Fatalf("output differs from llama-quantize's at byte %d (sizes %d, %d; data section at %d)", at, len(got), len(want), ref.DataOffset)
			}
			t.Logf("%s: %d tensors %v, %d -> %d bytes of tensor data", name, res.Tensors, res.ByType, res.InBytes, res.OutBytes)
		})
	}
}

// relRMS is ||got-want|| / ||want||.
func relRMS(got, want []float32) float64 {
	var num, den float64
	for i := range want {
		d := float64(got[i]) - float64(want[i])
		num += d * d
		den += float64(want[i]) * float64(want[i])
	}
	return math.Sqrt(num / den)
}

func decode(t *testing.T, g *gguf.File, ti gguf.TensorInfo) []float32 {
	t.Helper()
	raw, err := g.TensorBytes(ti)
	if err != nil {
		t.Fatal(err)
	}
	x, err := quant.Dequantize(ti.Type, raw, int(ti.Elements()))
	if err != nil {
		t.Fatal(err)
	}
	return x
}

func TestDescribe(t *testing.T) {
	for name, want := range map[string]string{"kjv-30m-q4_k_m.gguf": "Q4_K_M", "kjv-30m-f16.gguf": "F16", "stories260K.gguf": "F32"} {
		if got := quantize.Describe(open(t, sharedfiles.File(t, "models/"+name))); got != want {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}
}

// F16 from F16 keeps every tensor's bytes; F32 widens them exactly.
func TestFloatTargets(t *testing.T) {
	src := sharedfiles.File(t, "models/kjv-30m-f16.gguf")
	in := open(t, src)
	out, _ := convert(t, src, quantize.MostlyF16)
	g := open(t, out)
	out32, _ := convert(t, out, quantize.AllF32)
	g32 := open(t, out32)
	if len(g.Tensors) != len(in.Tensors) || len(g32.Tensors) != len(in.Tensors) {
		t.Fatalf("tensor counts %d, %d; want %d", len(g.Tensors), len(g32.Tensors), len(in.Tensors))
	}
	for _, ti := range in.Tensors {
		a, _ := in.TensorBytes(ti)
		ot, ok := g.Tensor(ti.Name)
		if !ok {
			t.Fatalf("%s missing", ti.Name)
		}
		b, _ := g.TensorBytes(ot)
		if ot.Type != ti.Type || !bytes.Equal(a, b) {
			t.Errorf("F16 -> F16: %s changed (%s -> %s)", ti.Name, ti.Type, ot.Type)
		}
		wt, _ := g32.Tensor(ti.Name)
		if wt.Type != gguf.F32 {
			t.Errorf("F32: %s is %s", ti.Name, wt.Type)
			continue
		}
		if relRMS(decode(t, g32, wt), decode(t, in, ti)) != 0 {
			t.Errorf("F32: %s is not the exact widening of the f16 values", ti.Name)
		}
	}
	// From the F32 file (F32 rows are read as they are, not widened from
	// F16), Q8_0 is again llama-quantize's file.
	q8, _ := convert(t, out32, quantize.MostlyQ8_0)
	got, _ := os.ReadFile(q8)
	want, err := os.ReadFile(sharedfiles.File(t, "models/kjv-30m-q8_0.gguf"))
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("Q8_0 from the F32 file differs from llama-quantize's (%v)", err)
	}
	// Every key is carried over, in order, with the file type appended.
	var keys []string
	for _, k := range in.Keys {
		if k != "general.file_type" {
			keys = append(keys, k)
		}
	}
	keys = append(keys, "general.quantization_version", "general.file_type")
	if strings.Join(g.Keys, ",") != strings.Join(keys, ",") {
		t.Errorf("keys\n%v\nwant\n%v", g.Keys, keys)
	}
	for _, k := range in.Keys {
		if k != "general.file_type" && g.Metadata[k].Describe() != in.Metadata[k].Describe() {
			t.Errorf("%s: %s, want %s", k, g.Metadata[k].Describe(), in.Metadata[k].Describe())
		}
	}
}

// writeModel writes a small llama-shaped F32 model with the given values in
// its one matrix.
func writeModel(t *testing.T, path string, typ gguf.GGMLType, matrix []float32) {
	t.Helper()
	var data []byte
	switch typ {
	case gguf.F32:
		data = make([]byte, 4*len(matrix))
		for i, v := range matrix {
			put32(data[4*i:], math.Float32bits(v))
		}
	case gguf.F16:
		data = make([]byte, 2*len(matrix))
		for i, v := range matrix {
			h := half.FromFloat32(v)
			data[2*i], data[2*i+1] = byte(h), byte(h>>8)
		}
	default:
		var err error
		if data, err = quant.Quantize(typ, matrix); err != nil {
			t.Fatal(err)
		}
	}
	meta := []gguf.KV{
		{Key: "general.architecture", Value: gguf.Val("llama")},
		{Key: "llama.block_count", Value: gguf.Val(uint32(1))},
	}
	tensors := []gguf.TensorToWrite{{Name: "blk.0.attn_q.weight", Dims: []uint64{256, uint64(len(matrix) / 256)}, Type: typ, Data: data}}
	if err := gguf.WriteFile(path, meta, tensors); err != nil {
		t.Fatal(err)
	}
}

func put32(b []byte, v uint32) {
	b[0], b[1], b[2], b[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
}

// dirEntries lists a directory's names.
func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

// A failed conversion leaves nothing under the output name, nor a
// temporary file beside it, and says what is wrong.
func TestConvertErrors(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewSource(1))
	x := make([]float32, 256*64)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	good := filepath.Join(dir, "good.gguf")
	writeModel(t, good, gguf.F32, x)
	x[1000] = float32(math.NaN())
	nan := filepath.Join(dir, "nan.gguf")
	writeModel(t, nan, gguf.F32, x)
	x[1000] = 0
	q40 := filepath.Join(dir, "q4_0.gguf")
	writeModel(t, q40, gguf.Q4_0, x)
	garbage := filepath.Join(dir, "garbage.gguf")
	os.WriteFile(garbage, []byte("GGUF\x03\x00\x00\x00garbage"), 0o644)

	outDir := t.TempDir()
	out := filepath.Join(outDir, "out.gguf")
	cases := []struct {
		in   string
		out  string
		ft   quantize.FileType
		want string
	}{
		{nan, out, quantize.MostlyQ4_KM, "row 3: quant: Q4_K: element 232 is NaN"},
		{q40, out, quantize.MostlyQ8_0, "already Q4_0: re-quantising is not supported"},
		{garbage, out, quantize.MostlyQ8_0, "garbage.gguf"},
		{filepath.Join(dir, "missing.gguf"), out, quantize.MostlyQ8_0, "no such file"},
		{good, good, quantize.MostlyQ8_0, "is the input file"},
		{good, filepath.Join(dir, "no", "such", "dir.gguf"), quantize.MostlyQ8_0, "no such file"},
		{good, out, quantize.FileType(19), "cannot write IQ2_XXS"},
	}
	for _, c := range cases {
		_, err := quantize.Convert(c.in, c.out, c.ft, quantize.Options{})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s -> %s (%s): error %v, want one containing %q", filepath.Base(c.in), filepath.Base(c.out), c.ft, err, c.want)
		}
		if names := dirEntries(t, outDir); len(names) != 0 {
			t.Fatalf("%s: left %v behind", filepath.Base(c.in), names)
		}
	}
	// The good file still converts, and the input of a same-type
	// conversion is copied as it is.
	if _, err := quantize.Convert(q40, out, quantize.MostlyQ4_0, quantize.Options{}); err != nil {
		t.Fatalf("Q4_0 to Q4_0: %v", err)
	}
	src, g := open(t, q40), open(t, out)
	si, _ := src.Tensor("blk.0.attn_q.weight")
	ti, _ := g.Tensor("blk.0.attn_q.weight")
	a, _ := src.TensorBytes(si)
	b, _ := g.TensorBytes(ti)
	if ti.Type != gguf.Q4_0 || !bytes.Equal(a, b) {
		t.Error("Q4_0 to Q4_0 changed the tensor")
	}
	if _, err := quantize.Convert(good, out, quantize.MostlyQ4_KM, quantize.Options{Threads: 3}); err != nil {
		t.Fatal(err)
	}
	if names := dirEntries(t, outDir); len(names) != 1 || names[0] != "out.gguf" {
		t.Errorf("output directory holds %v", names)
	}
}

// The result does not depend on how many threads encode it.
func TestThreadsGiveSameBytes(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewSource(2))
	x := make([]float32, 256*300)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	in := filepath.Join(dir, "in.gguf")
	writeModel(t, in, gguf.F16, x)
	var files [][]byte
	for _, threads := range []int{1, 2, 7} {
		out := filepath.Join(dir, "out.gguf")
		if _, err := quantize.Convert(in, out, quantize.MostlyQ5_KM, quantize.Options{Threads: threads}); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(out)
		files = append(files, b)
	}
	if !bytes.Equal(files[0], files[1]) || !bytes.Equal(files[0], files[2]) {
		t.Error("outputs differ between 1, 2 and 7 threads")
	}
}

// llamaQuantizeFixture is testdata/llama-quantize-kjv.json: what llama.cpp's
// llama-quantize wrote for kjv-30m-f16.gguf in file types whose outputs are
// not among the shared model files, as sha256s of the file and of each
// tensor's data (made by testdata/llama_quantize_fixture.go).
type llamaQuantizeFixture struct {
	Files []struct {
		FileType string `json:"file_type"`
		Size     int64  `json:"size"`
		SHA256   string `json:"sha256"`
		Tensors  []struct {
			Name   string `json:"name"`
			Type   string `json:"type"`
			SHA256 string `json:"sha256"`
		} `json:"tensors"`
	} `json:"files"`
}

func sha(b []byte) string { h := sha256.Sum256(b); return hex.EncodeToString(h[:]) }

// IQ4_NL, IQ4_XS and MXFP4_MOE from the kjv-30m f16 file are
// llama-quantize's files byte for byte: the same tensors in the same types
// with the same bytes, and the same metadata (the whole file's sha256).
// kjv-30m has no experts, so its MXFP4_MOE is all Q8_0 but the file type.
func TestMatchesLlamaQuantizeFixture(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("testdata", "llama-quantize-kjv.json"))
	if err != nil {
		t.Fatal(err)
	}
	var fx llamaQuantizeFixture
	if err := json.Unmarshal(raw, &fx); err != nil {
		t.Fatal(err)
	}
	if len(fx.Files) == 0 {
		t.Fatal("the fixture lists no files")
	}
	src := sharedfiles.File(t, "models/kjv-30m-f16.gguf")
	for _, f := range fx.Files {
		t.Run(f.FileType, func(t *testing.T) {
			t.Parallel()
			if testing.Short() && f.FileType != "MXFP4_MOE" {
				t.Skip("IQ4 conversions of kjv-30m take half a minute")
			}
			ft, err := quantize.ParseFileType(f.FileType)
			if err != nil {
				t.Fatal(err)
			}
			out, res := convert(t, src, ft)
			g := open(t, out)
			if len(g.Tensors) != len(f.Tensors) {
				t.Fatalf("%d tensors, llama-quantize wrote %d", len(g.Tensors), len(f.Tensors))
			}
			for i, ti := range g.Tensors {
				want := f.Tensors[i]
				b, err := g.TensorBytes(ti)
				if err != nil {
					t.Fatal(err)
				}
				if ti.Name != want.Name || ti.Type.String() != want.Type {
					t.Fatalf("tensor %d: %s %s, llama-quantize wrote %s %s", i, ti.Name, ti.Type, want.Name, want.Type)
				}
				if sha(b) != want.SHA256 {
					t.Errorf("%s (%s): data differs from llama-quantize's", ti.Name, ti.Type)
				}
			}
			whole, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			if int64(len(whole)) != f.Size || sha(whole) != f.SHA256 {
				t.Errorf("file: %d bytes, sha256 %s; llama-quantize's: %d bytes, %s", len(whole), sha(whole), f.Size, f.SHA256)
			}
			t.Logf("%s: %d tensors %v, identical to llama-quantize's", f.FileType, res.Tensors, res.ByType)
		})
	}
}
