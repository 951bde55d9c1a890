//go:build !js

package gpu

// This file is a small cgo shim over wgpu-native, for what the Go binding
// does not expose safely: a device-lost callback (the binding's passes a Go
// pointer inside C memory, which cgocheck rejects), buffer mapping and
// queue work-done callbacks (the binding hands C the address of a Go
// variable that nothing keeps alive until the callback runs, so under GC
// pressure the callback reads a freed handle and panics), and an uncaptured-error
// callback (without one wgpu-native aborts the process on any error raised
// outside an error scope, e.g. in queue submission). The headers in include/
// are wgpu-native's own, matching the static library the binding links.

/*
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "include/wgpu.h"

extern void wgllmDeviceLost(WGPUDeviceLostReason reason, char *message, uintptr_t token);
extern void wgllmUncapturedError(WGPUErrorType type, char *message, uintptr_t token);

static void wgllm_lost_cb(WGPUDeviceLostReason reason, char const *message, void *userdata) {
	wgllmDeviceLost(reason, (char *)message, (uintptr_t)userdata);
}
static void wgllm_error_cb(WGPUErrorType type, char const *message, void *userdata) {
	wgllmUncapturedError(type, (char *)message, (uintptr_t)userdata);
}
static void wgllm_device_cb(WGPURequestDeviceStatus status, WGPUDevice device, char const *message, void *userdata) {
	if (status == WGPURequestDeviceStatus_Success) *(WGPUDevice *)userdata = device;
}

static void wgllm_destroy_device(WGPUDevice dev) { wgpuDeviceDestroy(dev); }

// A compute pass that writes GPU timestamps at its start and end (queries
// 2i and 2i+1), for profiling: the binding does not expose timestampWrites.
// The pass holds a device reference, as the binding's own passes do (its
// Release drops one).
static WGPUComputePassEncoder wgllm_begin_timed_pass(WGPUCommandEncoder enc, WGPUDevice dev, WGPUQuerySet qs, uint32_t i) {
	WGPUComputePassTimestampWrites tw = {qs, 2 * i, 2 * i + 1};
	WGPUComputePassDescriptor d;
	memset(&d, 0, sizeof d);
	d.timestampWrites = &tw;
	WGPUComputePassEncoder pass = wgpuCommandEncoderBeginComputePass(enc, &d);
	if (pass) wgpuDeviceReference(dev);
	return pass;
}

// The callbacks write their status into C memory owned by the caller.
static void wgllm_map_cb(WGPUBufferMapAsyncStatus status, void *userdata) { *(int32_t *)userdata = (int32_t)status; }
static void wgllm_map_read(WGPUBuffer buf, size_t off, size_t size, int32_t *status) {
	*status = -1;
	wgpuBufferMapAsync(buf, WGPUMapMode_Read, off, size, wgllm_map_cb, status);
}
static void wgllm_done_cb(WGPUQueueWorkDoneStatus status, void *userdata) { *(int32_t *)userdata = (int32_t)status; }
static void wgllm_on_work_done(WGPUQueue q, int32_t *status) {
	*status = -1;
	wgpuQueueOnSubmittedWorkDone(q, wgllm_done_cb, status);
}

// The binding's CreateInstance leaves the extras' flags, GLES minor version
// and DXIL/DXC paths as uninitialised malloc memory, which wgpu-native
// rejects at random (a Rust panic, "Unknown gles3 minor version") once a
// second instance reuses freed memory; this one zeroes them.
static WGPUInstance wgllm_create_instance(uint32_t backends) {
	WGPUInstanceExtras extras;
	memset(&extras, 0, sizeof extras);
	extras.chain.sType = (WGPUSType)WGPUSType_InstanceExtras;
	extras.backends = backends;
	WGPUInstanceDescriptor desc;
	memset(&desc, 0, sizeof desc);
	desc.nextInChain = (const WGPUChainedStruct *)&extras;
	return wgpuCreateInstance(&desc);
}

typedef struct {
	int f16, timestamps;
	uint64_t max_binding, max_buffer;
	uint32_t wg_storage, invocations, wg_x, wg_y, storage_buffers;
} wgllm_device_req;

static WGPUDevice wgllm_request_device(WGPUAdapter adapter, wgllm_device_req r, uintptr_t token) {
	WGPURequiredLimits req;
	memset(&req, 0, sizeof req);
	// Every limit left undefined keeps the WebGPU default.
	memset(&req.limits, 0xff, sizeof req.limits);
	req.limits.maxStorageBufferBindingSize = r.max_binding;
	req.limits.maxBufferSize = r.max_buffer;
	req.limits.maxComputeWorkgroupStorageSize = r.wg_storage;
	req.limits.maxComputeInvocationsPerWorkgroup = r.invocations;
	req.limits.maxComputeWorkgroupSizeX = r.wg_x;
	req.limits.maxComputeWorkgroupSizeY = r.wg_y;
	req.limits.maxStorageBuffersPerShaderStage = r.storage_buffers;

	WGPUFeatureName features[2];
	size_t nf = 0;
	if (r.f16) features[nf++] = WGPUFeatureName_ShaderF16;
	if (r.timestamps) features[nf++] = WGPUFeatureName_TimestampQuery;
	WGPUDeviceDescriptor desc;
	memset(&desc, 0, sizeof desc);
	desc.label = "wgllm";
	desc.requiredLimits = &req;
	desc.requiredFeatureCount = nf;
	desc.requiredFeatures = features;
	desc.deviceLostCallback = wgllm_lost_cb;
	desc.deviceLostUserdata = (void *)token;
	desc.uncapturedErrorCallbackInfo.callback = wgllm_error_cb;
	desc.uncapturedErrorCallbackInfo.userdata = (void *)token;
	WGPUDevice dev = NULL;
	wgpuAdapterRequestDevice(adapter, &desc, wgllm_device_cb, &dev);
	return dev;
}
*/
import "C"

