package gpu

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/wgllm/wgllm/runtime/gpu/internal/hal"
)

func open(t *testing.T) *Context {
	t.Helper()
	c, err := New(OptionsFromEnv())
	if errors.Is(err, ErrNoAdapter) {
		t.Skipf("no WebGPU adapter: %v", err)
	}
	if errors.Is(err, ErrDawnAbsent) {
		t.Skipf("skipping the Dawn run: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func TestRankPrefersRealGPUs(t *testing.T) {
	descs := []AdapterDesc{
		{Name: "llvmpipe (LLVM 15)", typ: hal.AdapterCPU},
		{Name: "Intel UHD", typ: hal.AdapterIntegratedGPU},
		{Name: "NVIDIA H100", typ: hal.AdapterDiscreteGPU, backendRank: 1},
		{Name: "NVIDIA H100", typ: hal.AdapterDiscreteGPU},
	}
	best, bestRank := -1, 1<<30
	for i, d := range descs {
		if r := rank(d); r < bestRank {
			best, bestRank = i, r
		}
	}
	if best != 3 {
		t.Fatalf("best adapter %d (%s %s), want the Vulkan discrete GPU", best, descs[best].Name, descs[best].Backend)
	}
	if rank(descs[1]) >= rank(descs[0]) {
		t.Fatal("integrated GPU must rank above software")
	}
}

func TestChooseByIndexNameAndFallback(t *testing.T) {
	descs := []AdapterDesc{
		{Index: 0, Name: "NVIDIA H100", typ: hal.AdapterDiscreteGPU},
		{Index: 1, Name: "llvmpipe (LLVM 15)", typ: hal.AdapterCPU},
	}
	cases := []struct {
		opts    Options
		want    int
		wantErr string
	}{
		{Options{}, 0, ""},
		{Options{Adapter: "1"}, 1, ""},
		{Options{Adapter: "LLVM"}, 1, ""},
		{Options{ForceFallback: true}, 1, ""},
		{Options{Adapter: "7"}, -1, "out of range"},
		{Options{Adapter: "radeon"}, -1, "no adapter name contains"},
	}
	for _, c := range cases {
		got, err := choose(descs, c.opts)
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("%+v: error %v, want %q", c.opts, err, c.wantErr)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%+v: got %d, %v; want %d", c.opts, got, err, c.want)
		}
	}
	if _, err := choose(nil, Options{}); !errors.Is(err, ErrNoAdapter) {
		t.Errorf("no adapters: %v", err)
	}
	if _, err := choose(descs[:1], Options{ForceFallback: true}); err == nil {
		t.Error("force fallback without a software adapter must fail")
	}
}

func TestListAdapters(t *testing.T) {
	descs, chosen, err := ListAdapters(OptionsFromEnv())
	if errors.Is(err, ErrNoAdapter) {
		t.Skipf("no WebGPU adapter: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if chosen < 0 || chosen >= len(descs) {
		t.Fatalf("chosen %d of %d", chosen, len(descs))
	}
	for _, d := range descs {
		if d.Name == "" || d.MaxBinding == 0 || d.MaxInvocs == 0 {
			t.Errorf("adapter %d incompletely described: %+v", d.Index, d)
		}
	}
}

func TestBufferRoundTrip(t *testing.T) {
	c := open(t)
	b, err := c.NewBuffer("rt", 1001) // rounded up to 1004
	if err != nil {
		t.Fatal(err)
	}
	defer b.Destroy()
	if b.Size() != 1004 {
		t.Fatalf("size %d, want 1004", b.Size())
	}
	data := make([]byte, 1001)
	for i := range data {
		data[i] = byte(i*7 + 3)
	}
	if err := b.Write(0, data); err != nil {
		t.Fatal(err)
	}
	got, err := b.Read(8, 992)
	if err != nil {
		t.Fatal(err)
	}
	for i := range got {
		if got[i] != data[8+i] {
			t.Fatalf("byte %d: got %d want %d", 8+i, got[i], data[8+i])
		}
	}
	if err := b.Write(2, data[:4]); err == nil {
		t.Error("unaligned write accepted")
	}
	if err := b.Write(1000, data[:8]); err == nil {
		t.Error("overflowing write accepted")
	}
	if _, err := b.Read(1000, 8); err == nil {
		t.Error("overflowing read accepted")
	}
}

const addShader = `
struct Params { n: u32, add: f32, off: u32, pad: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  if (g.x < p.n) { x[p.off + g.x] += p.add; }
}`

type addParams struct {
	N   uint32
	Add float32
	Off uint32
	Pad uint32
}

type testKey struct{ Name string }

func (k testKey) String() string { return k.Name }

func TestManyDispatchesOneSubmission(t *testing.T) {
	c := open(t)
	p, err := c.Pipeline(testKey{"add"}, func() (PipelineSpec, error) {
		return PipelineSpec{Source: addShader, Storage: []Access{ReadWrite}}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if p2, _ := c.Pipeline(testKey{"add"}, nil); p2 != p {
		t.Fatal("pipeline cache missed")
	}
	const n = 100
	b, _ := c.NewBuffer("x", n*4)
	defer b.Destroy()
	enc, err := c.NewEncoder()
	if err != nil {
		t.Fatal(err)
	}
	// 600 dispatches cross the 256-slot boundary of a uniform chunk; each
	// adds a different amount, so a wrong parameter slot shows in the sum.
	want := 0.0
	for i := 0; i < 600; i++ {
		add := float32(i%7) + 0.5
		want += float64(add)
		if err := enc.Dispatch(p, addParams{N: n, Add: add}, []Arg{WholeBuffer(b)}, 2, 1, 1); err != nil {
			t.Fatal(err)
		}
	}
	if err := enc.SubmitAndWait(); err != nil {
		t.Fatal(err)
	}
	raw, err := b.Read(0, n*4)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if got := math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:])); float64(got) != want {
			t.Fatalf("x[%d] = %v, want %v", i, got, want)
		}
	}
}

