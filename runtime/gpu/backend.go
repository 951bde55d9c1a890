package gpu

import (
	"fmt"
	"runtime"
	"strings"
	"sync"

	"github.com/cogentcore/webgpu/wgpu"
)

// Backend names a WebGPU backend as users spell it (WGLLM_BACKEND, --backend).
type Backend string

// The backends wgllm can ask wgpu-native for.
const (
	BackendAuto   Backend = "" // every primary backend of the platform, best adapter first
	BackendVulkan Backend = "vulkan"
	BackendMetal  Backend = "metal"
	BackendDX12   Backend = "dx12"
	BackendGL     Backend = "gl"
)

// AllBackends lists every backend name accepted, in the order they are shown.
var AllBackends = []Backend{BackendVulkan, BackendMetal, BackendDX12, BackendGL}

// ParseBackend accepts vulkan, metal, dx12 (or d3d12) and gl (or opengl, gles),
// any case; empty or "auto" means every primary backend.
func ParseBackend(s string) (Backend, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "auto":
		return BackendAuto, nil
	case "vulkan", "vk":
		return BackendVulkan, nil
	case "metal", "mtl":
		return BackendMetal, nil
	case "dx12", "d3d12":
		return BackendDX12, nil
	case "gl", "opengl", "gles":
		return BackendGL, nil
	}
	return "", fmt.Errorf("unknown GPU backend %q: want vulkan, metal, dx12 or gl (or auto)", s)
}

func (b Backend) instanceMask() wgpu.InstanceBackend {
	switch b {
	case BackendVulkan:
		return wgpu.InstanceBackendVulkan
	case BackendMetal:
		return wgpu.InstanceBackendMetal
	case BackendDX12:
		return wgpu.InstanceBackendDX12
	case BackendGL:
		return wgpu.InstanceBackendGL
	}
	// Primary backends only: the GL backend adds nothing for compute and
	// probes EGL noisily on headless machines; ask for it by name.
	return wgpu.InstanceBackendPrimary
}

// builtBackends is what the wgpu-native static library of each platform
// contains (read from the libraries' symbols in cogentcore/webgpu v0.23.0:
// wgpu_hal::vulkan, ::gles, ::dx12, ::metal). Asking for any other backend
// fails before wgpu-native is touched.
var builtBackends = map[string][]Backend{
	"linux":   {BackendVulkan, BackendGL},
	"android": {BackendVulkan, BackendGL},
	"windows": {BackendDX12, BackendVulkan, BackendGL},
	"darwin":  {BackendMetal},
	"ios":     {BackendMetal},
}

// BuiltBackends are the backends this binary's wgpu-native has for its OS.
func BuiltBackends() []Backend { return builtBackends[runtime.GOOS] }

func backendBuilt(b Backend) bool {
	for _, x := range BuiltBackends() {
		if x == b {
			return true
		}
	}
	return false
}

func backendNames(bs []Backend) string {
	s := make([]string, len(bs))
	for i, b := range bs {
		s[i] = string(b)
	}
	return strings.Join(s, ", ")
}

// checkBackend rejects a backend this build cannot use, naming what it has.
func checkBackend(b Backend) error {
	if b == BackendAuto || backendBuilt(b) {
		return nil
	}
	for _, x := range AllBackends {
		if x == b {
			return fmt.Errorf("GPU backend %q is not available on %s: this build of wgpu-native has %s", b, runtime.GOOS, backendNames(BuiltBackends()))
		}
	}
	_, err := ParseBackend(string(b))
	return err
}

var (
	instancesMu sync.Mutex
	instances   = map[wgpu.InstanceBackend]*wgpu.Instance{}
)

// getInstance returns the one instance for a backend set, creating it on
// first use. Instances live for the process, as adapters refer to them.
func getInstance(b Backend) (*wgpu.Instance, error) {
	instancesMu.Lock()
	defer instancesMu.Unlock()
	mask := b.instanceMask()
	if inst := instances[mask]; inst != nil {
		return inst, nil
	}
	if len(instances) == 0 {
		// Mesa's window-system code complains on every adapter probe when
		// XDG_RUNTIME_DIR is unset (headless CI); compute needs no display.
		setRuntimeDirIfUnset()
		wgpu.SetLogLevel(wgpu.LogLevelError)
	}
	inst, err := createInstance(mask)
	if err != nil {
		return nil, err
	}
	instances[mask] = inst
	return inst, nil
}

// BackendStatus says whether one backend is built into this binary and how
// many adapters it finds on this machine (Err when it could not look).
type BackendStatus struct {
	Backend  Backend
	Built    bool
	Adapters int
	Err      error
}

// ProbeBackends asks wgpu-native, one backend at a time, how many adapters
// each backend built for this OS finds; backends not built are listed with
// Built false.
func ProbeBackends() []BackendStatus {
	out := make([]BackendStatus, 0, len(AllBackends))
	for _, b := range AllBackends {
		s := BackendStatus{Backend: b, Built: backendBuilt(b)}
		if s.Built {
			if inst, err := getInstance(b); err != nil {
				s.Err = err
			} else {
				adapters := inst.EnumerateAdapters(nil)
				s.Adapters = len(adapters)
				for _, a := range adapters {
					a.Release()
				}
			}
		}
		out = append(out, s)
	}
	return out
}

// NativeVersion is wgpu-native's version (e.g. "22.1.0.5"), or "unknown"
// when the library was built without one.
func NativeVersion() string {
	return formatNativeVersion(uint32(wgpu.GetVersion()))
}

// formatNativeVersion decodes wgpuGetVersion: the version's first four
// dot-separated numbers, one byte each, most significant first.
func formatNativeVersion(v uint32) string {
	if v == 0 {
		return "unknown"
	}
	return fmt.Sprintf("%d.%d.%d.%d", v>>24, v>>16&0xff, v>>8&0xff, v&0xff)
}
