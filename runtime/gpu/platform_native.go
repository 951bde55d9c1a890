//go:build !js

package gpu

import (
	"github.com/cogentcore/webgpu/wgpu"
	"github.com/wgllm/wgllm/runtime/gpu/internal/hal"
)

// The binding's API differs a little between wgpu-native and the browser;
// these helpers are the native side (platform_js.go, the browser's).

func adapterInfo(a *wgpu.Adapter) wgpu.AdapterInfo { return a.GetInfo() }

func hasFeature(a *wgpu.Adapter, f wgpu.FeatureName) bool { return a.HasFeature(f) }

func endComputePass(p *wgpu.ComputePassEncoder) error { return p.End() }

func writeBuffer(q *wgpu.Queue, b *wgpu.Buffer, offset uint64, data []byte) error {
	return q.WriteBuffer(b, offset, data)
}

func createComputePipeline(d *wgpu.Device, label string, layout *wgpu.PipelineLayout, mod *wgpu.ShaderModule, entry string) (*wgpu.ComputePipeline, error) {
	return d.CreateComputePipeline(&wgpu.ComputePipelineDescriptor{
		Label:   label,
		Layout:  layout,
		Compute: wgpu.ProgrammableStageDescriptor{Module: mod, EntryPoint: entry},
	})
}

func releaseDevice(d *wgpu.Device) { d.Release() }

// timestampsSupported: natively the shim writes timestamps (native.go).
const timestampsSupported = true

// waitFor polls the device until the callback behind p has run, or the
// device is lost.
func (d *wgpuDevice) waitFor(p pendingStatus) error {
	for !p.done() {
		d.dev.Poll(true, nil)
		if err := d.ev.Err(); err != nil {
			return err
		}
	}
	return nil
}

type wgpuQuerySet struct{ raw *wgpu.QuerySet }

func (q wgpuQuerySet) Release() { q.raw.Release() }

func (d *wgpuDevice) CreateTimestampQuerySet(count uint32) (hal.QuerySet, error) {
	qs, err := d.dev.CreateQuerySet(&wgpu.QuerySetDescriptor{Label: "profile", Type: wgpu.QueryTypeTimestamp, Count: count})
	if err != nil {
		return nil, err
	}
	return wgpuQuerySet{qs}, nil
}

func (e *wgpuEncoder) beginTimedPass(qs hal.QuerySet, index uint32) (hal.Pass, error) {
	p, err := beginTimedPass(e.enc, qs.(wgpuQuerySet).raw, index)
	if err != nil {
		return nil, err
	}
	return wgpuPass{p}, nil
}

func (e *wgpuEncoder) ResolveTimestamps(qs hal.QuerySet, count uint32, dst hal.Buffer) error {
	return e.enc.ResolveQuerySet(qs.(wgpuQuerySet).raw, 0, count, dst.(wgpuBuffer).raw, 0)
}
