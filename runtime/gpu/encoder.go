package gpu

import (
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/wgllm/wgllm/runtime/gpu/internal/hal"
)

// Arg is one storage binding of a dispatch: a byte range of a buffer, usually
// chosen by Buffer.Window.
type Arg struct {
	Buf    *Buffer
	Offset uint64
	Size   uint64
}

// WholeBuffer binds all of b (it must fit one binding).
func WholeBuffer(b *Buffer) Arg { return Arg{Buf: b, Size: b.size} }

const maxArgs = 9

type argKey struct{ id, off, size uint64 }

// bindKey identifies a bind group: the same pipeline layout, uniform chunk
// and storage ranges reuse one bind group, so steady-state decoding creates
// none.
type bindKey struct {
	pipe    *Pipeline // each pipeline has its own layout
	uniform hal.Buffer
	n       int
	args    [maxArgs]argKey
}

func (k *bindKey) uses(id uint64) bool {
	for i := 0; i < k.n; i++ {
		if k.args[i].id == id {
			return true
		}
	}
	return false
}

// uniformChunk is how much parameter memory one uniform buffer holds.
const uniformChunk = 64 << 10

type uniformBlock struct {
	buf  hal.Buffer
	host []byte
}

// Encoder records many dispatches and copies into one command buffer, and
// submits them at once. It is not safe for concurrent use.
type Encoder struct {
	ctx     *Context
	enc     hal.Encoder
	pass    hal.Pass
	blocks  []*uniformBlock
	passOps []*Pipeline // dispatches in the open pass, to name them in errors
	timed   []string    // profiling: the label of each timed dispatch
	count   int
	err     error
}

// NewEncoder starts recording.
func (c *Context) NewEncoder() (*Encoder, error) {
	if err := c.Err(); err != nil {
		return nil, err
	}
	enc, err := c.device.CreateEncoder()
	if err != nil {
		return nil, fmt.Errorf("gpu: creating command encoder: %w", err)
	}
	return &Encoder{ctx: c, enc: enc}, nil
}

// Context is the device this encoder records for.
func (e *Encoder) Context() *Context { return e.ctx }

// Dispatches is how many dispatches were recorded.
func (e *Encoder) Dispatches() int { return e.count }

func (e *Encoder) uniformSlot(params any) (*uniformBlock, uint32, error) {
	var blk *uniformBlock
	if n := len(e.blocks); n > 0 && len(e.blocks[n-1].host)+UniformSlot <= uniformChunk {
		blk = e.blocks[n-1]
	} else {
		raw, err := e.ctx.takeUniform()
		if err != nil {
			return nil, 0, err
		}
		blk = &uniformBlock{buf: raw, host: make([]byte, 0, uniformChunk)}
		e.blocks = append(e.blocks, blk)
	}
	off := len(blk.host)
	var err error
	blk.host, err = binary.Append(blk.host, binary.LittleEndian, params)
	if err != nil {
		return nil, 0, fmt.Errorf("gpu: encoding parameters %T: %w", params, err)
	}
	if len(blk.host)-off > UniformSlot {
		return nil, 0, fmt.Errorf("gpu: parameters %T take %d bytes, more than %d", params, len(blk.host)-off, UniformSlot)
	}
	blk.host = blk.host[:off+UniformSlot]
	return blk, uint32(off), nil
}

func (c *Context) takeUniform() (hal.Buffer, error) {
	c.mu.Lock()
	if n := len(c.uniforms); n > 0 {
		u := c.uniforms[n-1]
		c.uniforms = c.uniforms[:n-1]
		c.mu.Unlock()
		return u, nil
	}
	c.mu.Unlock()
	u, err := c.device.CreateBuffer("uniforms", uniformChunk, hal.UsageUniform|hal.UsageCopyDst)
	if err != nil {
		return nil, fmt.Errorf("gpu: creating uniform buffer: %w", err)
	}
	return u, nil
}

func (c *Context) bindGroup(p *Pipeline, uniform hal.Buffer, args []Arg) (hal.BindGroup, error) {
	k := bindKey{pipe: p, uniform: uniform, n: len(args)}
	for i, a := range args {
		k.args[i] = argKey{a.Buf.id, a.Offset, a.Size}
	}
	c.mu.Lock()
	bg, ok := c.bindCache[k]
	c.mu.Unlock()
	if ok {
		return bg, nil
	}
	var storage [maxArgs]hal.Binding
	for i, a := range args {
		storage[i] = hal.Binding{Buffer: a.Buf.raw, Offset: a.Offset, Size: a.Size}
	}
	bg, err := c.device.CreateBindGroup(p.raw, uniform, UniformSlot, storage[:len(args)])
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if len(c.bindCache) >= 1<<14 { // bound the cache; it refills with what is live
		for key, old := range c.bindCache {
			old.Release()
			delete(c.bindCache, key)
		}
	}
	c.bindCache[k] = bg
	c.mu.Unlock()
	return bg, nil
}

