// Package gpu is the only package that talks to WebGPU. It owns the choice
// of implementation (wgpu-native through github.com/cogentcore/webgpu, or
// Dawn's C API loaded at run time; see Impl) and of adapter, the device,
// buffers, the pipeline cache, command encoding and readback, and turns
// validation failures and device loss into Go errors. The implementations
// sit behind internal/hal; nothing outside this package sees which runs.
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

	"github.com/wgllm/wgllm/runtime/gpu/internal/hal"
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
	// Impl is the WebGPU implementation: wgpu, dawn or auto (empty: auto,
	// Dawn when its library loads and finds an adapter, else wgpu).
	Impl string
	// DawnLib is the path of Dawn's library (libwebgpu_wrapper.so); empty
	// looks beside the executable, then in third_party/dawn/.
	DawnLib string
	// Warn receives what the implementation prints while it looks for
	// adapters (Dawn writes warnings to stderr; they come here instead).
	Warn func(msg string)
}

// OptionsFromEnv reads WGLLM_ADAPTER, WGLLM_FORCE_FALLBACK, WGLLM_BACKEND,
// WGLLM_GPU_IMPL and WGLLM_DAWN_LIB.
func OptionsFromEnv() Options {
	o := Options{Adapter: os.Getenv("WGLLM_ADAPTER"), Backend: os.Getenv("WGLLM_BACKEND"),
		Impl: os.Getenv("WGLLM_GPU_IMPL"), DawnLib: os.Getenv("WGLLM_DAWN_LIB")}
	if v := os.Getenv("WGLLM_FORCE_FALLBACK"); v != "" && v != "0" && !strings.EqualFold(v, "false") {
		o.ForceFallback = true
	}
	return o
}

// AdapterDesc describes one adapter as `wgllm devices` prints it.
type AdapterDesc struct {
	Index             int
	Impl              Impl // the WebGPU implementation that found it
	Name              string
	Vendor            string
	Driver            string
	Backend           string
	Type              string
	ShaderF16         bool
	Timestamps        bool
	Subgroups         bool
	SubgroupMatrix    bool
	DotI8Packed       bool   // WGSL dot4I8Packed (packed_4x8_integer_dot_product)
	SubgroupMinSize   uint32 // 0 when unknown
	SubgroupMaxSize   uint32
	MaxBinding        uint64 // maxStorageBufferBindingSize
	MaxBuffer         uint64 // maxBufferSize (clamped)
	MaxWGStorage      uint32 // maxComputeWorkgroupStorageSize
	MaxInvocs         uint32 // maxComputeInvocationsPerWorkgroup
	MaxWGPerDim       uint32 // maxComputeWorkgroupsPerDimension
	MaxStorageBuffers uint32 // maxStorageBuffersPerShaderStage

	typ         hal.AdapterType
	backendRank int // 0 for Vulkan, Metal and D3D12
}

// maxBufferCap clamps adapters that report absurd buffer sizes (NVIDIA: 2^64-1).
const maxBufferCap = uint64(1) << 40

func describe(impl Impl, a hal.Adapter) AdapterDesc {
	info := a.Info()
	lim := info.Limits
	f := info.Features
	typ := info.Type
	if info.Fallback {
		typ = hal.AdapterCPU
	}
	return AdapterDesc{
		Impl:              impl,
		Name:              info.Name,
		Vendor:            info.Vendor,
		Driver:            info.Driver,
		Backend:           info.Backend,
		Type:              typ.String(),
		ShaderF16:         f.ShaderF16,
		Timestamps:        f.Timestamps,
		Subgroups:         f.Subgroups,
		SubgroupMatrix:    f.SubgroupMatrix,
		DotI8Packed:       f.DotI8Packed,
		SubgroupMinSize:   f.SubgroupMinSize,
		SubgroupMaxSize:   f.SubgroupMaxSize,
		MaxBinding:        lim.MaxStorageBufferBindingSize,
		MaxBuffer:         min(lim.MaxBufferSize, maxBufferCap),
		MaxWGStorage:      lim.MaxComputeWorkgroupStorageSize,
		MaxInvocs:         lim.MaxComputeInvocationsPerWorkgroup,
		MaxWGPerDim:       lim.MaxComputeWorkgroupsPerDimension,
		MaxStorageBuffers: lim.MaxStorageBuffersPerShaderStage,
		typ:               typ,
		backendRank:       info.BackendRank,
	}
}

