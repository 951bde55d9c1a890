// Package gpu is the only package that talks to WebGPU (wgpu-native through
// github.com/cogentcore/webgpu). It owns adapter choice, the device, buffers,
// the pipeline cache, command encoding and readback, and turns wgpu
// validation failures and device loss into Go errors.
package gpu

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cogentcore/webgpu/wgpu"
)

// Options choose the adapter. Adapter is an index into ListAdapters' order or
// a case-insensitive substring of the adapter's name; empty picks the best.
// Backend limits the choice to one backend (see ParseBackend); empty means
// every primary backend of the platform.
type Options struct {
	Adapter       string
	ForceFallback bool
	Backend       string
	// Timestamps requests the timestamp-query feature (when the adapter has
	// it) so that EnableProfiling can time each dispatch.
	Timestamps bool
}

// OptionsFromEnv reads WGLLM_ADAPTER, WGLLM_FORCE_FALLBACK and WGLLM_BACKEND.
func OptionsFromEnv() Options {
	o := Options{Adapter: os.Getenv("WGLLM_ADAPTER"), Backend: os.Getenv("WGLLM_BACKEND")}
	if v := os.Getenv("WGLLM_FORCE_FALLBACK"); v != "" && v != "0" && !strings.EqualFold(v, "false") {
		o.ForceFallback = true
	}
	return o
}

// AdapterDesc describes one adapter as `wgllm devices` prints it.
type AdapterDesc struct {
	Index             int
	Name              string
	Vendor            string
	Driver            string
	Backend           string
	Type              string
	ShaderF16         bool
	Timestamps        bool
	MaxBinding        uint64 // maxStorageBufferBindingSize
	MaxBuffer         uint64 // maxBufferSize (clamped)
	MaxWGStorage      uint32 // maxComputeWorkgroupStorageSize
	MaxInvocs         uint32 // maxComputeInvocationsPerWorkgroup
	MaxWGPerDim       uint32 // maxComputeWorkgroupsPerDimension
	MaxStorageBuffers uint32 // maxStorageBuffersPerShaderStage

	typ     wgpu.AdapterType
	backend wgpu.BackendType
}

// maxBufferCap clamps adapters that report absurd buffer sizes (NVIDIA: 2^64-1).
const maxBufferCap = uint64(1) << 40

func describe(i int, a *wgpu.Adapter) AdapterDesc {
	info := adapterInfo(a)
	lim := a.GetLimits().Limits
	// This wgpu-native reports vendor and device as hex ids and puts the
	// human-readable name (e.g. "llvmpipe (LLVM 15.0.6, 256 bits)") in the
	// description; show the readable one.
	name := info.Name
	if name == "" || strings.HasPrefix(name, "0x") {
		name = info.DriverDescription
	}
	d := AdapterDesc{
		Index:             i,
		Name:              name,
		Vendor:            info.VendorName,
		Driver:            info.DriverDescription,
		Backend:           info.BackendType.String(),
		Type:              info.AdapterType.String(),
		ShaderF16:         hasFeature(a, wgpu.FeatureNameShaderF16),
		Timestamps:        hasFeature(a, wgpu.FeatureNameTimestampQuery),
		MaxBinding:        lim.MaxStorageBufferBindingSize,
		MaxBuffer:         min(lim.MaxBufferSize, maxBufferCap),
		MaxWGStorage:      lim.MaxComputeWorkgroupStorageSize,
		MaxInvocs:         lim.MaxComputeInvocationsPerWorkgroup,
		MaxWGPerDim:       lim.MaxComputeWorkgroupsPerDimension,
		MaxStorageBuffers: lim.MaxStorageBuffersPerShaderStage,
		typ:               info.AdapterType,
		backend:           info.BackendType,
	}
	return d
}

