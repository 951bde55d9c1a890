package gpu

import (
	"errors"
	"os"
	"strings"
	"testing"
)

func TestParseImpl(t *testing.T) {
	for in, want := range map[string]Impl{"": ImplAuto, "auto": ImplAuto, "WGPU": ImplWGPU, "wgpu-native": ImplWGPU, " dawn ": ImplDawn} {
		if got, err := ParseImpl(in); err != nil || got != want {
			t.Errorf("ParseImpl(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParseImpl("vulkan"); err == nil || !strings.Contains(err.Error(), "want wgpu, dawn or auto") {
		t.Errorf("ParseImpl(vulkan): %v", err)
	}
}

// Dawn asked for by name from a path that does not exist is a clear error,
// and auto falls back to wgpu-native there.
func TestDawnAbsentIsAnErrorAndAutoFallsBack(t *testing.T) {
	if _, err := DawnLibrary(OptionsFromEnv()); err == nil {
		t.Skip("Dawn is loaded in this process; its absence cannot be tested here")
	}
	missing := Options{Impl: "dawn", DawnLib: t.TempDir() + "/libwebgpu_wrapper.so"}
	if _, _, err := ListAdapters(missing); err == nil || !strings.Contains(err.Error(), "Dawn") {
		t.Fatalf("ListAdapters with a missing Dawn: %v, want an error naming Dawn", err)
	}
	auto := missing
	auto.Impl = "auto"
	descs, _, err := ListAdapters(auto)
	if errors.Is(err, ErrNoAdapter) {
		t.Skipf("no WebGPU adapter: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range descs {
		if d.Impl != ImplWGPU {
			t.Errorf("auto without Dawn gave adapter %q of %s", d.Name, d.Impl)
		}
	}
}

// The device runs on the implementation WGLLM_GPU_IMPL names, so a test run
// for Dawn really tests Dawn; its features are what the adapter offers.
func TestContextRunsTheNamedImpl(t *testing.T) {
	c := open(t)
	want, _ := ParseImpl(os.Getenv("WGLLM_GPU_IMPL"))
	if want != ImplAuto && c.Adapter.Impl != want {
		t.Fatalf("WGLLM_GPU_IMPL=%s, yet the device is on %s", want, c.Adapter.Impl)
	}
	f := c.Features
	t.Logf("%s on %s: %+v", c.Adapter.Impl, c.Adapter.Name, f)
	if f.ShaderF16 != c.HasF16 || f.Timestamps != c.HasTimestamps {
		t.Errorf("Features %+v disagree with HasF16 %v / HasTimestamps %v", f, c.HasF16, c.HasTimestamps)
	}
	if c.Adapter.Impl == ImplWGPU && (f.Subgroups || f.DotI8Packed) {
		t.Errorf("wgpu-native's shader compiler has no subgroups or dot4I8Packed, yet features say %+v", f)
	}
	if f.Subgroups && (f.SubgroupMinSize == 0 || f.SubgroupMaxSize < f.SubgroupMinSize) {
		t.Errorf("subgroups without sizes: %+v", f)
	}
}