// Dispatch records one compute dispatch of p over x*y*z workgroups. params is
// a struct of 4-byte fields (u32, i32, f32) matching the shader's uniform
// block; args are the storage bindings in binding order.
func (e *Encoder) Dispatch(p *Pipeline, params any, args []Arg, x, y, z uint32) error {
	if e.err != nil {
		return e.err
	}
	if e.enc == nil {
		return fmt.Errorf("gpu: dispatch %s on a finished encoder", p.label)
	}
	c := e.ctx
	if len(args) != p.nStorage {
		return fmt.Errorf("gpu: dispatch %s: %d storage bindings given, the shader has %d", p.label, len(args), p.nStorage)
	}
	if max := c.Limits.MaxComputeWorkgroupsPerDimension; x > max || y > max || z > max {
		return fmt.Errorf("gpu: dispatch %s: workgroups %dx%dx%d exceed the per-dimension limit %d", p.label, x, y, z, max)
	}
	if x == 0 || y == 0 || z == 0 {
		return nil
	}
	for i, a := range args {
		if a.Buf == nil || a.Buf.raw == nil {
			return fmt.Errorf("gpu: dispatch %s: binding %d is nil or destroyed", p.label, i+1)
		}
		if a.Size > c.MaxBinding() {
			return fmt.Errorf("gpu: dispatch %s: binding %d (%q) is %d bytes: %w (%d bytes)", p.label, i+1, a.Buf.label, a.Size, ErrBindingTooLarge, c.MaxBinding())
		}
		if a.Offset+a.Size > a.Buf.size || a.Size == 0 || a.Size%4 != 0 {
			return fmt.Errorf("gpu: dispatch %s: binding %d range %d+%d invalid for buffer %q of %d bytes", p.label, i+1, a.Offset, a.Size, a.Buf.label, a.Buf.size)
		}
	}
	blk, off, err := e.uniformSlot(params)
	if err != nil {
		return err
	}
	bg, err := c.bindGroup(p, blk.buf, args)
	if err != nil {
		return fmt.Errorf("gpu: dispatch %s: bind group: %w", p.label, err)
	}
	if c.prof != nil {
		e.count++
		if err := e.timedDispatch(p, bg, off, x, y, z); err != nil {
			e.err = fmt.Errorf("gpu: dispatch %s (%dx%dx%d workgroups): %w", p.label, x, y, z, err)
			return e.err
		}
		return nil
	}
	if e.pass == nil {
		pass, err := e.enc.BeginPass(nil, 0)
		if err != nil {
			e.err = fmt.Errorf("gpu: dispatch %s: beginning a compute pass: %w", p.label, err)
			return e.err
		}
		e.pass = pass
	}
	e.pass.Dispatch(p.raw, bg, off, x, y, z)
	e.passOps = append(e.passOps, p)
	e.count++
	if c.Debug {
		if err := e.endPass(); err != nil {
			e.err = fmt.Errorf("gpu: dispatch %s (%dx%dx%d workgroups): %w", p.label, x, y, z, err)
			return e.err
		}
	}
	return nil
}

func (e *Encoder) endPass() error {
	if e.pass == nil {
		return nil
	}
	err := e.pass.End()
	e.pass = nil
	ops := e.passOps
	e.passOps = e.passOps[:0]
	if err != nil {
		names := make([]string, 0, len(ops))
		seen := map[string]bool{}
		for _, p := range ops {
			if !seen[p.label] {
				seen[p.label] = true
				names = append(names, p.label)
			}
		}
		return fmt.Errorf("compute pass with %s: %w", strings.Join(names, ", "), err)
	}
	return nil
}

// Copy records a buffer-to-buffer copy (byte offsets and size multiples of 4).
func (e *Encoder) Copy(dst *Buffer, dstOff uint64, src *Buffer, srcOff uint64, size uint64) error {
	if e.err != nil {
		return e.err
	}
	if dstOff+size > dst.size || srcOff+size > src.size || size%4 != 0 || dstOff%4 != 0 || srcOff%4 != 0 {
		return fmt.Errorf("gpu: copy %d bytes %q+%d -> %q+%d: out of range or unaligned", size, src.label, srcOff, dst.label, dstOff)
	}
	if err := e.endPass(); err != nil {
		e.err = err
		return err
	}
	if err := e.enc.Copy(src.raw, srcOff, dst.raw, dstOff, size); err != nil {
		e.err = fmt.Errorf("gpu: copy %q -> %q: %w", src.label, dst.label, err)
		return e.err
	}
	return nil
}

