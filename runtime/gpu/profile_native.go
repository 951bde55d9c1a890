//go:build !js

package gpu

import (
	"errors"
	"fmt"

	"github.com/cogentcore/webgpu/wgpu"
)

// profiler times each dispatch with a compute pass of its own whose start
// and end write timestamps; at submission the timestamps are resolved and
// read back (the submission waits), and the difference is summed per
// pipeline label. Each dispatch in its own pass adds a little time of its
// own, so the totals are an upper bound on what the ops take in one pass.
type profiler struct {
	qs       *wgpu.QuerySet
	resolved *wgpu.Buffer
	cap      int // dispatches one submission can time
	totals   map[string]*OpTime
	untimed  int // dispatches past cap
}

const profileCap = 4096

// EnableProfiling starts timing every dispatch (see OpTime); the device
// must have timestamp queries (Options.Timestamps).
func (c *Context) EnableProfiling() error {
	if !c.HasTimestamps {
		return errors.New("gpu: this adapter (or device) has no timestamp queries; profiling needs them")
	}
	if c.prof != nil {
		return nil
	}
	qs, err := c.device.CreateQuerySet(&wgpu.QuerySetDescriptor{Label: "profile", Type: wgpu.QueryTypeTimestamp, Count: 2 * profileCap})
	if err != nil {
		return fmt.Errorf("gpu: creating the timestamp query set: %w", err)
	}
	buf, err := c.device.CreateBuffer(&wgpu.BufferDescriptor{Label: "profile", Size: 16 * profileCap,
		Usage: wgpu.BufferUsageQueryResolve | wgpu.BufferUsageCopySrc})
	if err != nil {
		qs.Release()
		return fmt.Errorf("gpu: creating the timestamp buffer: %w", err)
	}
	c.prof = &profiler{qs: qs, resolved: buf, cap: profileCap, totals: map[string]*OpTime{}}
	return nil
}

// timedDispatch records one dispatch in a pass of its own with timestamps.
func (e *Encoder) timedDispatch(p *Pipeline, bg *wgpu.BindGroup, off uint32, x, y, z uint32) error {
	pr := e.ctx.prof
	if err := e.endPass(); err != nil {
		return err
	}
	if len(e.timed) >= pr.cap {
		pr.untimed++
		e.pass = e.enc.BeginComputePass(nil)
	} else {
		pass, err := beginTimedPass(e.enc, pr.qs, uint32(len(e.timed)))
		if err != nil {
			return err
		}
		e.pass = pass
		e.timed = append(e.timed, p.label)
	}
	e.pass.SetPipeline(p.pipe)
	e.pass.SetBindGroup(0, bg, []uint32{off})
	e.pass.DispatchWorkgroups(x, y, z)
	e.passOps = append(e.passOps, p)
	return e.endPass()
}

// resolveTimestamps records the copy of this encoder's timestamps to the
// host; collectTimestamps adds them up once the submission has finished.
func (e *Encoder) resolveTimestamps() (*Readback, error) {
	n := uint64(len(e.timed))
	if n == 0 {
		return nil, nil
	}
	pr := e.ctx.prof
	if err := e.enc.ResolveQuerySet(pr.qs, 0, uint32(2*n), pr.resolved, 0); err != nil {
		return nil, fmt.Errorf("gpu: resolving timestamps: %w", err)
	}
	rb, err := e.ctx.NewReadback(16 * n)
	if err != nil {
		return nil, err
	}
	if err := e.enc.CopyBufferToBuffer(pr.resolved, 0, rb.buf, 0, 16*n); err != nil {
		rb.Release()
		return nil, fmt.Errorf("gpu: copying timestamps: %w", err)
	}
	rb.n = 16 * n
	return rb, nil
}
