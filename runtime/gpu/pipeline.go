package gpu

import (
	"fmt"

	"github.com/wgllm/wgllm/runtime/gpu/internal/hal"
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
	raw      hal.Pipeline
	nStorage int
}

// Label is the pipeline's cache key as text, e.g. "rmsnorm_f32_wg256".
func (p *Pipeline) Label() string { return p.label }

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
	readWrite := make([]bool, len(spec.Storage))
	for i, a := range spec.Storage {
		readWrite[i] = a == ReadWrite
	}
	raw, err := c.device.CreatePipeline(label, spec.Source, spec.Entry, readWrite)
	if err != nil {
		return nil, fmt.Errorf("gpu: %w", err)
	}
	p = &Pipeline{label: label, raw: raw, nStorage: len(spec.Storage)}
	c.mu.Lock()
	if old, ok := c.pipelines[key]; ok { // built concurrently: keep the first
		c.mu.Unlock()
		p.raw.Release()
		return old, nil
	}
	c.pipelines[key] = p
	c.mu.Unlock()
	return p, nil
}