// Submit sends everything recorded to the GPU; it does not wait. The encoder
// cannot be used afterwards.
func (e *Encoder) Submit() error {
	defer e.release()
	if e.err != nil {
		return e.err
	}
	if err := e.ctx.Err(); err != nil {
		return err
	}
	if err := e.endPass(); err != nil {
		return fmt.Errorf("gpu: %w", err)
	}
	var stamps *Readback
	if e.ctx.prof != nil {
		var err error
		if stamps, err = e.resolveTimestamps(); err != nil {
			return err
		}
	}
	cmd, err := e.enc.Finish()
	if err != nil {
		if stamps != nil {
			stamps.Release()
		}
		return fmt.Errorf("gpu: finishing commands: %w", err)
	}
	defer cmd.Release()
	// Uniforms go in through the queue, so they land after earlier
	// submissions that used the same chunks and before this one.
	for _, blk := range e.blocks {
		if err := e.ctx.device.WriteBuffer(blk.buf, 0, blk.host); err != nil {
			return fmt.Errorf("gpu: writing uniforms: %w", err)
		}
	}
	e.ctx.device.Submit(cmd)
	if err := e.ctx.takeUncaptured(); err != nil {
		return err
	}
	if stamps != nil { // profiling: this submission's timestamps, now
		if err := e.collectTimestamps(stamps, e.timed); err != nil {
			return err
		}
	}
	return e.ctx.Err()
}

// SubmitAndWait submits and waits for the GPU to finish.
func (e *Encoder) SubmitAndWait() error {
	if err := e.Submit(); err != nil {
		return err
	}
	return e.ctx.Wait()
}

// Release abandons an encoder without submitting (safe after Submit).
func (e *Encoder) Release() { e.release() }

func (e *Encoder) release() {
	if e.pass != nil {
		_ = e.pass.End()
		e.pass = nil
	}
	if e.enc != nil {
		e.enc.Release()
		e.enc = nil
	}
	if len(e.blocks) > 0 {
		e.ctx.mu.Lock()
		for _, b := range e.blocks {
			e.ctx.uniforms = append(e.ctx.uniforms, b.buf)
		}
		e.ctx.mu.Unlock()
		e.blocks = nil
	}
}

// Grid spreads n workgroups over x and y so neither exceeds the per-dimension
// limit; shaders recover the linear index as wid.y*num_workgroups.x + wid.x
// and return early past n.
func (c *Context) Grid(n uint32) (x, y uint32) {
	max := c.Limits.MaxComputeWorkgroupsPerDimension
	if max == 0 {
		max = 65535
	}
	if n <= max {
		return n, 1
	}
	y = (n + max - 1) / max
	x = (n + y - 1) / y
	return x, y
}

// Readback is a host-visible copy recorded into an encoder, so that results
// come back with the same submission that computed them (one submission per
// decode step). Reuse it across steps: its staging buffer is kept.
type Readback struct {
	ctx  *Context
	buf  hal.Buffer
	size uint64
	n    uint64 // bytes recorded by the last CopyToHost
}

// NewReadback makes a staging buffer for up to size bytes.
func (c *Context) NewReadback(size uint64) (*Readback, error) {
	size = align(max(size, 4), 4)
	b, err := c.device.CreateBuffer("readback", size, hal.UsageMapRead|hal.UsageCopyDst)
	if err != nil {
		return nil, fmt.Errorf("gpu: creating readback buffer: %w", err)
	}
	return &Readback{ctx: c, buf: b, size: size}, nil
}

// Release frees the staging buffer.
func (r *Readback) Release() {
	if r.buf != nil {
		r.buf.Destroy()
		r.buf = nil
	}
}

// CopyToHost records a copy of src[off:off+size] into rb, read after Submit
// with rb.Read.
func (e *Encoder) CopyToHost(rb *Readback, src *Buffer, off, size uint64) error {
	if e.err != nil {
		return e.err
	}
	if size > rb.size || off+size > src.size || off%4 != 0 || size%4 != 0 {
		return fmt.Errorf("gpu: readback of %d bytes at %d from %q (%d bytes) into %d-byte staging: out of range or unaligned", size, off, src.label, src.size, rb.size)
	}
	if err := e.endPass(); err != nil {
		e.err = fmt.Errorf("gpu: %w", err)
		return e.err
	}
	if err := e.enc.Copy(src.raw, off, rb.buf, 0, size); err != nil {
		e.err = fmt.Errorf("gpu: readback copy from %q: %w", src.label, err)
		return e.err
	}
	rb.n = size
	return nil
}

// Read waits for the submission that recorded the copy and copies the bytes
// into dst (len(dst) <= the recorded size).
func (r *Readback) Read(dst []byte) error {
	c := r.ctx
	if uint64(len(dst)) > r.n {
		return fmt.Errorf("gpu: reading %d bytes from a readback of %d", len(dst), r.n)
	}
	if err := c.device.ReadMapped(r.buf, 0, dst); err != nil {
		if lost := c.Err(); lost != nil {
			return lost
		}
		return fmt.Errorf("gpu: readback: %w", err)
	}
	return c.takeUncaptured()
}