// rank orders adapters: discrete GPUs, then integrated, then anything else,
// then CPU/software (lavapipe, llvmpipe, WARP). Within a type, Vulkan/Metal/
// D3D12 before GL.
func rank(d AdapterDesc) int {
	r := 0
	switch d.typ {
	case wgpu.AdapterTypeDiscreteGPU:
		r = 0
	case wgpu.AdapterTypeIntegratedGPU:
		r = 10
	case wgpu.AdapterTypeUnknown:
		r = 20
	default: // CPU
		r = 30
	}
	if strings.Contains(strings.ToLower(d.Name), "llvmpipe") || strings.Contains(strings.ToLower(d.Name), "lavapipe") {
		r = 30
	}
	switch d.backend {
	case wgpu.BackendTypeVulkan, wgpu.BackendTypeMetal, wgpu.BackendTypeD3D12:
	default:
		r += 5
	}
	return r
}

func isSoftware(d AdapterDesc) bool { return rank(d) >= 30 }

func setRuntimeDirIfUnset() {
	if os.Getenv("XDG_RUNTIME_DIR") == "" {
		os.Setenv("XDG_RUNTIME_DIR", os.TempDir())
	}
}

type adapterEntry struct {
	desc AdapterDesc
	raw  *wgpu.Adapter
}

// enumerate lists the adapters of the backend opts name (all primary ones
// when none is named).
func enumerate(opts Options) ([]adapterEntry, error) {
	b, err := ParseBackend(opts.Backend)
	if err != nil {
		return nil, err
	}
	if err := checkBackend(b); err != nil {
		return nil, err
	}
	inst, err := getInstance(b)
	if err != nil {
		return nil, err
	}
	raws := inst.EnumerateAdapters(nil)
	out := make([]adapterEntry, 0, len(raws))
	for _, a := range raws {
		out = append(out, adapterEntry{desc: describe(0, a), raw: a})
	}
	// Stable best-first order, so indices mean the same thing every run.
	sort.SliceStable(out, func(i, j int) bool { return rank(out[i].desc) < rank(out[j].desc) })
	for i := range out {
		out[i].desc.Index = i
	}
	if len(out) == 0 && b != BackendAuto {
		return nil, fmt.Errorf("no WebGPU adapter on the %s backend (see `wgllm devices` for the backends that have one, or unset WGLLM_BACKEND)", b)
	}
	return out, nil
}

// ListAdapters returns every adapter best-first and the index Options choose.
func ListAdapters(opts Options) ([]AdapterDesc, int, error) {
	ents, err := enumerate(opts)
	if err != nil {
		return nil, -1, err
	}
	descs := make([]AdapterDesc, len(ents))
	for i, e := range ents {
		descs[i] = e.desc
	}
	chosen, err := choose(descs, opts)
	return descs, chosen, err
}

// ErrNoAdapter is returned when no WebGPU adapter exists (no GPU driver).
var ErrNoAdapter = errors.New("no WebGPU adapter found (" + driverHint() + ")")

// driverHint names what the OS needs for an adapter to exist.
func driverHint() string {
	switch runtime.GOOS {
	case "windows":
		return "is a D3D12 or Vulkan driver installed? the GPU vendor's driver provides them"
	case "darwin":
		return "Metal needs a Mac with a Metal-capable GPU"
	}
	return "is a Vulkan driver installed? on Debian: apt-get install libvulkan1 mesa-vulkan-drivers"
}

func choose(descs []AdapterDesc, opts Options) (int, error) {
	if len(descs) == 0 {
		return -1, ErrNoAdapter
	}
	if opts.Adapter != "" {
		if i, err := strconv.Atoi(opts.Adapter); err == nil {
			if i < 0 || i >= len(descs) {
				return -1, fmt.Errorf("adapter index %d out of range: %d adapters (see `wgllm devices`)", i, len(descs))
			}
			return i, nil
		}
		for i, d := range descs {
			if strings.Contains(strings.ToLower(d.Name+" "+d.Driver+" "+d.Vendor), strings.ToLower(opts.Adapter)) {
				return i, nil
			}
		}
		return -1, fmt.Errorf("no adapter name contains %q (see `wgllm devices`)", opts.Adapter)
	}
	if opts.ForceFallback {
		for i, d := range descs {
			if isSoftware(d) {
				return i, nil
			}
		}
		return -1, errors.New("WGLLM_FORCE_FALLBACK: no software adapter (lavapipe) found")
	}
	return 0, nil
}

