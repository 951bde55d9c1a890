package gpu

import (
	"encoding/binary"
	"errors"
	"math"
	"runtime"
	"strings"
	"testing"
)

func TestParseBackend(t *testing.T) {
	cases := map[string]Backend{
		"": BackendAuto, "auto": BackendAuto, "Vulkan": BackendVulkan, " vk ": BackendVulkan,
		"metal": BackendMetal, "DX12": BackendDX12, "d3d12": BackendDX12, "gl": BackendGL, "GLES": BackendGL,
	}
	for in, want := range cases {
		got, err := ParseBackend(in)
		if err != nil || got != want {
			t.Errorf("ParseBackend(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"dx11", "webgpu", "cuda", "vulkan,gl"} {
		if _, err := ParseBackend(bad); err == nil || !strings.Contains(err.Error(), "want vulkan, metal, dx12 or gl") {
			t.Errorf("ParseBackend(%q): %v, want an error listing the backends", bad, err)
		}
	}
}

func TestFormatNativeVersion(t *testing.T) {
	for v, want := range map[uint32]string{0: "unknown", 0x16010005: "22.1.0.5", 0x04010000: "4.1.0.0"} {
		if got := formatNativeVersion(v); got != want {
			t.Errorf("formatNativeVersion(%#x) = %q, want %q", v, got, want)
		}
	}
}

// A backend the platform's wgpu-native lacks (metal on Linux) or a name
// that is no backend is refused with an error naming what exists, before
// wgpu-native is asked; this runs with or without a GPU.
func TestUnavailableBackendIsAClearError(t *testing.T) {
	built := BuiltBackends()
	if len(built) == 0 {
		t.Fatalf("no backends listed for %s", runtime.GOOS)
	}
	checked := 0
	for _, b := range AllBackends {
		if backendBuilt(b) {
			continue
		}
		checked++
		if _, _, err := ListAdapters(Options{Backend: string(b)}); err == nil ||
			!strings.Contains(err.Error(), "not available on "+runtime.GOOS) || !strings.Contains(err.Error(), string(built[0])) {
			t.Errorf("ListAdapters with backend %s: %v", b, err)
		}
		if c, err := New(Options{Backend: string(b)}); err == nil {
			c.Close()
			t.Errorf("New with backend %s succeeded on %s", b, runtime.GOOS)
		}
	}
	if checked == 0 {
		t.Errorf("every backend is built for %s; the table is wrong", runtime.GOOS)
	}
	if _, err := New(Options{Backend: "cuda"}); err == nil || !strings.Contains(err.Error(), `unknown GPU backend "cuda"`) {
		t.Errorf("New with backend cuda: %v", err)
	}
}

// Every backend built for this OS either finds adapters, and then a device
// opened on it runs a dispatch, or finds none, and then asking for it is an
// error that says so.
func TestEachBuiltBackend(t *testing.T) {
	if _, _, err := ListAdapters(Options{}); errors.Is(err, ErrNoAdapter) {
		t.Skipf("no WebGPU adapter: %v", err)
	}
	for _, st := range ProbeBackends() {
		if !st.Built {
			continue
		}
		t.Run(string(st.Backend), func(t *testing.T) {
			if st.Err != nil {
				t.Fatal(st.Err)
			}
			c, err := New(Options{Backend: string(st.Backend), Impl: string(ImplWGPU)})
			if st.Adapters == 0 {
				if err == nil || !strings.Contains(err.Error(), "no WebGPU adapter on the "+string(st.Backend)) {
					t.Fatalf("no %s adapter, yet New says %v", st.Backend, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if got := c.Adapter.Backend; !matchesBackend(st.Backend, got) {
				t.Fatalf("asked for %s, got an adapter on %s", st.Backend, got)
			}
			addOnce(t, c)
		})
	}
}

func matchesBackend(b Backend, adapterBackend string) bool {
	switch b {
	case BackendGL:
		return strings.HasPrefix(adapterBackend, "open-gl")
	case BackendDX12:
		return adapterBackend == "d3d12"
	}
	return adapterBackend == string(b)
}

// addOnce adds 1.5 to 64 floats on the GPU and checks them.
func addOnce(t *testing.T, c *Context) {
	t.Helper()
	p, err := c.Pipeline(testKey{"add"}, func() (PipelineSpec, error) {
		return PipelineSpec{Source: addShader, Storage: []Access{ReadWrite}}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	const n = 64
	b, err := c.NewBuffer("x", n*4)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Destroy()
	enc, err := c.NewEncoder()
	if err != nil {
		t.Fatal(err)
	}
	if err := enc.Dispatch(p, addParams{N: n, Add: 1.5}, []Arg{WholeBuffer(b)}, 1, 1, 1); err != nil {
		t.Fatal(err)
	}
	if err := enc.SubmitAndWait(); err != nil {
		t.Fatal(err)
	}
	raw, err := b.Read(0, n*4)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if got := math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:])); got != 1.5 {
			t.Fatalf("x[%d] = %v after adding 1.5 to zero", i, got)
		}
	}
}

// The binding's CreateInstance left fields of the instance extras
// uninitialised, and a second instance then made wgpu-native panic at
// random; instances from the shim must come up every time.
func TestRepeatedInstances(t *testing.T) {
	for i := 0; i < 8; i++ {
		for _, b := range append([]Backend{BackendAuto}, BuiltBackends()...) {
			inst, err := createInstance(b.instanceMask())
			if err != nil {
				t.Fatalf("instance %d for %q: %v", i, b, err)
			}
			inst.Release()
		}
	}
}