func TestErrorsAreGoErrors(t *testing.T) {
	c := open(t)
	_, err := c.Pipeline(testKey{"broken"}, func() (PipelineSpec, error) {
		return PipelineSpec{Source: "fn main( {", Storage: []Access{ReadWrite}}, nil
	})
	if err == nil || !strings.Contains(err.Error(), "broken") {
		t.Fatalf("invalid WGSL: %v", err)
	}
	p, err := c.Pipeline(testKey{"add"}, func() (PipelineSpec, error) {
		return PipelineSpec{Source: addShader, Storage: []Access{ReadWrite}}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := c.NewBuffer("x", 64)
	defer b.Destroy()
	enc, _ := c.NewEncoder()
	defer enc.Release()
	if err := enc.Dispatch(p, addParams{}, nil, 1, 1, 1); err == nil || !strings.Contains(err.Error(), "add") {
		t.Errorf("missing binding: %v", err)
	}
	if err := enc.Dispatch(p, addParams{}, []Arg{WholeBuffer(b)}, 1<<20, 1, 1); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Errorf("too many workgroups: %v", err)
	}
	if err := enc.Dispatch(p, addParams{}, []Arg{{Buf: b, Offset: 32, Size: 64}}, 1, 1, 1); err == nil {
		t.Error("binding past the end accepted")
	}
	// A validation error raised by wgpu itself (a binding offset that is
	// not a multiple of the storage alignment) must come back as an error
	// that names the op, not abort the process.
	c.Debug = true
	defer func() { c.Debug = false }()
	big, _ := c.NewBuffer("big", 4096)
	defer big.Destroy()
	err = enc.Dispatch(p, addParams{N: 1}, []Arg{{Buf: big, Offset: 4, Size: 64}}, 1, 1, 1)
	if err == nil || !strings.Contains(err.Error(), "add") {
		t.Errorf("misaligned binding offset: %v", err)
	}
}

func TestWindowForBuffersOverTheBindingLimit(t *testing.T) {
	c := open(t)
	limit := c.MaxBinding()
	if limit > 512<<20 {
		t.Skipf("binding limit %d is too large to exceed cheaply here", limit)
	}
	b, err := c.NewBuffer("huge", limit+(8<<20))
	if err != nil {
		t.Skipf("cannot allocate %d bytes: %v", limit+(8<<20), err)
	}
	defer b.Destroy()
	if _, _, _, err := b.Window(0, limit+4); !errors.Is(err, ErrBindingTooLarge) || !strings.Contains(err.Error(), fmt.Sprint(limit)) {
		t.Fatalf("over-limit range: %v (want ErrBindingTooLarge naming %d)", err, limit)
	}
	off, size, inner, err := b.Window(limit+100, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if off%256 != 0 || off+inner != limit+100 || size < inner+1000 || size > limit || off+size > b.Size() {
		t.Fatalf("window off %d size %d inner %d", off, size, inner)
	}
	small, _ := c.NewBuffer("small", 1024)
	defer small.Destroy()
	if off, size, inner, _ := small.Window(512, 16); off != 0 || size != 1024 || inner != 512 {
		t.Fatalf("small buffer window %d %d %d: want the whole buffer", off, size, inner)
	}
}

func TestDeviceLossIsAnError(t *testing.T) {
	c := open(t)
	c.InjectDeviceLoss()
	if c.Err() == nil {
		t.Fatal("no error after device loss")
	}
	if _, err := c.NewBuffer("after", 16); err == nil {
		t.Error("buffer created on a lost device")
	}
	if _, err := c.NewEncoder(); err == nil {
		t.Error("encoder created on a lost device")
	}
}

func TestGrid(t *testing.T) {
	c := &Context{}
	c.Limits.MaxComputeWorkgroupsPerDimension = 65535
	for _, n := range []uint32{1, 65535, 65536, 1 << 24} {
		x, y := c.Grid(n)
		if x > 65535 || y > 65535 || uint64(x)*uint64(y) < uint64(n) {
			t.Errorf("Grid(%d) = %d x %d", n, x, y)
		}
	}
}

func TestReadbackInSameSubmission(t *testing.T) {
	c := open(t)
	p, err := c.Pipeline(testKey{"add"}, func() (PipelineSpec, error) {
		return PipelineSpec{Source: addShader, Storage: []Access{ReadWrite}}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := c.NewBuffer("x", 64)
	defer b.Destroy()
	rb, err := c.NewReadback(16)
	if err != nil {
		t.Fatal(err)
	}
	defer rb.Release()
	for step := 1; step <= 3; step++ {
		enc, _ := c.NewEncoder()
		if err := enc.Dispatch(p, addParams{N: 16, Add: 1.5, Off: 0}, []Arg{WholeBuffer(b)}, 1, 1, 1); err != nil {
			t.Fatal(err)
		}
		if err := enc.CopyToHost(rb, b, 8, 16); err != nil {
			t.Fatal(err)
		}
		if err := enc.Submit(); err != nil {
			t.Fatal(err)
		}
		out := make([]byte, 16)
		if err := rb.Read(out); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 4; i++ {
			if got := math.Float32frombits(binary.LittleEndian.Uint32(out[4*i:])); got != 1.5*float32(step) {
				t.Fatalf("step %d element %d: %v", step, i, got)
			}
		}
	}
	enc, _ := c.NewEncoder()
	defer enc.Release()
	if err := enc.CopyToHost(rb, b, 0, 32); err == nil {
		t.Error("readback larger than its staging buffer accepted")
	}
}

// BenchmarkRecordDispatch is the CPU cost of recording one dispatch (the
// part of a decode step's time the GPU does not see): parameters, bind
// group lookup, pipeline and bind calls. Nothing is submitted.
func BenchmarkRecordDispatch(b *testing.B) {
	c, err := New(OptionsFromEnv())
	if errors.Is(err, ErrNoAdapter) {
		b.Skipf("no WebGPU adapter: %v", err)
	}
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	p, err := c.Pipeline(testKey{"add"}, func() (PipelineSpec, error) {
		return PipelineSpec{Source: addShader, Storage: []Access{ReadWrite}}, nil
	})
	if err != nil {
		b.Fatal(err)
	}
	buf, _ := c.NewBuffer("x", 1024)
	defer buf.Destroy()
	args := []Arg{WholeBuffer(buf)}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; {
		enc, err := c.NewEncoder()
		if err != nil {
			b.Fatal(err)
		}
		for k := 0; k < 256 && i < b.N; k, i = k+1, i+1 {
			if err := enc.Dispatch(p, addParams{N: 16, Add: 1, Off: uint32(k)}, args, 1, 1, 1); err != nil {
				b.Fatal(err)
			}
		}
		enc.Release()
	}
}
