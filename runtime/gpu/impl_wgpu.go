package gpu

// The wgpu implementation of hal: wgpu-native through cogentcore/webgpu,
// or in the browser the page's WebGPU through the same binding. What the
// binding lacks or gets wrong is in native.go and platform_js.go.

import (
	"fmt"
	"strings"

	"github.com/cogentcore/webgpu/wgpu"
	"github.com/wgllm/wgllm/runtime/gpu/internal/hal"
)

type wgpuAdapter struct{ raw *wgpu.Adapter }

func (a wgpuAdapter) Release() { a.raw.Release() }

func (a wgpuAdapter) Info() hal.AdapterInfo {
	info := adapterInfo(a.raw)
	// This wgpu-native reports vendor and device as hex ids and puts the
	// human-readable name (e.g. "llvmpipe (LLVM 15.0.6, 256 bits)") in the
	// description; show the readable one.
	name := info.Name
	if name == "" || strings.HasPrefix(name, "0x") {
		name = info.DriverDescription
	}
	out := hal.AdapterInfo{
		Name:    name,
		Vendor:  info.VendorName,
		Driver:  info.DriverDescription,
		Backend: info.BackendType.String(),
		Type:    wgpuAdapterType(info.AdapterType),
		Limits:  halLimits(a.raw.GetLimits().Limits),
		Features: hal.Features{
			ShaderF16:  hasFeature(a.raw, wgpu.FeatureNameShaderF16),
			Timestamps: timestampsSupported && hasFeature(a.raw, wgpu.FeatureNameTimestampQuery),
		},
	}
	switch info.BackendType {
	case wgpu.BackendTypeVulkan, wgpu.BackendTypeMetal, wgpu.BackendTypeD3D12:
	default:
		out.BackendRank = 1
	}
	return out
}

func wgpuAdapterType(t wgpu.AdapterType) hal.AdapterType {
	switch t {
	case wgpu.AdapterTypeDiscreteGPU:
		return hal.AdapterDiscreteGPU
	case wgpu.AdapterTypeIntegratedGPU:
		return hal.AdapterIntegratedGPU
	case wgpu.AdapterTypeCPU:
		return hal.AdapterCPU
	}
	return hal.AdapterUnknown
}

func halLimits(l wgpu.Limits) hal.Limits {
	return hal.Limits{
		MaxStorageBufferBindingSize:       l.MaxStorageBufferBindingSize,
		MaxBufferSize:                     l.MaxBufferSize,
		MaxUniformBufferBindingSize:       l.MaxUniformBufferBindingSize,
		MaxComputeWorkgroupStorageSize:    l.MaxComputeWorkgroupStorageSize,
		MaxComputeInvocationsPerWorkgroup: l.MaxComputeInvocationsPerWorkgroup,
		MaxComputeWorkgroupSizeX:          l.MaxComputeWorkgroupSizeX,
		MaxComputeWorkgroupSizeY:          l.MaxComputeWorkgroupSizeY,
		MaxComputeWorkgroupSizeZ:          l.MaxComputeWorkgroupSizeZ,
		MaxComputeWorkgroupsPerDimension:  l.MaxComputeWorkgroupsPerDimension,
		MaxStorageBuffersPerShaderStage:   l.MaxStorageBuffersPerShaderStage,
		MaxBindGroups:                     l.MaxBindGroups,
		MinStorageBufferOffsetAlignment:   l.MinStorageBufferOffsetAlignment,
		MinUniformBufferOffsetAlignment:   l.MinUniformBufferOffsetAlignment,
	}
}

func (a wgpuAdapter) RequestDevice(req hal.DeviceRequest, ev hal.Events) (hal.Device, error) {
	// The WebGPU defaults, with what the runtime raises.
	lim := wgpu.DefaultLimits()
	lim.MaxStorageBufferBindingSize = req.Limits.MaxStorageBufferBindingSize
	lim.MaxBufferSize = req.Limits.MaxBufferSize
	lim.MaxComputeWorkgroupStorageSize = req.Limits.MaxComputeWorkgroupStorageSize
	lim.MaxComputeInvocationsPerWorkgroup = req.Limits.MaxComputeInvocationsPerWorkgroup
	lim.MaxComputeWorkgroupSizeX = req.Limits.MaxComputeWorkgroupSizeX
	lim.MaxComputeWorkgroupSizeY = req.Limits.MaxComputeWorkgroupSizeY
	lim.MaxStorageBuffersPerShaderStage = req.Limits.MaxStorageBuffersPerShaderStage
	token := register(ev)
	dev, err := requestDevice(a.raw, lim, req.ShaderF16, req.Timestamps, token)
	if err != nil {
		unregister(token)
		return nil, err
	}
	return &wgpuDevice{dev: dev, queue: dev.GetQueue(), ev: ev, token: token}, nil
}

