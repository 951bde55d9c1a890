package gpu

import (
	"fmt"

	"github.com/cogentcore/webgpu/wgpu"
)

// Access says how a shader uses one storage binding.
type Access int

const (
	ReadOnly Access = iota
	ReadWrite
)

// PipelineSpec is a compute shader and its bindings. Every shader follows one
// layout: @binding(0) is the uniform parameter block (a dynamic offset into
// the encoder's uniform arena), @binding(1..) are storage buffers in order.
type PipelineSpec struct {
	Source  string
	Entry   string // default "main"
	Storage []Access
}

// Pipeline is a compiled compute pipeline and its bind group layout.
type Pipeline struct {
	label    string
	pipe     *wgpu.ComputePipeline
	bgl      *wgpu.BindGroupLayout
	layout   *wgpu.PipelineLayout
	module   *wgpu.ShaderModule
	nStorage int
}

// Label is the pipeline's cache key as text, e.g. "rmsnorm_f32_wg256".
func (p *Pipeline) Label() string { return p.label }

func (p *Pipeline) release() {
	p.pipe.Release()
	p.layout.Release()
	p.bgl.Release()
	p.module.Release()
}

// UniformSlot is the most bytes one dispatch's parameters may take, and the
// stride of the uniform arena (WebGPU's largest minUniformBufferOffsetAlignment).
const UniformSlot = 256

// Pipeline returns the pipeline cached under key, building it on first use.
// The key is a small comparable struct (shader name + specialisation values)
// whose String() labels the pipeline in errors and debuggers.
func (c *Context) Pipeline(key fmt.Stringer, build func() (PipelineSpec, error)) (*Pipeline, error) {
	c.mu.Lock()
	p, ok := c.pipelines[key]
	c.mu.Unlock()
	if ok {
		return p, nil
	}
	if err := c.Err(); err != nil {
		return nil, err
	}
	label := key.String()
	spec, err := build()
	if err != nil {
		return nil, fmt.Errorf("gpu: pipeline %s: %w", label, err)
	}
	if spec.Entry == "" {
		spec.Entry = "main"
	}
	if int(c.Limits.MaxStorageBuffersPerShaderStage) < len(spec.Storage) {
		return nil, fmt.Errorf("gpu: pipeline %s needs %d storage buffers, the device allows %d", label, len(spec.Storage), c.Limits.MaxStorageBuffersPerShaderStage)
	}
	mod, err := c.device.CreateShaderModule(&wgpu.ShaderModuleDescriptor{
		Label:          label,
		WGSLDescriptor: &wgpu.ShaderModuleWGSLDescriptor{Code: spec.Source},
	})
	if err != nil {
		return nil, fmt.Errorf("gpu: compiling shader %s: %w", label, err)
	}
	entries := []wgpu.BindGroupLayoutEntry{{
		Binding:    0,
		Visibility: wgpu.ShaderStageCompute,
		Buffer:     wgpu.BufferBindingLayout{Type: wgpu.BufferBindingTypeUniform, HasDynamicOffset: true},
	}}
	for i, a := range spec.Storage {
		t := wgpu.BufferBindingTypeReadOnlyStorage
		if a == ReadWrite {
			t = wgpu.BufferBindingTypeStorage
		}
		entries = append(entries, wgpu.BindGroupLayoutEntry{
			Binding:    uint32(i + 1),
			Visibility: wgpu.ShaderStageCompute,
			Buffer:     wgpu.BufferBindingLayout{Type: t},
		})
	}
	bgl, err := c.device.CreateBindGroupLayout(&wgpu.BindGroupLayoutDescriptor{Label: label, Entries: entries})
	if err != nil {
		mod.Release()
		return nil, fmt.Errorf("gpu: bind group layout %s: %w", label, err)
	}
	layout, err := c.device.CreatePipelineLayout(&wgpu.PipelineLayoutDescriptor{Label: label, BindGroupLayouts: []*wgpu.BindGroupLayout{bgl}})
	if err != nil {
		bgl.Release()
		mod.Release()
		return nil, fmt.Errorf("gpu: pipeline layout %s: %w", label, err)
	}
	pipe, err := createComputePipeline(c.device, label, layout, mod, spec.Entry)
	if err != nil {
		layout.Release()
		bgl.Release()
		mod.Release()
		return nil, fmt.Errorf("gpu: creating pipeline %s: %w", label, err)
	}
	p = &Pipeline{label: label, pipe: pipe, bgl: bgl, layout: layout, module: mod, nStorage: len(spec.Storage)}
	c.mu.Lock()
	if old, ok := c.pipelines[key]; ok { // built concurrently: keep the first
		c.mu.Unlock()
		p.release()
		return old, nil
	}
	c.pipelines[key] = p
	c.mu.Unlock()
	return p, nil
}
