//go:build (linux || darwin) && cgo

// Package dawn is runtime/gpu's second WebGPU implementation: Dawn's C API
// (webgpu.h of include/, the ABI of Dawn main 2025-06-10 that the npm
// package bun-webgpu-linux-x64@0.1.7 ships as libwebgpu_wrapper.so),
// opened with dlopen() at run time. It implements internal/hal.
package dawn

/*
#cgo LDFLAGS: -ldl
#include "shim.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"unsafe"

	"github.com/wgllm/wgllm/runtime/gpu/internal/hal"
)

// LibName is the file name of the library in bun-webgpu's npm package.
const LibName = "libwebgpu_wrapper.so"

var (
	loadMu   sync.Mutex
	loaded   string // the path that loaded
	loadErr  error
	instance C.WGPUInstance
)

// Candidates are the paths Load tries, in order: explicit (when set), then
// beside the executable, then third_party/dawn/ under the working directory.
func Candidates(explicit string) []string {
	if explicit != "" {
		return []string{explicit}
	}
	var out []string
	if exe, err := os.Executable(); err == nil {
		out = append(out, filepath.Join(filepath.Dir(exe), LibName))
	}
	return append(out, filepath.Join("third_party", "dawn", LibName))
}

// Load opens Dawn's library (once per process: a second Dawn would load a
// second copy of its C++ runtime) and creates the instance. It returns the
// path that loaded.
func Load(explicit string) (string, error) {
	loadMu.Lock()
	defer loadMu.Unlock()
	if loaded != "" {
		return loaded, nil
	}
	var tried []string
	for _, p := range Candidates(explicit) {
		if _, err := os.Stat(p); err != nil {
			tried = append(tried, p+": not found")
			continue
		}
		cp := C.CString(p)
		msg := C.wgllm_dawn_open(cp)
		C.free(unsafe.Pointer(cp))
		if msg != nil {
			// A library that is there but does not load is an error of its
			// own, not a reason to try the next path.
			return "", fmt.Errorf("gpu: loading Dawn from %s: %s", p, C.GoString(msg))
		}
		var inst C.WGPUInstance
		captureStderr(func() { inst = C.wgllm_create_instance() })
		if inst == nil {
			return "", fmt.Errorf("gpu: Dawn (%s) could not create an instance", p)
		}
		if abs, err := filepath.Abs(p); err == nil {
			p = abs
		}
		instance, loaded = inst, p
		return p, nil
	}
	return "", fmt.Errorf("gpu: %w: %s not found (tried %s); set WGLLM_DAWN_LIB or gpu.dawn_lib, or run `make` to fetch it into third_party/dawn/",
		hal.ErrDawnAbsent, LibName, strings.Join(tried, ", "))
}

// Waiting on a map or on work done: Dawn may hold commands of its own
// (the map's transitions, queued writes) unsubmitted until the device
// ticks, and its timed WaitAny then sleeps out the whole timeout (seen on
// lavapipe as ~0.5 s per decode step). So device waits tick first and again
// after each timeout, and the timeouts start short and double.
const (
	minWaitNS = 1_000_000
	maxWaitNS = 100_000_000
)

// wait blocks until r's callback ran, ticking dev (when not nil) before
// each WaitAny. lost, when not nil, ends the wait early once it reports an
// error.
func wait(f C.WGPUFuture, r *C.wgllm_result, dev C.WGPUDevice, lost func() error) error {
	timeout := C.uint64_t(minWaitNS)
	for r.done == 0 {
		if dev != nil {
			C.wgllm_DeviceTick(dev)
		}
		st := C.wgllm_wait(instance, f, timeout)
		if st == C.WGPUWaitStatus_Error {
			return errors.New("gpu: Dawn: waiting on a future failed")
		}
		if r.done == 0 && lost != nil {
			if err := lost(); err != nil {
				return err
			}
		}
		timeout = min(2*timeout, maxWaitNS)
	}
	return nil
}

func message(r *C.wgllm_result) string {
	if r.message == nil {
		return ""
	}
	return C.GoString(r.message)
}

// Adapters asks Dawn for its adapter on a backend ("" for the platform's
// primary one: Vulkan on Linux, Metal on macOS); Dawn's C API returns one.
// Dawn's Null backend (no GPU at all, what Dawn offers when the driver is
// too old) is never an adapter.
func Adapters(backend string, fallback bool) ([]hal.Adapter, error) {
	if backend == "" {
		backend = "vulkan"
		if runtime.GOOS == "darwin" {
			backend = "metal"
		}
	}
	var bt C.WGPUBackendType
	switch backend {
	case "vulkan":
		bt = C.WGPUBackendType_Vulkan
	case "metal":
		bt = C.WGPUBackendType_Metal
	case "dx12":
		bt = C.WGPUBackendType_D3D12
	case "gl":
		bt = C.WGPUBackendType_OpenGL
	default:
		return nil, fmt.Errorf("gpu: Dawn has no backend %q", backend)
	}
	r := C.wgllm_result_new()
	defer C.wgllm_result_free(r)
	var fb C.int
	if fallback {
		fb = 1
	}
	var err error
	captureStderr(func() { // Dawn initialises its adapters here
		f := C.wgllm_request_adapter(instance, bt, fb, r)
		err = wait(f, r, nil, nil)
	})
	if err != nil {
		return nil, err
	}
	if r.status != C.WGPURequestAdapterStatus_Success || r.object == nil {
		// "No supported adapters" is no adapter, not a failure.
		return nil, nil
	}
	a := &adapter{raw: C.WGPUAdapter(r.object)}
	if a.Info().Backend == backendNames[C.WGPUBackendType_Null] {
		a.Release()
		return nil, nil
	}
	return []hal.Adapter{a}, nil
}

type adapter struct{ raw C.WGPUAdapter }

func (a *adapter) Release() { C.wgllm_AdapterRelease(a.raw) }

// backendNames spell backends as the wgpu binding does.
var backendNames = map[C.int]string{
	C.WGPUBackendType_Null: "null", C.WGPUBackendType_WebGPU: "web-gpu", C.WGPUBackendType_D3D11: "d3d11",
	C.WGPUBackendType_D3D12: "d3d12", C.WGPUBackendType_Metal: "metal", C.WGPUBackendType_Vulkan: "vulkan",
	C.WGPUBackendType_OpenGL: "open-gl", C.WGPUBackendType_OpenGLES: "open-gles",
}

func (a *adapter) Info() hal.AdapterInfo {
	var in C.wgllm_adapter_info
	C.wgllm_adapter_info_get(instance, a.raw, &in)
	out := hal.AdapterInfo{
		Name:    C.GoString(&in.name[0]),
		Vendor:  C.GoString(&in.vendor[0]),
		Driver:  C.GoString(&in.driver[0]),
		Backend: backendNames[in.backend],
		Limits:  halLimits(&in.limits),
		Features: hal.Features{
			ShaderF16: in.f16 != 0, Subgroups: in.subgroups != 0, Timestamps: in.timestamps != 0,
			SubgroupMatrix: in.sgmatrix != 0, DotI8Packed: in.dot4i8 != 0,
			SubgroupMinSize: uint32(in.sg_min), SubgroupMaxSize: uint32(in.sg_max),
		},
	}
	switch in._type {
	case C.WGPUAdapterType_DiscreteGPU:
		out.Type = hal.AdapterDiscreteGPU
	case C.WGPUAdapterType_IntegratedGPU:
		out.Type = hal.AdapterIntegratedGPU
	case C.WGPUAdapterType_CPU:
		out.Type = hal.AdapterCPU
	}
	switch in.backend {
	case C.WGPUBackendType_Vulkan, C.WGPUBackendType_Metal, C.WGPUBackendType_D3D12:
	default:
		out.BackendRank = 1
	}
	return out
}

func halLimits(l *C.WGPULimits) hal.Limits {
	return hal.Limits{
		MaxStorageBufferBindingSize:       uint64(l.maxStorageBufferBindingSize),
		MaxBufferSize:                     uint64(l.maxBufferSize),
		MaxUniformBufferBindingSize:       uint64(l.maxUniformBufferBindingSize),
		MaxComputeWorkgroupStorageSize:    uint32(l.maxComputeWorkgroupStorageSize),
		MaxComputeInvocationsPerWorkgroup: uint32(l.maxComputeInvocationsPerWorkgroup),
		MaxComputeWorkgroupSizeX:          uint32(l.maxComputeWorkgroupSizeX),
		MaxComputeWorkgroupSizeY:          uint32(l.maxComputeWorkgroupSizeY),
		MaxComputeWorkgroupSizeZ:          uint32(l.maxComputeWorkgroupSizeZ),
		MaxComputeWorkgroupsPerDimension:  uint32(l.maxComputeWorkgroupsPerDimension),
		MaxStorageBuffersPerShaderStage:   uint32(l.maxStorageBuffersPerShaderStage),
		MaxBindGroups:                     uint32(l.maxBindGroups),
		MinStorageBufferOffsetAlignment:   uint32(l.minStorageBufferOffsetAlignment),
		MinUniformBufferOffsetAlignment:   uint32(l.minUniformBufferOffsetAlignment),
	}
}

// Device callbacks find their device's Events through a token.
var (
	eventsMu  sync.Mutex
	events    = map[uintptr]hal.Events{}
	nextToken uintptr
)

func lookup(token uintptr) hal.Events {
	eventsMu.Lock()
	defer eventsMu.Unlock()
	return events[token]
}

var errorTypes = map[C.int]string{
	C.WGPUErrorType_Validation: "validation", C.WGPUErrorType_OutOfMemory: "out-of-memory",
	C.WGPUErrorType_Internal: "internal", C.WGPUErrorType_Unknown: "unknown",
}

var lostReasons = map[C.int]string{
	C.WGPUDeviceLostReason_Unknown: "unknown", C.WGPUDeviceLostReason_Destroyed: "destroyed",
	C.WGPUDeviceLostReason_CallbackCancelled: "callback cancelled", C.WGPUDeviceLostReason_FailedCreation: "failed creation",
}

//export wgllmDawnDeviceLost
func wgllmDawnDeviceLost(reason C.int, msg *C.char, token C.uintptr_t) {
	if ev := lookup(uintptr(token)); ev != nil {
		ev.Lost(fmt.Errorf("gpu: device lost (%s): %s", lostReasons[reason], C.GoString(msg)))
	}
}

//export wgllmDawnUncapturedError
func wgllmDawnUncapturedError(typ C.int, msg *C.char, token C.uintptr_t) {
	if ev := lookup(uintptr(token)); ev != nil {
		ev.Uncaptured(fmt.Errorf("gpu: %s error: %s", errorTypes[typ], C.GoString(msg)))
	}
}

func b2i(b bool) C.int {
	if b {
		return 1
	}
	return 0
}

func (a *adapter) RequestDevice(req hal.DeviceRequest, ev hal.Events) (hal.Device, error) {
	eventsMu.Lock()
	nextToken++
	token := nextToken
	events[token] = ev
	eventsMu.Unlock()
	r := C.wgllm_device_req{
		max_binding:     C.uint64_t(req.Limits.MaxStorageBufferBindingSize),
		max_buffer:      C.uint64_t(req.Limits.MaxBufferSize),
		wg_storage:      C.uint32_t(req.Limits.MaxComputeWorkgroupStorageSize),
		invocations:     C.uint32_t(req.Limits.MaxComputeInvocationsPerWorkgroup),
		wg_x:            C.uint32_t(req.Limits.MaxComputeWorkgroupSizeX),
		wg_y:            C.uint32_t(req.Limits.MaxComputeWorkgroupSizeY),
		storage_buffers: C.uint32_t(req.Limits.MaxStorageBuffersPerShaderStage),
		f16:             b2i(req.ShaderF16),
		subgroups:       b2i(req.Subgroups),
		timestamps:      b2i(req.Timestamps),
	}
	res := C.wgllm_result_new()
	defer C.wgllm_result_free(res)
	f := C.wgllm_request_device(a.raw, r, C.uintptr_t(token), res)
	err := wait(f, res, nil, nil)
	if err == nil && (res.status != C.WGPURequestDeviceStatus_Success || res.object == nil) {
		err = fmt.Errorf("the adapter refused the device request: %s", message(res))
	}
	if err != nil {
		eventsMu.Lock()
		delete(events, token)
		eventsMu.Unlock()
		return nil, err
	}
	d := C.WGPUDevice(res.object)
	return &device{raw: d, queue: C.wgllm_DeviceGetQueue(d), ev: ev, token: token}, nil
}