// Context is one device and everything cached on it. Encoders made from one
// Context must be recorded from one goroutine at a time.
type Context struct {
	Adapter AdapterDesc
	Limits  wgpu.Limits // what the device was created with
	HasF16  bool
	// HasTimestamps: the device was created with timestamp queries
	// (Options.Timestamps on an adapter that has them).
	HasTimestamps bool
	prof          *profiler

	adapter *wgpu.Adapter
	device  *wgpu.Device
	queue   *wgpu.Queue

	mu        sync.Mutex
	pipelines map[any]*Pipeline
	bindCache map[bindKey]*wgpu.BindGroup
	uniforms  []*wgpu.Buffer // free uniform chunks
	staging   *wgpu.Buffer
	stagingN  uint64 // the staging buffer's size
	nextID    atomic.Uint64
	lost      atomic.Pointer[error]
	closing   atomic.Bool
	token     uintptr

	errMu      sync.Mutex
	uncaptured error

	// Debug puts every dispatch in its own compute pass so that a validation
	// error names the exact op that caused it (slower; for tests).
	Debug bool

	allocated atomic.Int64
}

// New opens the chosen adapter and creates a device with only the limits
// this runtime needs, raised from the WebGPU defaults up to the adapter's.
func New(opts Options) (*Context, error) {
	ents, err := enumerate(opts)
	if err != nil {
		return nil, err
	}
	descs := make([]AdapterDesc, len(ents))
	for i, e := range ents {
		descs[i] = e.desc
	}
	idx, err := choose(descs, opts)
	if err != nil {
		return nil, err
	}
	ent := ents[idx]
	al := ent.raw.GetLimits().Limits

	lim := wgpu.DefaultLimits()
	lim.MaxStorageBufferBindingSize = al.MaxStorageBufferBindingSize
	lim.MaxBufferSize = min(al.MaxBufferSize, maxBufferCap)
	lim.MaxComputeWorkgroupStorageSize = al.MaxComputeWorkgroupStorageSize
	lim.MaxComputeInvocationsPerWorkgroup = min(al.MaxComputeInvocationsPerWorkgroup, 1024)
	lim.MaxComputeWorkgroupSizeX = min(al.MaxComputeWorkgroupSizeX, 1024)
	lim.MaxComputeWorkgroupSizeY = min(al.MaxComputeWorkgroupSizeY, 1024)
	lim.MaxStorageBuffersPerShaderStage = min(al.MaxStorageBuffersPerShaderStage, 10)

	hasF16 := hasFeature(ent.raw, wgpu.FeatureNameShaderF16)
	timestamps := opts.Timestamps && hasFeature(ent.raw, wgpu.FeatureNameTimestampQuery)
	c := &Context{
		Adapter:       ent.desc,
		HasF16:        hasF16,
		HasTimestamps: timestamps,
		adapter:       ent.raw,
		pipelines:     map[any]*Pipeline{},
		bindCache:     map[bindKey]*wgpu.BindGroup{},
		Debug:         os.Getenv("WGLLM_GPU_DEBUG") == "1",
	}
	c.token = register(c)
	dev, err := requestDevice(ent.raw, lim, hasF16, timestamps, c.token)
	if err != nil {
		unregister(c.token)
		return nil, fmt.Errorf("gpu: creating device on %q (%s): %w", ent.desc.Name, ent.desc.Backend, err)
	}
	c.device = dev
	c.queue = dev.GetQueue()
	c.Limits = dev.GetLimits().Limits
	return c, nil
}