import (
	"errors"
	"fmt"
	"unsafe"

	"github.com/cogentcore/webgpu/wgpu"
)

//export wgllmDeviceLost
func wgllmDeviceLost(reason C.WGPUDeviceLostReason, message *C.char, token C.uintptr_t) {
	if ev := lookup(uintptr(token)); ev != nil {
		ev.Lost(fmt.Errorf("gpu: device lost (%s): %s", wgpu.DeviceLostReason(reason), C.GoString(message)))
	}
}

//export wgllmUncapturedError
func wgllmUncapturedError(typ C.WGPUErrorType, message *C.char, token C.uintptr_t) {
	if ev := lookup(uintptr(token)); ev != nil {
		ev.Uncaptured(fmt.Errorf("gpu: %s error: %s", wgpu.ErrorType(typ), C.GoString(message)))
	}
}

// wgpu.Adapter and wgpu.Device are structs of one C handle; these views
// let the shim hand handles to and from the binding.
type handle struct{ ref unsafe.Pointer }

func requestDevice(a *wgpu.Adapter, lim wgpu.Limits, f16, timestamps bool, token uintptr) (*wgpu.Device, error) {
	ref := (*handle)(unsafe.Pointer(a)).ref
	r := C.wgllm_device_req{
		max_binding:     C.uint64_t(lim.MaxStorageBufferBindingSize),
		max_buffer:      C.uint64_t(lim.MaxBufferSize),
		wg_storage:      C.uint32_t(lim.MaxComputeWorkgroupStorageSize),
		invocations:     C.uint32_t(lim.MaxComputeInvocationsPerWorkgroup),
		wg_x:            C.uint32_t(lim.MaxComputeWorkgroupSizeX),
		wg_y:            C.uint32_t(lim.MaxComputeWorkgroupSizeY),
		storage_buffers: C.uint32_t(lim.MaxStorageBuffersPerShaderStage),
	}
	if f16 {
		r.f16 = 1
	}
	if timestamps {
		r.timestamps = 1
	}
	dev := C.wgllm_request_device(C.WGPUAdapter(ref), r, C.uintptr_t(token))
	if dev == nil {
		return nil, errors.New("the adapter refused the device request")
	}
	return (*wgpu.Device)(unsafe.Pointer(&handle{ref: unsafe.Pointer(dev)})), nil
}

