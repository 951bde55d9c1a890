//go:build (linux || darwin) && cgo

package dawn

/*
#include "shim.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"unsafe"

	"github.com/wgllm/wgllm/runtime/gpu/internal/hal"
)

type device struct {
	raw   C.WGPUDevice
	queue C.WGPUQueue
	ev    hal.Events
	token uintptr
}

type buffer struct{ raw C.WGPUBuffer }

func (b buffer) Destroy() {
	C.wgllm_BufferDestroy(b.raw)
	C.wgllm_BufferRelease(b.raw)
}

type pipeline struct {
	pipe   C.WGPUComputePipeline
	bgl    C.WGPUBindGroupLayout
	layout C.WGPUPipelineLayout
	module C.WGPUShaderModule
}

func (p *pipeline) Release() {
	C.wgllm_ComputePipelineRelease(p.pipe)
	C.wgllm_PipelineLayoutRelease(p.layout)
	C.wgllm_BindGroupLayoutRelease(p.bgl)
	C.wgllm_ShaderModuleRelease(p.module)
}

type bindGroup struct{ raw C.WGPUBindGroup }

func (b bindGroup) Release() { C.wgllm_BindGroupRelease(b.raw) }

type querySet struct{ raw C.WGPUQuerySet }

func (q querySet) Release() {
	C.wgllm_QuerySetDestroy(q.raw)
	C.wgllm_QuerySetRelease(q.raw)
}

type commands struct{ raw C.WGPUCommandBuffer }

func (c commands) Release() { C.wgllm_CommandBufferRelease(c.raw) }

// scoped runs f inside validation and out-of-memory error scopes and
// returns what they caught, so that a bad call is an error of that call.
func (d *device) scoped(f func()) error {
	C.wgllm_DevicePushErrorScope(d.raw, C.WGPUErrorFilter_OutOfMemory)
	C.wgllm_DevicePushErrorScope(d.raw, C.WGPUErrorFilter_Validation)
	f()
	var first error
	for i := 0; i < 2; i++ {
		r := C.wgllm_result_new()
		fut := C.wgllm_pop_error_scope(d.raw, r)
		err := wait(fut, r, nil, d.ev.Err)
		if err == nil && r.status == C.WGPUPopErrorScopeStatus_Success && r._type != C.WGPUErrorType_NoError {
			err = fmt.Errorf("%s error: %s", errorTypes[C.int(r._type)], message(r))
		}
		C.wgllm_result_free(r)
		if first == nil {
			first = err
		}
	}
	if first == nil {
		first = d.ev.Err()
	}
	return first
}

func (d *device) Limits() hal.Limits {
	var l C.WGPULimits
	C.wgllm_DeviceGetLimits(d.raw, &l)
	return halLimits(&l)
}

// The WGPUBufferUsage bits (webgpu.h declares them as static consts,
// which Go cannot link to).
var usages = [...]struct {
	h hal.Usage
	c C.uint64_t
}{
	{hal.UsageMapRead, 0x1}, {hal.UsageCopySrc, 0x4}, {hal.UsageCopyDst, 0x8},
	{hal.UsageUniform, 0x40}, {hal.UsageStorage, 0x80}, {hal.UsageQueryResolve, 0x200},
}

func (d *device) CreateBuffer(label string, size uint64, usage hal.Usage) (hal.Buffer, error) {
	var u C.uint64_t
	for _, m := range usages {
		if usage&m.h != 0 {
			u |= m.c
		}
	}
	cl := C.CString(label)
	defer C.free(unsafe.Pointer(cl))
	var raw C.WGPUBuffer
	err := d.scoped(func() { raw = C.wgllm_create_buffer(d.raw, cl, C.uint64_t(size), u) })
	if err != nil {
		if raw != nil {
			C.wgllm_BufferRelease(raw)
		}
		return nil, err
	}
	if raw == nil {
		return nil, errors.New("Dawn returned no buffer")
	}
	return buffer{raw}, nil
}

func (d *device) WriteBuffer(b hal.Buffer, offset uint64, data []byte) error {
	if len(data) == 0 {
		return nil
	}
	// Dawn copies the bytes before it returns.
	C.wgllm_QueueWriteBuffer(d.queue, b.(buffer).raw, C.uint64_t(offset), unsafe.Pointer(&data[0]), C.size_t(len(data)))
	return d.ev.Err()
}

func (d *device) CreatePipeline(label, source, entry string, readWrite []bool) (hal.Pipeline, error) {
	if len(readWrite) > 15 {
		return nil, fmt.Errorf("pipeline %s: %d storage bindings, at most 15", label, len(readWrite))
	}
	cl, ce := C.CString(label), C.CString(entry)
	defer C.free(unsafe.Pointer(cl))
	defer C.free(unsafe.Pointer(ce))
	code := C.CString(source)
	defer C.free(unsafe.Pointer(code))
	rw := make([]C.int, len(readWrite)+1) // +1: never empty
	for i, w := range readWrite {
		rw[i] = b2i(w)
	}
	p := &pipeline{}
	err := d.scoped(func() {
		p.pipe = C.wgllm_create_pipeline(d.raw, cl, code, C.size_t(len(source)), ce, C.int(len(readWrite)), &rw[0],
			&p.bgl, &p.layout, &p.module)
	})
	if err != nil || p.pipe == nil {
		p.releaseSome()
		if err == nil {
			err = errors.New("Dawn returned no pipeline")
		}
		return nil, fmt.Errorf("creating pipeline %s: %w", label, err)
	}
	return p, nil
}

func (p *pipeline) releaseSome() {
	if p.pipe != nil {
		C.wgllm_ComputePipelineRelease(p.pipe)
	}
	if p.layout != nil {
		C.wgllm_PipelineLayoutRelease(p.layout)
	}
	if p.bgl != nil {
		C.wgllm_BindGroupLayoutRelease(p.bgl)
	}
	if p.module != nil {
		C.wgllm_ShaderModuleRelease(p.module)
	}
}

func (d *device) CreateBindGroup(p hal.Pipeline, uniform hal.Buffer, uniformSize uint64, storage []hal.Binding) (hal.BindGroup, error) {
	n := len(storage)
	if n > 15 {
		return nil, fmt.Errorf("bind group of %d storage bindings, at most 15", n)
	}
	// C arrays: cgo forbids Go memory holding C pointers being passed to C.
	arr := (*[16]C.WGPUBuffer)(C.calloc(16, C.size_t(unsafe.Sizeof(C.WGPUBuffer(nil)))))
	defer C.free(unsafe.Pointer(arr))
	var offs, sizes [16]C.uint64_t
	for i, b := range storage {
		arr[i] = b.Buffer.(buffer).raw
		offs[i] = C.uint64_t(b.Offset)
		sizes[i] = C.uint64_t(b.Size)
	}
	var raw C.WGPUBindGroup
	err := d.scoped(func() {
		raw = C.wgllm_create_bind_group(d.raw, p.(*pipeline).bgl, uniform.(buffer).raw, C.uint64_t(uniformSize),
			C.int(n), &arr[0], &offs[0], &sizes[0])
	})
	if err != nil {
		if raw != nil {
			C.wgllm_BindGroupRelease(raw)
		}
		return nil, err
	}
	return bindGroup{raw}, nil
}

func (d *device) CreateTimestampQuerySet(count uint32) (hal.QuerySet, error) {
	var raw C.WGPUQuerySet
	if err := d.scoped(func() { raw = C.wgllm_create_timestamps(d.raw, C.uint32_t(count)) }); err != nil {
		if raw != nil {
			C.wgllm_QuerySetRelease(raw)
		}
		return nil, err
	}
	return querySet{raw}, nil
}

func (d *device) CreateEncoder() (hal.Encoder, error) {
	e := C.wgllm_create_encoder(d.raw)
	if e == nil {
		return nil, errors.New("Dawn returned no command encoder")
	}
	return &encoder{d: d, raw: e}, nil
}

func (d *device) Submit(cmd hal.CommandBuffer) {
	raw := cmd.(commands).raw
	C.wgllm_QueueSubmit(d.queue, 1, &raw)
}

func (d *device) SubmitPending() { C.wgllm_QueueSubmit(d.queue, 0, nil) }

func (d *device) ReadMapped(b hal.Buffer, offset uint64, dst []byte) error {
	raw := b.(buffer).raw
	n := len(dst)
	r := C.wgllm_result_new()
	defer C.wgllm_result_free(r)
	f := C.wgllm_map_read(raw, C.size_t(offset), C.size_t(n), r)
	if err := wait(f, r, d.raw, d.ev.Err); err != nil {
		return err
	}
	if r.status != C.WGPUMapAsyncStatus_Success {
		return fmt.Errorf("mapping failed (status %d): %s", int(r.status), message(r))
	}
	p := C.wgllm_BufferGetConstMappedRange(raw, C.size_t(offset), C.size_t(n))
	if p == nil {
		C.wgllm_BufferUnmap(raw)
		return errors.New("Dawn gave no mapped range")
	}
	copy(dst, unsafe.Slice((*byte)(p), n))
	C.wgllm_BufferUnmap(raw)
	return nil
}

func (d *device) WaitIdle() error {
	r := C.wgllm_result_new()
	defer C.wgllm_result_free(r)
	f := C.wgllm_work_done(d.queue, r)
	if err := wait(f, r, d.raw, d.ev.Err); err != nil {
		return err
	}
	if r.status != C.WGPUQueueWorkDoneStatus_Success {
		if err := d.ev.Err(); err != nil {
			return err
		}
		return fmt.Errorf("gpu: waiting for the queue failed (status %d): %s", int(r.status), message(r))
	}
	return nil
}

func (d *device) Destroy() {
	C.wgllm_DeviceDestroy(d.raw)
	if d.ev.Err() == nil {
		d.ev.Lost(errors.New("gpu: device lost (destroyed)"))
	}
}

// Release frees the queue and device; Dawn counts references, so this is
// safe after a loss too.
func (d *device) Release(lost bool) {
	C.wgllm_QueueRelease(d.queue)
	C.wgllm_DeviceRelease(d.raw)
	eventsMu.Lock()
	delete(events, d.token)
	eventsMu.Unlock()
}

type encoder struct {
	d   *device
	raw C.WGPUCommandEncoder
}

func (e *encoder) BeginPass(qs hal.QuerySet, index uint32) (hal.Pass, error) {
	var q C.WGPUQuerySet
	if qs != nil {
		q = qs.(querySet).raw
	}
	p := C.wgllm_begin_pass(e.raw, q, C.uint32_t(index))
	if p == nil {
		return nil, errors.New("Dawn returned no compute pass")
	}
	return pass{p}, nil
}

func (e *encoder) Copy(src hal.Buffer, srcOff uint64, dst hal.Buffer, dstOff, size uint64) error {
	C.wgllm_CommandEncoderCopyBufferToBuffer(e.raw, src.(buffer).raw, C.uint64_t(srcOff), dst.(buffer).raw, C.uint64_t(dstOff), C.uint64_t(size))
	return nil // Dawn reports encoding errors at Finish
}

func (e *encoder) ResolveTimestamps(qs hal.QuerySet, count uint32, dst hal.Buffer) error {
	C.wgllm_CommandEncoderResolveQuerySet(e.raw, qs.(querySet).raw, 0, C.uint32_t(count), dst.(buffer).raw, 0)
	return nil
}

// Finish reports what was wrong in anything encoded (Dawn checks at Finish).
func (e *encoder) Finish() (hal.CommandBuffer, error) {
	var cmd C.WGPUCommandBuffer
	err := e.d.scoped(func() { cmd = C.wgllm_finish(e.raw) })
	if err != nil {
		if cmd != nil {
			C.wgllm_CommandBufferRelease(cmd)
		}
		return nil, err
	}
	return commands{cmd}, nil
}

func (e *encoder) Release() { C.wgllm_CommandEncoderRelease(e.raw) }

type pass struct{ raw C.WGPUComputePassEncoder }

func (p pass) Dispatch(pl hal.Pipeline, bg hal.BindGroup, off uint32, x, y, z uint32) {
	C.wgllm_dispatch(p.raw, pl.(*pipeline).pipe, bg.(bindGroup).raw, C.uint32_t(off), C.uint32_t(x), C.uint32_t(y), C.uint32_t(z))
}

func (p pass) End() error {
	C.wgllm_ComputePassEncoderEnd(p.raw)
	C.wgllm_ComputePassEncoderRelease(p.raw)
	return nil // Dawn reports encoding errors at Finish
}
