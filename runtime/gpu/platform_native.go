//go:build !js

package gpu

import "github.com/cogentcore/webgpu/wgpu"

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

// waitFor polls the device until the callback behind p has run, or the
// device is lost.
func (c *Context) waitFor(p pendingStatus) error {
	for !p.done() {
		c.device.Poll(true, nil)
		if err := c.Err(); err != nil {
			return err
		}
	}
	return nil
}