// Err reports device loss, which makes every later call fail.
func (c *Context) Err() error {
	if p := c.lost.Load(); p != nil {
		return *p
	}
	return nil
}

func (c *Context) setUncaptured(err error) {
	c.errMu.Lock()
	if c.uncaptured == nil {
		c.uncaptured = err
	}
	c.errMu.Unlock()
}

// takeUncaptured returns (and clears) the first error wgpu raised outside an
// error scope since the last call.
func (c *Context) takeUncaptured() error {
	c.errMu.Lock()
	defer c.errMu.Unlock()
	err := c.uncaptured
	c.uncaptured = nil
	return err
}

// MaxBinding is the largest byte range one storage binding may cover.
func (c *Context) MaxBinding() uint64 { return c.Limits.MaxStorageBufferBindingSize }

// MaxWorkgroupsPerDim bounds each dimension of a dispatch.
func (c *Context) MaxWorkgroupsPerDim() uint32 { return c.Limits.MaxComputeWorkgroupsPerDimension }

// AllocatedBytes is the total size of live buffers made through this Context.
func (c *Context) AllocatedBytes() int64 { return c.allocated.Load() }

// Wait blocks until all submitted work has finished.
//
// It waits for the queue's work-done callback rather than trusting one
// blocking poll: wgpu's poll gives up after a few seconds (and then reports
// the queue idle) while a long submission may still be running.
func (c *Context) Wait() error {
	pending := onWorkDone(c.queue)
	defer pending.free()
	if err := c.waitFor(pending); err != nil {
		return err
	}
	if err := c.takeUncaptured(); err != nil {
		return err
	}
	return c.Err()
}

// Close releases the device. The Context must not be used afterwards.
//
// After a device loss it releases nothing of the device's own (pipelines,
// bind groups, uniform and staging buffers, queue, device): with
// wgpu-native, releasing them after wgpuDeviceDestroy corrupts handles
// that a device created later reuses ("resource with a different
// device" at its next submission, which aborts the process). What a lost
// device holds is left to the driver; a recovery costs that leak once.
//
// Otherwise it first submits the queue's pending writes and waits for
// them: a device released with writes never submitted (a model load that
// failed after uploading some tensors) leaves wgpu-native's queue state
// behind, and the next device's first submission aborts the process with
// "Attempt to use a resource with a different device".
func (c *Context) Close() {
	if c.Err() == nil && c.queue != nil && !c.closing.Load() {
		c.flushPendingWrites()
	}
	c.closing.Store(true)
	defer unregister(c.token)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.Err() != nil {
		c.bindCache, c.pipelines, c.uniforms, c.staging = nil, nil, nil, nil
		c.device, c.queue, c.adapter = nil, nil, nil
		return
	}
	for _, bg := range c.bindCache {
		bg.Release()
	}
	c.bindCache = nil
	for _, p := range c.pipelines {
		p.release()
	}
	c.pipelines = nil
	for _, u := range c.uniforms {
		u.Destroy()
		u.Release()
	}
	c.uniforms = nil
	if c.staging != nil {
		c.staging.Destroy()
		c.staging.Release()
		c.staging = nil
	}
	if c.queue != nil {
		c.queue.Release()
	}
	if c.device != nil {
		releaseDevice(c.device)
	}
	if c.adapter != nil {
		c.adapter.Release()
	}
	c.device, c.queue, c.adapter = nil, nil, nil
}

// flushPendingWrites submits an empty command list, which sends the
// queue's pending buffer writes, and waits for the queue to drain. Its
// error is of no use: the device is being released either way.
func (c *Context) flushPendingWrites() {
	c.queue.Submit()
	_ = c.Wait()
}

// Software reports a CPU adapter (lavapipe, llvmpipe, WARP): kernels may pick
// other shapes there, and heavy benchmarks skip.
func (c *Context) Software() bool { return isSoftware(c.Adapter) }