// rank orders adapters: discrete GPUs, then integrated, then anything else,
// then CPU/software (lavapipe, llvmpipe, WARP). Within a type, Vulkan/Metal/
// D3D12 before GL.
func rank(d AdapterDesc) int {
	r := 0
	switch d.typ {
	case hal.AdapterDiscreteGPU:
		r = 0
	case hal.AdapterIntegratedGPU:
		r = 10
	case hal.AdapterUnknown:
		r = 20
	default: // CPU
		r = 30
	}
	if strings.Contains(strings.ToLower(d.Name), "llvmpipe") || strings.Contains(strings.ToLower(d.Name), "lavapipe") {
		r = 30
	}
	if d.backendRank != 0 {
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
	raw  hal.Adapter
}

// enumerate lists the adapters of the implementation and backend opts name,
// best first.
func enumerate(opts Options) ([]adapterEntry, error) {
	b, err := ParseBackend(opts.Backend)
	if err != nil {
		return nil, err
	}
	impl, raws, err := implAdapters(opts, b)
	if err != nil {
		return nil, err
	}
	out := make([]adapterEntry, 0, len(raws))
	for _, a := range raws {
		out = append(out, adapterEntry{desc: describe(impl, a), raw: a})
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
	Limits  Limits // what the device was created with
	HasF16  bool
	// HasTimestamps: the device was created with timestamp queries
	// (Options.Timestamps on an adapter that has them).
	HasTimestamps bool
	// Features are what the device was created with; kernels pick
	// variants by them.
	Features Features
	prof     *profiler

	adapter hal.Adapter
	device  hal.Device

	mu        sync.Mutex
	pipelines map[any]*Pipeline
	bindCache map[bindKey]hal.BindGroup
	uniforms  []hal.Buffer // free uniform chunks
	staging   hal.Buffer
	stagingN  uint64 // the staging buffer's size
	nextID    atomic.Uint64
	lost      atomic.Pointer[error]
	closing   atomic.Bool

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
	al := ent.desc
	wgSize := ent.raw.Info().Limits
	var req hal.DeviceRequest
	req.Limits = hal.Limits{
		MaxStorageBufferBindingSize:       al.MaxBinding,
		MaxBufferSize:                     al.MaxBuffer,
		MaxComputeWorkgroupStorageSize:    al.MaxWGStorage,
		MaxComputeInvocationsPerWorkgroup: min(al.MaxInvocs, 1024),
		MaxComputeWorkgroupSizeX:          min(wgSize.MaxComputeWorkgroupSizeX, 1024),
		MaxComputeWorkgroupSizeY:          min(wgSize.MaxComputeWorkgroupSizeY, 1024),
		MaxStorageBuffersPerShaderStage:   min(al.MaxStorageBuffers, 10),
	}
	req.ShaderF16 = al.ShaderF16
	req.Subgroups = al.Subgroups
	req.Timestamps = opts.Timestamps && al.Timestamps
	c := &Context{
		Adapter:       ent.desc,
		HasF16:        req.ShaderF16,
		HasTimestamps: req.Timestamps,
		adapter:       ent.raw,
		pipelines:     map[any]*Pipeline{},
		bindCache:     map[bindKey]hal.BindGroup{},
		Debug:         os.Getenv("WGLLM_GPU_DEBUG") == "1",
	}
	// Subgroup matrices are not requested (Dawn wants allow_unsafe_apis for
	// them, and no kernel uses them yet): the adapter's AdapterDesc says
	// whether it has them. dot4I8Packed is a language feature: nothing to
	// request.
	c.Features = Features{ShaderF16: req.ShaderF16, Subgroups: req.Subgroups, Timestamps: req.Timestamps,
		DotI8Packed: al.DotI8Packed, SubgroupMinSize: al.SubgroupMinSize, SubgroupMaxSize: al.SubgroupMaxSize}
	dev, err := ent.raw.RequestDevice(req, ctxEvents{c})
	if err != nil {
		return nil, fmt.Errorf("gpu: creating device on %q (%s, %s): %w", ent.desc.Name, ent.desc.Backend, ent.desc.Impl, err)
	}
	c.device = dev
	c.Limits = dev.Limits()
	if err := c.confirmSubgroups(); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// ctxEvents hands a device's loss and uncaptured errors to its Context.
type ctxEvents struct{ c *Context }

func (e ctxEvents) Lost(err error) {
	if !e.c.closing.Load() {
		e.c.lost.CompareAndSwap(nil, &err)
	}
}
func (e ctxEvents) Uncaptured(err error) { e.c.setUncaptured(err) }
func (e ctxEvents) Err() error           { return e.c.Err() }

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
func (c *Context) Wait() error {
	if err := c.device.WaitIdle(); err != nil {
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
	if c.Err() == nil && c.device != nil && !c.closing.Load() {
		c.flushPendingWrites()
	}
	c.closing.Store(true)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.device == nil {
		return
	}
	if c.Err() != nil {
		c.bindCache, c.pipelines, c.uniforms, c.staging = nil, nil, nil, nil
		c.device.Release(true)
		c.device, c.adapter = nil, nil
		return
	}
	for _, bg := range c.bindCache {
		bg.Release()
	}
	c.bindCache = nil
	for _, p := range c.pipelines {
		p.raw.Release()
	}
	c.pipelines = nil
	for _, u := range c.uniforms {
		u.Destroy()
	}
	c.uniforms = nil
	if c.staging != nil {
		c.staging.Destroy()
		c.staging = nil
	}
	c.device.Release(false)
	c.adapter.Release()
	c.device, c.adapter = nil, nil
}

// InjectDeviceLoss destroys the device as a driver reset would, so tests can
// check that loss is reported as an error everywhere.
func (c *Context) InjectDeviceLoss() { c.device.Destroy() }

// flushPendingWrites submits an empty command list, which sends the
// queue's pending buffer writes, and waits for the queue to drain. Its
// error is of no use: the device is being released either way.
func (c *Context) flushPendingWrites() {
	c.device.SubmitPending()
	_ = c.Wait()
}

// Software reports a CPU adapter (lavapipe, llvmpipe, WARP): kernels may pick
// other shapes there, and heavy benchmarks skip.
func (c *Context) Software() bool { return isSoftware(c.Adapter) }
