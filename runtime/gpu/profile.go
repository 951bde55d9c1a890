package gpu

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"

	"github.com/wgllm/wgllm/runtime/gpu/internal/hal"
)

// profiler times each dispatch with a compute pass of its own whose start
// and end write timestamps; at submission the timestamps are resolved and
// read back (the submission waits), and the difference is summed per
// pipeline label. Each dispatch in its own pass adds a little time of its
// own, so the totals are an upper bound on what the ops take in one pass.
type profiler struct {
	qs       hal.QuerySet
	resolved hal.Buffer
	cap      int // dispatches one submission can time
	totals   map[string]*OpTime
	untimed  int // dispatches past cap
}

// WebGPU caps a query set at 4096 queries: two per timed dispatch.
const profileCap = 2048

// EnableProfiling starts timing every dispatch (see OpTime); the device
// must have timestamp queries (Options.Timestamps; not in the browser).
func (c *Context) EnableProfiling() error {
	if !c.HasTimestamps {
		return errors.New("gpu: this adapter (or device) has no timestamp queries; profiling needs them")
	}
	if c.prof != nil {
		return nil
	}
	qs, err := c.device.CreateTimestampQuerySet(2 * profileCap)
	if err != nil {
		return fmt.Errorf("gpu: creating the timestamp query set: %w", err)
	}
	buf, err := c.device.CreateBuffer("profile", 16*profileCap, hal.UsageQueryResolve|hal.UsageCopySrc)
	if err != nil {
		qs.Release()
		return fmt.Errorf("gpu: creating the timestamp buffer: %w", err)
	}
	c.prof = &profiler{qs: qs, resolved: buf, cap: profileCap, totals: map[string]*OpTime{}}
	return nil
}

// timedDispatch records one dispatch in a pass of its own with timestamps.
func (e *Encoder) timedDispatch(p *Pipeline, bg hal.BindGroup, off uint32, x, y, z uint32) error {
	pr := e.ctx.prof
	if err := e.endPass(); err != nil {
		return err
	}
	var qs hal.QuerySet
	if len(e.timed) >= pr.cap {
		pr.untimed++
	} else {
		qs = pr.qs
	}
	pass, err := e.enc.BeginPass(qs, uint32(len(e.timed)))
	if err != nil {
		return err
	}
	if qs != nil {
		e.timed = append(e.timed, p.label)
	}
	e.pass = pass
	e.pass.Dispatch(p.raw, bg, off, x, y, z)
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
	if err := e.enc.ResolveTimestamps(pr.qs, uint32(2*n), pr.resolved); err != nil {
		return nil, fmt.Errorf("gpu: resolving timestamps: %w", err)
	}
	rb, err := e.ctx.NewReadback(16 * n)
	if err != nil {
		return nil, err
	}
	if err := e.enc.Copy(pr.resolved, 0, rb.buf, 0, 16*n); err != nil {
		rb.Release()
		return nil, fmt.Errorf("gpu: copying timestamps: %w", err)
	}
	rb.n = 16 * n
	return rb, nil
}

// OpTime is the GPU time of every dispatch of one pipeline since profiling
// was enabled or last reset.
type OpTime struct {
	Label string // the pipeline label (its key's String())
	Count int    // dispatches timed
	Nanos uint64 // GPU time, summed
}

// Profile returns the GPU time per pipeline since profiling began or the
// last ResetProfile, most time first, and how many dispatches went untimed.
func (c *Context) Profile() ([]OpTime, int) {
	if c.prof == nil {
		return nil, 0
	}
	out := make([]OpTime, 0, len(c.prof.totals))
	for _, t := range c.prof.totals {
		out = append(out, *t)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Nanos != out[j].Nanos {
			return out[i].Nanos > out[j].Nanos
		}
		return out[i].Label < out[j].Label
	})
	return out, c.prof.untimed
}

// ResetProfile clears the totals.
func (c *Context) ResetProfile() {
	if c.prof != nil {
		c.prof.totals = map[string]*OpTime{}
		c.prof.untimed = 0
	}
}

func (e *Encoder) collectTimestamps(rb *Readback, labels []string) error {
	defer rb.Release()
	raw := make([]byte, 16*len(labels))
	if err := rb.Read(raw); err != nil {
		return err
	}
	pr := e.ctx.prof
	for i, l := range labels {
		start := binary.LittleEndian.Uint64(raw[16*i:])
		end := binary.LittleEndian.Uint64(raw[16*i+8:])
		t := pr.totals[l]
		if t == nil {
			t = &OpTime{Label: l}
			pr.totals[l] = t
		}
		t.Count++
		if end > start { // the timer can wrap or reset between passes
			t.Nanos += end - start
		}
	}
	return nil
}