type wgpuDevice struct {
	dev   *wgpu.Device
	queue *wgpu.Queue
	ev    hal.Events
	token uintptr
}

type wgpuBuffer struct{ raw *wgpu.Buffer }

func (b wgpuBuffer) Destroy() {
	b.raw.Destroy()
	b.raw.Release()
}

type wgpuPipeline struct {
	pipe   *wgpu.ComputePipeline
	bgl    *wgpu.BindGroupLayout
	layout *wgpu.PipelineLayout
	module *wgpu.ShaderModule
}

func (p *wgpuPipeline) Release() {
	p.pipe.Release()
	p.layout.Release()
	p.bgl.Release()
	p.module.Release()
}

type wgpuBindGroup struct{ raw *wgpu.BindGroup }

func (b wgpuBindGroup) Release() { b.raw.Release() }

type wgpuCommands struct{ raw *wgpu.CommandBuffer }

func (c wgpuCommands) Release() { c.raw.Release() }

func (d *wgpuDevice) Limits() hal.Limits { return halLimits(d.dev.GetLimits().Limits) }

var wgpuUsages = [...]struct {
	h hal.Usage
	w wgpu.BufferUsage
}{
	{hal.UsageMapRead, wgpu.BufferUsageMapRead}, {hal.UsageCopySrc, wgpu.BufferUsageCopySrc},
	{hal.UsageCopyDst, wgpu.BufferUsageCopyDst}, {hal.UsageUniform, wgpu.BufferUsageUniform},
	{hal.UsageStorage, wgpu.BufferUsageStorage}, {hal.UsageQueryResolve, wgpu.BufferUsageQueryResolve},
}

func (d *wgpuDevice) CreateBuffer(label string, size uint64, usage hal.Usage) (hal.Buffer, error) {
	var u wgpu.BufferUsage
	for _, m := range wgpuUsages {
		if usage&m.h != 0 {
			u |= m.w
		}
	}
	raw, err := d.dev.CreateBuffer(&wgpu.BufferDescriptor{Label: label, Size: size, Usage: u})
	if err != nil {
		return nil, err
	}
	return wgpuBuffer{raw}, nil
}

func (d *wgpuDevice) WriteBuffer(b hal.Buffer, offset uint64, data []byte) error {
	return writeBuffer(d.queue, b.(wgpuBuffer).raw, offset, data)
}

func (d *wgpuDevice) CreatePipeline(label, source, entry string, readWrite []bool) (hal.Pipeline, error) {
	mod, err := d.dev.CreateShaderModule(&wgpu.ShaderModuleDescriptor{
		Label:          label,
		WGSLDescriptor: &wgpu.ShaderModuleWGSLDescriptor{Code: source},
	})
	if err != nil {
		return nil, fmt.Errorf("compiling shader %s: %w", label, err)
	}
	entries := []wgpu.BindGroupLayoutEntry{{
		Binding:    0,
		Visibility: wgpu.ShaderStageCompute,
		Buffer:     wgpu.BufferBindingLayout{Type: wgpu.BufferBindingTypeUniform, HasDynamicOffset: true},
	}}
	for i, rw := range readWrite {
		t := wgpu.BufferBindingTypeReadOnlyStorage
		if rw {
			t = wgpu.BufferBindingTypeStorage
		}
		entries = append(entries, wgpu.BindGroupLayoutEntry{
			Binding:    uint32(i + 1),
			Visibility: wgpu.ShaderStageCompute,
			Buffer:     wgpu.BufferBindingLayout{Type: t},
		})
	}
	bgl, err := d.dev.CreateBindGroupLayout(&wgpu.BindGroupLayoutDescriptor{Label: label, Entries: entries})
	if err != nil {
		mod.Release()
		return nil, fmt.Errorf("bind group layout %s: %w", label, err)
	}
	layout, err := d.dev.CreatePipelineLayout(&wgpu.PipelineLayoutDescriptor{Label: label, BindGroupLayouts: []*wgpu.BindGroupLayout{bgl}})
	if err != nil {
		bgl.Release()
		mod.Release()
		return nil, fmt.Errorf("pipeline layout %s: %w", label, err)
	}
	pipe, err := createComputePipeline(d.dev, label, layout, mod, entry)
	if err != nil {
		layout.Release()
		bgl.Release()
		mod.Release()
		return nil, fmt.Errorf("creating pipeline %s: %w", label, err)
	}
	return &wgpuPipeline{pipe: pipe, bgl: bgl, layout: layout, module: mod}, nil
}