// pendingStatus is a callback's status word in C memory: -1 until the
// callback has run.
type pendingStatus struct{ p *C.int32_t }

func newPendingStatus() pendingStatus {
	return pendingStatus{(*C.int32_t)(C.malloc(C.size_t(unsafe.Sizeof(C.int32_t(0)))))}
}

func (s pendingStatus) done() bool   { return *s.p != -1 }
func (s pendingStatus) value() int32 { return int32(*s.p) }

// free releases the word; only once the callback has run (after device
// loss it may never run, and the word is left, a few bytes, rather than
// risk a late write to freed memory).
func (s pendingStatus) free() {
	if s.done() {
		C.free(unsafe.Pointer(s.p))
	}
}

// mapRead starts mapping buf[off:off+size] for reading; the status turns
// into a wgpu.BufferMapAsyncStatus during a later Poll.
func mapRead(buf *wgpu.Buffer, off, size uint64) pendingStatus {
	ref := (*struct {
		device C.WGPUDevice
		ref    C.WGPUBuffer
	})(unsafe.Pointer(buf)).ref
	st := newPendingStatus()
	C.wgllm_map_read(ref, C.size_t(off), C.size_t(size), st.p)
	return st
}

// onWorkDone asks for the queue's work-done callback.
func onWorkDone(q *wgpu.Queue) pendingStatus {
	ref := (*struct {
		device C.WGPUDevice
		ref    C.WGPUQueue
	})(unsafe.Pointer(q)).ref
	st := newPendingStatus()
	C.wgllm_on_work_done(ref, st.p)
	return st
}

// createInstance makes a wgpu instance limited to the given backends.
func createInstance(backends wgpu.InstanceBackend) (*wgpu.Instance, error) {
	ref := C.wgllm_create_instance(C.uint32_t(backends))
	if ref == nil {
		return nil, fmt.Errorf("gpu: wgpu-native could not create an instance for backends %s", backends)
	}
	return (*wgpu.Instance)(unsafe.Pointer(&handle{ref: unsafe.Pointer(ref)})), nil
}

// Destroy destroys the device as a driver reset would, so tests can check
// that loss is reported as an error everywhere.
func (d *wgpuDevice) Destroy() {
	C.wgllm_destroy_device(C.WGPUDevice((*handle)(unsafe.Pointer(d.dev)).ref))
	d.dev.Poll(false, nil)
	if d.ev.Err() == nil { // not every wgpu-native reports destruction as loss
		d.ev.Lost(errors.New("gpu: device lost (destroyed)"))
	}
}

// twoHandles is the layout of the binding's CommandEncoder and
// ComputePassEncoder: a device handle, then the object's own.
type twoHandles struct{ device, ref unsafe.Pointer }

// beginTimedPass begins a compute pass on enc whose start and end write
// timestamps 2i and 2i+1 of qs.
func beginTimedPass(enc *wgpu.CommandEncoder, qs *wgpu.QuerySet, i uint32) (*wgpu.ComputePassEncoder, error) {
	e := (*twoHandles)(unsafe.Pointer(enc))
	q := (*handle)(unsafe.Pointer(qs)).ref
	pass := C.wgllm_begin_timed_pass(C.WGPUCommandEncoder(e.ref), C.WGPUDevice(e.device), C.WGPUQuerySet(q), C.uint32_t(i))
	if pass == nil {
		return nil, errors.New("gpu: beginning a timed compute pass failed")
	}
	return (*wgpu.ComputePassEncoder)(unsafe.Pointer(&twoHandles{device: e.device, ref: unsafe.Pointer(pass)})), nil
}
