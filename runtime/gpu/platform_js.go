//go:build js

package gpu

// The browser side of the runtime: the same Context, buffers, pipelines and
// encoders as natively, on the page's WebGPU (navigator.gpu) through the
// binding's js backend. What that backend lacks (the device request's
// limits, adapter info and features, the device-lost promise, uncaptured
// errors, map and work-done promises that report failure) is done here on
// the objects' JavaScript values.
//
// Waiting: wgpu-native is polled; in the browser a promise settles on the
// JavaScript event loop, and waitFor blocks its goroutine on a channel that
// the promise's callback feeds. Go's wasm runtime returns to the event loop
// while every goroutine is blocked, so this works from any goroutine except
// one running inside a JavaScript callback (a js.FuncOf handler): callers
// from JavaScript must start a goroutine and answer with a promise, as
// cmd/wgllm-wasm does.

import (
	"errors"
	"fmt"
	"syscall/js"
	"unsafe"

	"github.com/cogentcore/webgpu/wgpu"
	"github.com/wgllm/wgllm/runtime/gpu/internal/hal"
)

// The binding's js objects (Adapter, Device, Queue, Buffer, ...) are each
// a struct of one js.Value with no accessor; jsValue views one. This
// assertion stops the build if a binding upgrade changes that layout.
var _ = [1]struct{}{}[unsafe.Sizeof(wgpu.Buffer{})-unsafe.Sizeof(js.Value{})]
var _ = [1]struct{}{}[unsafe.Sizeof(wgpu.Adapter{})-unsafe.Sizeof(js.Value{})]
var _ = [1]struct{}{}[unsafe.Sizeof(wgpu.Device{})-unsafe.Sizeof(js.Value{})]
var _ = [1]struct{}{}[unsafe.Sizeof(wgpu.Queue{})-unsafe.Sizeof(js.Value{})]

type jsBacked interface {
	wgpu.Adapter | wgpu.Device | wgpu.Queue | wgpu.Buffer
}

func jsValue[T jsBacked](p *T) js.Value { return *(*js.Value)(unsafe.Pointer(p)) }

func createInstance(wgpu.InstanceBackend) (*wgpu.Instance, error) {
	inst := wgpu.CreateInstance(nil)
	if inst == nil {
		return nil, errors.New("gpu: this browser has no WebGPU (navigator.gpu is missing; Chrome and Edge have it, Firefox and Safari behind a flag or in recent versions)")
	}
	return inst, nil
}

func adapterInfo(a *wgpu.Adapter) wgpu.AdapterInfo {
	v := jsValue(a)
	info := v.Get("info")
	out := wgpu.AdapterInfo{BackendType: wgpu.BackendTypeWebGPU, AdapterType: wgpu.AdapterTypeUnknown}
	if !info.Truthy() {
		return out
	}
	str := func(k string) string {
		if s := info.Get(k); s.Type() == js.TypeString {
			return s.String()
		}
		return ""
	}
	out.VendorName = str("vendor")
	out.Architecture = str("architecture")
	out.DriverDescription = str("description")
	// The browser hides most of this; "google/swiftshader" is as much as
	// Chromium tells about its software adapter.
	out.Name = out.DriverDescription
	if out.Name == "" {
		out.Name = out.VendorName
		if out.Architecture != "" {
			out.Name += "/" + out.Architecture
		}
	}
	if info.Get("isFallbackAdapter").Truthy() || v.Get("isFallbackAdapter").Truthy() || out.Architecture == "swiftshader" {
		out.AdapterType = wgpu.AdapterTypeCPU
	}
	return out
}

func hasFeature(a *wgpu.Adapter, f wgpu.FeatureName) bool {
	feats := jsValue(a).Get("features")
	return feats.Truthy() && feats.Call("has", f.String()).Bool()
}

// requestDevice asks for the limits New computed (each at most the
// adapter's, so the request cannot fail on them) and shader-f16 when
// wanted. Timestamps are not requested: profiling is native only.
func requestDevice(a *wgpu.Adapter, lim wgpu.Limits, f16, timestamps bool, token uintptr) (*wgpu.Device, error) {
	features := []any{}
	if f16 {
		features = append(features, wgpu.FeatureNameShaderF16.String())
	}
	desc := map[string]any{
		"label":            "wgllm",
		"requiredFeatures": features,
		"requiredLimits": map[string]any{
			"maxStorageBufferBindingSize":       float64(lim.MaxStorageBufferBindingSize),
			"maxBufferSize":                     float64(lim.MaxBufferSize),
			"maxComputeWorkgroupStorageSize":    lim.MaxComputeWorkgroupStorageSize,
			"maxComputeInvocationsPerWorkgroup": lim.MaxComputeInvocationsPerWorkgroup,
			"maxComputeWorkgroupSizeX":          lim.MaxComputeWorkgroupSizeX,
			"maxComputeWorkgroupSizeY":          lim.MaxComputeWorkgroupSizeY,
			"maxStorageBuffersPerShaderStage":   lim.MaxStorageBuffersPerShaderStage,
		},
	}
	dev, err := await(jsValue(a).Call("requestDevice", desc))
	if err != nil {
		return nil, err
	}
	if !dev.Truthy() {
		return nil, errors.New("the adapter refused the device request")
	}
	// Loss and errors raised outside a scope (validation errors: in the
	// browser every one is reported this way, after the call) reach the
	// Context through its token, as natively.
	onLost := js.FuncOf(func(this js.Value, args []js.Value) any {
		ev := lookup(token)
		if ev == nil || len(args) == 0 {
			return nil
		}
		ev.Lost(fmt.Errorf("gpu: device lost (%s): %s", args[0].Get("reason").String(), args[0].Get("message").String()))
		return nil
	})
	dev.Get("lost").Call("then", onLost) // settles once; the function lives as long as the page
	onError := js.FuncOf(func(this js.Value, args []js.Value) any {
		ev := lookup(token)
		if ev == nil || len(args) == 0 {
			return nil
		}
		e := args[0].Get("error")
		ev.Uncaptured(fmt.Errorf("gpu: %s: %s", e.Get("constructor").Get("name").String(), e.Get("message").String()))
		return nil
	})
	dev.Call("addEventListener", "uncapturederror", onError)
	d := wgpu.NewDevice(dev)
	return &d, nil
}

