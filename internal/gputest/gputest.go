// Package gputest holds what every GPU test needs: a shared device (skipping
// only when no adapter exists), seeded random inputs, poisoned outputs and a
// comparison against float64 references that reports the worst element.
package gputest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand"
	"os"
	"sync"
	"testing"

	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/runtime/gpu"
)

var (
	once    sync.Once
	shared  *gpu.Context
	openErr error
)

// Ctx returns the package's shared GPU context in debug mode (every dispatch
// validated on its own), or skips the test when no WebGPU adapter exists.
func Ctx(t testing.TB) *gpu.Context {
	t.Helper()
	once.Do(func() {
		shared, openErr = gpu.New(gpu.OptionsFromEnv())
		if shared != nil {
			shared.Debug = true
		}
	})
	if errors.Is(openErr, gpu.ErrNoAdapter) {
		t.Skipf("no WebGPU adapter: %v", openErr)
	}
	if errors.Is(openErr, gpu.ErrDawnAbsent) {
		t.Skipf("skipping the Dawn run: %v", openErr)
	}
	if openErr != nil {
		t.Fatalf("opening GPU: %v", openErr)
	}
	return shared
}

// BenchCtx is Ctx for benchmarks: per-dispatch validation is off until the
// benchmark ends (it would dominate the timings), and a heavy benchmark
// skips on a software adapter unless WGLLM_BENCH_FULL is set.
func BenchCtx(b *testing.B, heavy bool) *gpu.Context {
	b.Helper()
	ctx := Ctx(b)
	if heavy && ctx.Software() && os.Getenv("WGLLM_BENCH_FULL") == "" {
		b.Skipf("software adapter %q is far too slow for this size (set WGLLM_BENCH_FULL=1 to run anyway)", ctx.Adapter.Name)
	}
	debug := ctx.Debug
	ctx.Debug = false
	b.Cleanup(func() { ctx.Debug = debug })
	return ctx
}

// Rand returns n values uniform in [-scale, scale], none exactly zero.
func Rand(rng *rand.Rand, n int, scale float64) []float32 {
	out := make([]float32, n)
	for i := range out {
		v := 0.0
		for v == 0 {
			v = (rng.Float64()*2 - 1) * scale
		}
		out[i] = float32(v)
	}
	return out
}

// F64 widens values for the references.
func F64(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

// Poison fills a tensor's memory with NaN so unwritten outputs are caught.
func Poison(t testing.TB, x ops.Tensor) {
	t.Helper()
	var raw []byte
	switch {
	case x.DType.Quantized():
		// Every byte 0x7e: f16 scales (of ggml blocks or a q8_0 KV pool's
		// plane) read 0x7e7e, a NaN, so every value decodes to NaN.
		raw = make([]byte, x.Bytes())
		for i := range raw {
			raw[i] = 0x7e
		}
		if err := x.Buf.Write(uint64(x.Off/x.DType.BlockSize()*x.DType.BlockBytes()), raw); err != nil {
			t.Fatalf("poison %s: %v", x, err)
		}
		return
	case x.DType == ops.F16:
		raw = make([]byte, 2*x.Len())
		for i := 0; i < x.Len(); i++ {
			binary.LittleEndian.PutUint16(raw[2*i:], 0x7e00)
		}
	default:
		raw = make([]byte, 4*x.Len())
		for i := 0; i < x.Len(); i++ {
			binary.LittleEndian.PutUint32(raw[4*i:], 0x7fc00000)
		}
	}
	if err := x.Buf.Write(uint64(x.Off*x.DType.Size()), raw); err != nil {
		t.Fatalf("poison %s: %v", x, err)
	}
}

// Tol is a per-dtype tolerance: relative L2 error over the whole output and
// elementwise |got-want| <= Atol + Rtol*|want|.
type Tol struct {
	RelL2, Atol, Rtol float64
}

var (
	// TolF32 is for f32 storage with f32 accumulation.
	TolF32 = Tol{RelL2: 1e-5, Atol: 1e-5, Rtol: 1e-4}
	// TolF16 is for f16 storage somewhere on the path, f32 accumulation.
	TolF16 = Tol{RelL2: 1e-3, Atol: 1e-3, Rtol: 1e-2}
)

// TolDot is TolF32 for outputs that are f32 sums of k products of O(1)
// values: rounding error of such a sum grows like sqrt(k) times the size of
// its terms, not of its result, so outputs that cancel to near zero get an
// absolute allowance of 1e-5*sqrt(k/64) (relative L2 stays 1e-5).
func TolDot(k int) Tol {
	t := TolF32
	t.Atol = math.Max(t.Atol, 1e-5*math.Sqrt(float64(k)/64))
	return t
}

// Check compares got with want; every element must be finite (written).
func Check(t testing.TB, name string, seed int64, got []float32, want []float64, tol Tol) {
	t.Helper()
	if err := Compare(got, want, tol); err != nil {
		t.Errorf("%s (seed %d): %v", name, seed, err)
	}
}

// Compare is Check as an error, for callers that aggregate.
func Compare(got []float32, want []float64, tol Tol) error {
	if len(got) != len(want) {
		return fmt.Errorf("got %d values, want %d", len(got), len(want))
	}
	var num, den float64
	misses, worst := 0, -1
	worstExcess := 0.0
	for i := range got {
		g, w := float64(got[i]), want[i]
		if math.IsNaN(g) || math.IsInf(g, 0) {
			if !(math.IsInf(w, 0) && g == w) {
				return fmt.Errorf("element %d is %v (unwritten or overflow), want %v", i, g, w)
			}
			continue
		}
		d := g - w
		num += d * d
		den += w * w
		bound := tol.Atol + tol.Rtol*math.Abs(w)
		if math.Abs(d) > bound {
			misses++
			if ex := math.Abs(d) / bound; ex > worstExcess {
				worstExcess, worst = ex, i
			}
		}
	}
	rel := 0.0
	if den > 0 {
		rel = math.Sqrt(num / den)
	} else {
		rel = math.Sqrt(num)
	}
	if rel > tol.RelL2 || misses > 0 {
		msg := fmt.Sprintf("relative L2 error %.3g (limit %.3g), %d of %d elements outside %.3g+%.3g*|want|",
			rel, tol.RelL2, misses, len(got), tol.Atol, tol.Rtol)
		if worst >= 0 {
			msg += fmt.Sprintf("; worst index %d: got %.9g want %.9g", worst, got[worst], want[worst])
		}
		return errors.New(msg)
	}
	return nil
}
