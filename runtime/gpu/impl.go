package gpu

import (
	"fmt"
	"strings"

	"github.com/wgllm/wgllm/runtime/gpu/internal/hal"
)

// Impl names a WebGPU implementation as users spell it (WGLLM_GPU_IMPL,
// --gpu-impl, gpu.impl).
type Impl string

const (
	// ImplAuto is Dawn when its library loads and finds an adapter, else wgpu.
	ImplAuto Impl = "auto"
	// ImplWGPU is wgpu-native, linked into the binary (cogentcore/webgpu);
	// in the browser, the page's WebGPU through the same binding.
	ImplWGPU Impl = "wgpu"
	// ImplDawn is Dawn's C API (webgpu.h), loaded at run time from
	// libwebgpu_wrapper.so (see Options.DawnLib).
	ImplDawn Impl = "dawn"
)

// ErrDawnAbsent is wrapped by errors that say Dawn's library is not
// installed (or this build cannot load one): a test run for Dawn skips on it.
var ErrDawnAbsent = hal.ErrDawnAbsent

// Limits are a device's limits, by their WebGPU names.
type Limits = hal.Limits

// Features are a device's optional capabilities that kernels specialise on.
type Features = hal.Features

// ParseImpl accepts wgpu (or wgpu-native), dawn and auto (or empty), any case.
func ParseImpl(s string) (Impl, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "auto":
		return ImplAuto, nil
	case "wgpu", "wgpu-native":
		return ImplWGPU, nil
	case "dawn":
		return ImplDawn, nil
	}
	return "", fmt.Errorf("unknown GPU implementation %q: want wgpu, dawn or auto", s)
}

// implAdapters lists the adapters of the implementation opts choose, and
// which implementation that is.
func implAdapters(opts Options, b Backend) (Impl, []hal.Adapter, error) {
	impl, err := ParseImpl(opts.Impl)
	if err != nil {
		return "", nil, err
	}
	switch impl {
	case ImplDawn:
		as, err := dawnAdapters(opts, b)
		if err != nil {
			return "", nil, err
		}
		if len(as) == 0 {
			return "", nil, fmt.Errorf("%w: Dawn finds none (it rejects old drivers, e.g. lavapipe before Mesa 25; wgpu-native may still work: --gpu-impl wgpu)", ErrNoAdapter)
		}
		return ImplDawn, as, nil
	case ImplAuto:
		// Dawn where it is present and finds an adapter (it rejects old
		// drivers, e.g. Mesa before 25), else wgpu-native.
		if as, err := dawnAdapters(opts, b); err == nil && len(as) > 0 {
			return ImplDawn, as, nil
		}
	}
	as, err := wgpuAdapters(b)
	return ImplWGPU, as, err
}

// wgpuAdapters lists wgpu-native's adapters on a backend (all primary ones
// for BackendAuto).
func wgpuAdapters(b Backend) ([]hal.Adapter, error) {
	if err := checkBackend(b); err != nil {
		return nil, err
	}
	inst, err := getInstance(b)
	if err != nil {
		return nil, err
	}
	raws := inst.EnumerateAdapters(nil)
	out := make([]hal.Adapter, len(raws))
	for i, a := range raws {
		out[i] = wgpuAdapter{a}
	}
	return out, nil
}