func (d *wgpuDevice) CreateBindGroup(p hal.Pipeline, uniform hal.Buffer, uniformSize uint64, storage []hal.Binding) (hal.BindGroup, error) {
	entries := make([]wgpu.BindGroupEntry, 0, len(storage)+1)
	entries = append(entries, wgpu.BindGroupEntry{Binding: 0, Buffer: uniform.(wgpuBuffer).raw, Offset: 0, Size: uniformSize})
	for i, a := range storage {
		entries = append(entries, wgpu.BindGroupEntry{Binding: uint32(i + 1), Buffer: a.Buffer.(wgpuBuffer).raw, Offset: a.Offset, Size: a.Size})
	}
	bg, err := d.dev.CreateBindGroup(&wgpu.BindGroupDescriptor{Layout: p.(*wgpuPipeline).bgl, Entries: entries})
	if err != nil {
		return nil, err
	}
	return wgpuBindGroup{bg}, nil
}

func (d *wgpuDevice) Submit(cmd hal.CommandBuffer) { d.queue.Submit(cmd.(wgpuCommands).raw) }

func (d *wgpuDevice) SubmitPending() { d.queue.Submit() }

func (d *wgpuDevice) CreateEncoder() (hal.Encoder, error) {
	enc, err := d.dev.CreateCommandEncoder(nil)
	if err != nil {
		return nil, err
	}
	return &wgpuEncoder{enc: enc}, nil
}

// ReadMapped maps, waits for the callback, copies and unmaps.
func (d *wgpuDevice) ReadMapped(b hal.Buffer, offset uint64, dst []byte) error {
	raw := b.(wgpuBuffer).raw
	n := uint64(len(dst))
	pending := mapRead(raw, offset, n)
	if err := d.waitFor(pending); err != nil {
		pending.free()
		return err
	}
	status := wgpu.BufferMapAsyncStatus(pending.value())
	pending.free()
	if status != wgpu.BufferMapAsyncStatusSuccess {
		if err := d.ev.Err(); err != nil {
			return err
		}
		return fmt.Errorf("mapping failed: %s", status)
	}
	copy(dst, raw.GetMappedRange(uint(offset), uint(n)))
	if err := raw.Unmap(); err != nil {
		return fmt.Errorf("unmapping: %w", err)
	}
	return nil
}

// WaitIdle waits for the queue's work-done callback rather than trusting
// one blocking poll: wgpu's poll gives up after a few seconds (and then
// reports the queue idle) while a long submission may still be running.
func (d *wgpuDevice) WaitIdle() error {
	pending := onWorkDone(d.queue)
	defer pending.free()
	return d.waitFor(pending)
}

// Release frees the queue and device. After a loss it frees nothing: with
// wgpu-native, releasing objects after wgpuDeviceDestroy corrupts handles
// that a device created later reuses ("resource with a different device"
// at its next submission, which aborts the process).
func (d *wgpuDevice) Release(lost bool) {
	defer unregister(d.token)
	if lost {
		return
	}
	d.queue.Release()
	releaseDevice(d.dev)
}

type wgpuEncoder struct {
	enc *wgpu.CommandEncoder
}

func (e *wgpuEncoder) BeginPass(qs hal.QuerySet, index uint32) (hal.Pass, error) {
	if qs == nil {
		return wgpuPass{e.enc.BeginComputePass(nil)}, nil
	}
	return e.beginTimedPass(qs, index)
}

func (e *wgpuEncoder) Copy(src hal.Buffer, srcOff uint64, dst hal.Buffer, dstOff, size uint64) error {
	return e.enc.CopyBufferToBuffer(src.(wgpuBuffer).raw, srcOff, dst.(wgpuBuffer).raw, dstOff, size)
}

func (e *wgpuEncoder) Finish() (hal.CommandBuffer, error) {
	cmd, err := e.enc.Finish(nil)
	if err != nil {
		return nil, err
	}
	return wgpuCommands{cmd}, nil
}

func (e *wgpuEncoder) Release() { e.enc.Release() }

type wgpuPass struct{ p *wgpu.ComputePassEncoder }

func (p wgpuPass) Dispatch(pl hal.Pipeline, bg hal.BindGroup, off uint32, x, y, z uint32) {
	p.p.SetPipeline(pl.(*wgpuPipeline).pipe)
	p.p.SetBindGroup(0, bg.(wgpuBindGroup).raw, []uint32{off})
	p.p.DispatchWorkgroups(x, y, z)
}

func (p wgpuPass) End() error {
	err := endComputePass(p.p)
	p.p.Release()
	return err
}
