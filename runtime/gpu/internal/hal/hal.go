// Package hal is the seam between runtime/gpu's public types (Context,
// Buffer, Encoder, Pipeline, Readback) and a WebGPU implementation:
// wgpu-native through cogentcore/webgpu (or the browser's WebGPU through the
// same binding), or Dawn's C API loaded at run time (internal/dawn). It
// holds only what the runtime uses: storage, uniform and staging buffers,
// compute pipelines of one bind group, compute passes (optionally timed),
// copies, mapping for reads and work-done waits. Errors come back as Go
// errors; device loss and errors raised outside a call reach Events.
package hal

import "errors"

// ErrDawnAbsent is wrapped by the error of a Dawn that is not installed
// (no library where it was looked for) or not available in this build.
var ErrDawnAbsent = errors.New("Dawn is not available")

// Usage is a buffer's set of WebGPU usages.
type Usage uint32

const (
	UsageMapRead Usage = 1 << iota
	UsageCopySrc
	UsageCopyDst
	UsageUniform
	UsageStorage
	UsageQueryResolve
)

// Limits are the device limits the runtime reads (WebGPU's names).
type Limits struct {
	MaxStorageBufferBindingSize       uint64
	MaxBufferSize                     uint64
	MaxUniformBufferBindingSize       uint64
	MaxComputeWorkgroupStorageSize    uint32
	MaxComputeInvocationsPerWorkgroup uint32
	MaxComputeWorkgroupSizeX          uint32
	MaxComputeWorkgroupSizeY          uint32
	MaxComputeWorkgroupSizeZ          uint32
	MaxComputeWorkgroupsPerDimension  uint32
	MaxStorageBuffersPerShaderStage   uint32
	MaxBindGroups                     uint32
	MinStorageBufferOffsetAlignment   uint32
	MinUniformBufferOffsetAlignment   uint32
}

// AdapterType is the kind of adapter, as WebGPU reports it.
type AdapterType int

const (
	AdapterUnknown AdapterType = iota
	AdapterDiscreteGPU
	AdapterIntegratedGPU
	AdapterCPU
)

func (t AdapterType) String() string {
	switch t {
	case AdapterDiscreteGPU:
		return "discrete-gpu"
	case AdapterIntegratedGPU:
		return "integrated-gpu"
	case AdapterCPU:
		return "cpu"
	}
	return "unknown"
}

// Features are the optional capabilities kernels can specialise on.
type Features struct {
	ShaderF16  bool // WGSL f16 (feature shader-f16)
	Subgroups  bool // WGSL subgroup builtins (feature subgroups)
	Timestamps bool // timestamp queries (feature timestamp-query)
	// SubgroupMatrix: Dawn's chromium-experimental-subgroup-matrix.
	SubgroupMatrix bool
	// DotI8Packed: WGSL dot4I8Packed and pack4xI8 (language feature
	// packed_4x8_integer_dot_product).
	DotI8Packed bool
	// SubgroupMinSize and SubgroupMaxSize are the adapter's subgroup widths
	// (0 when unknown).
	SubgroupMinSize, SubgroupMaxSize uint32
}

// AdapterInfo describes an adapter.
type AdapterInfo struct {
	Name        string
	Vendor      string
	Driver      string
	Backend     string // as the wgpu binding spells it: "vulkan", "metal", "d3d12", "open-gl", ...
	Type        AdapterType
	Limits      Limits
	Features    Features
	Fallback    bool // the implementation says it is a software/fallback adapter
	BackendRank int  // 0 for the platform's primary APIs (Vulkan, Metal, D3D12), more for others
}

// DeviceRequest is what the runtime asks of a device: limits (each at most
// the adapter's) and the features to enable.
type DeviceRequest struct {
	Limits     Limits
	ShaderF16  bool
	Subgroups  bool
	Timestamps bool
}

// Events receives what a device reports outside any call. Both may run on
// any thread.
type Events interface {
	Lost(err error)       // the device is gone
	Uncaptured(err error) // an error raised outside an error scope (validation, submission)
	Err() error           // the loss reported so far, if any: waits stop on it
}

// Adapter is one adapter of an implementation.
type Adapter interface {
	Info() AdapterInfo
	RequestDevice(req DeviceRequest, ev Events) (Device, error)
	Release()
}

// Buffer is a GPU buffer.
type Buffer interface {
	// Destroy frees the memory and the handle.
	Destroy()
}

// Pipeline is a compute pipeline with its one bind group layout: binding 0
// is a uniform block with a dynamic offset, bindings 1.. storage buffers.
type Pipeline interface{ Release() }

// BindGroup binds a pipeline's uniform block and storage buffers.
type BindGroup interface{ Release() }

// QuerySet is a set of timestamp queries.
type QuerySet interface{ Release() }

// Binding is one buffer range of a bind group.
type Binding struct {
	Buffer       Buffer
	Offset, Size uint64
}

// Pass records compute dispatches.
type Pass interface {
	Dispatch(p Pipeline, bg BindGroup, uniformOffset uint32, x, y, z uint32)
	End() error
}

// CommandBuffer is finished work, ready to submit.
type CommandBuffer interface{ Release() }

// Encoder records passes and copies.
type Encoder interface {
	// BeginPass opens a compute pass; with qs, its start and end write
	// timestamps 2*index and 2*index+1.
	BeginPass(qs QuerySet, index uint32) (Pass, error)
	Copy(src Buffer, srcOff uint64, dst Buffer, dstOff, size uint64) error
	ResolveTimestamps(qs QuerySet, count uint32, dst Buffer) error
	Finish() (CommandBuffer, error)
	Release()
}

// Device is an open device and its queue.
type Device interface {
	Limits() Limits
	CreateBuffer(label string, size uint64, usage Usage) (Buffer, error)
	// WriteBuffer queues a write (len(data) a multiple of 4).
	WriteBuffer(b Buffer, offset uint64, data []byte) error
	// CreatePipeline compiles WGSL; readWrite[i] says whether storage
	// binding i+1 is read-write (else read-only).
	CreatePipeline(label, source, entry string, readWrite []bool) (Pipeline, error)
	// CreateBindGroup binds uniform[0:uniformSize] at binding 0 and the
	// storage ranges at 1.. in order.
	CreateBindGroup(p Pipeline, uniform Buffer, uniformSize uint64, storage []Binding) (BindGroup, error)
	CreateEncoder() (Encoder, error)
	CreateTimestampQuerySet(count uint32) (QuerySet, error)
	Submit(cmd CommandBuffer)
	// SubmitPending submits no commands, which sends the queue's pending
	// buffer writes.
	SubmitPending()
	// ReadMapped maps b[offset:offset+len(dst)] for reading once the work
	// before it is done, copies it into dst and unmaps.
	ReadMapped(b Buffer, offset uint64, dst []byte) error
	// WaitIdle blocks until all submitted work has finished (or the device
	// is lost).
	WaitIdle() error
	// Destroy destroys the device as a driver reset would (tests of loss).
	Destroy()
	// Release frees the device and its queue; after a loss the
	// implementation may leave what is unsafe to free.
	Release(lost bool)
}