// await blocks until the promise settles (see the file comment).
func await(promise js.Value) (js.Value, error) {
	p := newPending(promise)
	v := <-p.ch
	p.release()
	if v != 0 {
		return js.Undefined(), fmt.Errorf("gpu: %s", p.reason)
	}
	return p.result, nil
}

// pendingStatus is an operation the browser finishes later: 0 once its
// promise resolves, 1 if it rejects (reason says why).
type pendingStatus = *pendingOp

type pendingOp struct {
	ch       chan int32
	status   int32
	settled  bool
	result   js.Value
	reason   string
	onOK     js.Func
	onReject js.Func
}

func newPending(promise js.Value) *pendingOp {
	p := &pendingOp{ch: make(chan int32, 1)}
	p.onOK = js.FuncOf(func(this js.Value, args []js.Value) any {
		if len(args) > 0 {
			p.result = args[0]
		}
		p.ch <- 0
		return nil
	})
	p.onReject = js.FuncOf(func(this js.Value, args []js.Value) any {
		p.reason = "promise rejected"
		if len(args) > 0 {
			if m := args[0].Get("message"); m.Type() == js.TypeString {
				p.reason = m.String()
			} else {
				p.reason = args[0].Call("toString").String()
			}
		}
		p.ch <- 1
		return nil
	})
	promise.Call("then", p.onOK, p.onReject)
	return p
}

func (p *pendingOp) release() {
	p.onOK.Release()
	p.onReject.Release()
}

func (p *pendingOp) value() int32 { return p.status }

func (p *pendingOp) free() {
	if p.settled {
		p.release()
	}
}

// mapRead starts mapping buf[off:off+size] for reading; waitFor returns a
// rejection's message as its error.
func mapRead(buf *wgpu.Buffer, off, size uint64) pendingStatus {
	return newPending(jsValue(buf).Call("mapAsync", uint32(wgpu.MapModeRead), float64(off), float64(size)))
}

func onWorkDone(q *wgpu.Queue) pendingStatus {
	return newPending(jsValue(q).Call("onSubmittedWorkDone"))
}

// waitFor blocks until the operation's promise settles; a rejection (a
// failed mapping, a lost device) is its error.
func (d *wgpuDevice) waitFor(p pendingStatus) error {
	if !p.settled {
		if <-p.ch != 0 {
			p.status = int32(wgpu.BufferMapAsyncStatusUnknown)
		}
		p.settled = true
	}
	if err := d.ev.Err(); err != nil {
		return err
	}
	if p.status != 0 {
		return fmt.Errorf("gpu: %s", p.reason)
	}
	return nil
}

func endComputePass(p *wgpu.ComputePassEncoder) error {
	p.End()
	return nil // the browser reports errors later, as uncaptured errors
}

// writeBuffer copies data into a JavaScript array for the queue (the
// binding's WriteBuffer needs a global the page would have to set).
func writeBuffer(q *wgpu.Queue, b *wgpu.Buffer, offset uint64, data []byte) error {
	arr := js.Global().Get("Uint8Array").New(len(data))
	js.CopyBytesToJS(arr, data)
	jsValue(q).Call("writeBuffer", jsValue(b), float64(offset), arr)
	return nil
}

func createComputePipeline(d *wgpu.Device, label string, layout *wgpu.PipelineLayout, mod *wgpu.ShaderModule, entry string) (*wgpu.ComputePipeline, error) {
	return d.CreateComputePipeline(&wgpu.ComputePipelineDescriptor{
		Layout:  layout,
		Compute: wgpu.ProgrammableStageDescriptor{Module: mod, EntryPoint: entry},
	})
}

// releaseDevice destroys the device: the browser frees its memory only then
// (or when the page's garbage collector gets to it).
func releaseDevice(d *wgpu.Device) { jsValue(d).Call("destroy") }

// Destroy destroys the device, for tests of loss handling.
func (d *wgpuDevice) Destroy() {
	jsValue(d.dev).Call("destroy")
	d.ev.Lost(errors.New("gpu: device lost (destroyed)"))
}

// The binding's js backend has no timestamp queries: profiling is native
// only (adapters report no timestamp-query, so EnableProfiling says so).
const timestampsSupported = false

var errNoProfiling = errors.New("gpu: profiling is not supported in the browser build (no timestamp queries in the js binding)")

func (d *wgpuDevice) CreateTimestampQuerySet(uint32) (hal.QuerySet, error) {
	return nil, errNoProfiling
}

func (e *wgpuEncoder) beginTimedPass(hal.QuerySet, uint32) (hal.Pass, error) {
	return nil, errNoProfiling
}

func (e *wgpuEncoder) ResolveTimestamps(hal.QuerySet, uint32, hal.Buffer) error {
	return errNoProfiling
}
