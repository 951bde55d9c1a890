package gpu

import (
	"errors"
	"fmt"

	"github.com/wgllm/wgllm/runtime/gpu/internal/hal"
)

// Buffer is a GPU storage buffer. Sizes are in bytes.
type Buffer struct {
	ctx   *Context
	raw   hal.Buffer
	id    uint64
	size  uint64
	label string
}

// Size is the buffer's size in bytes.
func (b *Buffer) Size() uint64 { return b.size }

// Label names the buffer in errors.
func (b *Buffer) Label() string { return b.label }

// NewBuffer makes a zeroed storage buffer that can be copied to and from.
// The size is rounded up to 4 bytes, as WebGPU requires.
func (c *Context) NewBuffer(label string, size uint64) (*Buffer, error) {
	if err := c.Err(); err != nil {
		return nil, err
	}
	if size == 0 {
		size = 4
	}
	size = align(size, 4)
	if size > c.Limits.MaxBufferSize {
		return nil, fmt.Errorf("gpu: buffer %q of %d bytes exceeds the adapter's maxBufferSize of %d bytes", label, size, c.Limits.MaxBufferSize)
	}
	raw, err := c.device.CreateBuffer(label, size, hal.UsageStorage|hal.UsageCopySrc|hal.UsageCopyDst)
	if err != nil {
		return nil, fmt.Errorf("gpu: creating buffer %q of %d bytes: %w", label, size, err)
	}
	c.allocated.Add(int64(size))
	return &Buffer{ctx: c, raw: raw, id: c.nextID.Add(1), size: size, label: label}, nil
}

// Destroy frees the buffer's memory now, and forgets bind groups that used it.
func (b *Buffer) Destroy() {
	if b == nil || b.raw == nil {
		return
	}
	c := b.ctx
	c.mu.Lock()
	for k, bg := range c.bindCache {
		if k.uses(b.id) {
			bg.Release()
			delete(c.bindCache, k)
		}
	}
	c.mu.Unlock()
	b.raw.Destroy()
	b.raw = nil
	c.allocated.Add(-int64(b.size))
}

// Write copies data into the buffer at a byte offset. Offset must be a
// multiple of 4; data of any length is padded with zeros to 4 bytes.
func (b *Buffer) Write(offset uint64, data []byte) error {
	if err := b.ctx.Err(); err != nil {
		return err
	}
	if b.raw == nil {
		return fmt.Errorf("gpu: write to destroyed buffer %q", b.label)
	}
	if offset%4 != 0 {
		return fmt.Errorf("gpu: write to %q at offset %d: offset must be a multiple of 4", b.label, offset)
	}
	if offset+uint64(len(data)) > b.size {
		return fmt.Errorf("gpu: write of %d bytes at offset %d overflows buffer %q of %d bytes", len(data), offset, b.label, b.size)
	}
	if len(data) == 0 {
		return nil
	}
	if rem := len(data) % 4; rem != 0 {
		padded := make([]byte, len(data)+4-rem)
		copy(padded, data)
		data = padded
	}
	// WriteBuffer stages through wgpu's own memory; chunk large writes so
	// host memory stays bounded while a model streams in.
	const chunk = 64 << 20
	for len(data) > 0 {
		n := min(len(data), chunk)
		if err := b.ctx.device.WriteBuffer(b.raw, offset, data[:n]); err != nil {
			return fmt.Errorf("gpu: writing %q: %w", b.label, err)
		}
		data = data[n:]
		offset += uint64(n)
	}
	return nil
}

// Read copies size bytes from a byte offset back to the host, waiting for
// all submitted work first. Offset and size must be multiples of 4.
func (b *Buffer) Read(offset, size uint64) ([]byte, error) {
	out := make([]byte, size)
	return out, b.ReadInto(offset, out)
}

// ReadInto is Read into a caller's slice (len(dst) bytes), allocating nothing
// per call once the staging buffer is large enough.
func (b *Buffer) ReadInto(offset uint64, dst []byte) error {
	c := b.ctx
	if err := c.Err(); err != nil {
		return err
	}
	size := uint64(len(dst))
	if b.raw == nil {
		return fmt.Errorf("gpu: read from destroyed buffer %q", b.label)
	}
	if offset%4 != 0 || size%4 != 0 {
		return fmt.Errorf("gpu: read of %q at %d+%d: offset and size must be multiples of 4", b.label, offset, size)
	}
	if offset+size > b.size {
		return fmt.Errorf("gpu: read of %d bytes at offset %d overflows buffer %q of %d bytes", size, offset, b.label, b.size)
	}
	if size == 0 {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	const chunk = 64 << 20
	if c.staging == nil || c.stagingN < min(size, chunk) {
		if c.staging != nil {
			c.staging.Destroy()
		}
		st, err := c.device.CreateBuffer("readback", align(min(size, chunk), 4), hal.UsageMapRead|hal.UsageCopyDst)
		if err != nil {
			c.staging = nil
			return fmt.Errorf("gpu: creating readback buffer: %w", err)
		}
		c.staging, c.stagingN = st, align(min(size, chunk), 4)
	}
	for done := uint64(0); done < size; {
		n := min(size-done, c.stagingN)
		enc, err := c.device.CreateEncoder()
		if err != nil {
			return fmt.Errorf("gpu: readback encoder: %w", err)
		}
		if err := enc.Copy(b.raw, offset+done, c.staging, 0, n); err != nil {
			enc.Release()
			return fmt.Errorf("gpu: readback copy from %q: %w", b.label, err)
		}
		cmd, err := enc.Finish()
		enc.Release()
		if err != nil {
			return fmt.Errorf("gpu: readback finish: %w", err)
		}
		c.device.Submit(cmd)
		cmd.Release()
		if err := c.device.ReadMapped(c.staging, 0, dst[done:done+n]); err != nil {
			if lost := c.Err(); lost != nil {
				return lost
			}
			return fmt.Errorf("gpu: readback of %q: %w", b.label, err)
		}
		done += n
	}
	return c.Err()
}

// ErrBindingTooLarge is wrapped by errors for ranges no single binding can cover.
var ErrBindingTooLarge = errors.New("range exceeds the adapter's maxStorageBufferBindingSize")

// Window picks the binding range used to access bytes [offset, offset+size)
// of b: the whole buffer when it fits one binding (so bind groups are shared
// by every view of it), otherwise an aligned window starting at or before
// offset. It returns the binding's byte offset and size, and where the
// requested range starts inside the binding, in bytes.
func (b *Buffer) Window(offset, size uint64) (bindOff, bindSize, inner uint64, err error) {
	if offset+size > b.size {
		return 0, 0, 0, fmt.Errorf("gpu: range %d+%d outside buffer %q of %d bytes", offset, size, b.label, b.size)
	}
	limit := b.ctx.MaxBinding()
	if b.size <= limit {
		return 0, b.size, offset, nil
	}
	alignTo := uint64(b.ctx.Limits.MinStorageBufferOffsetAlignment)
	if alignTo == 0 {
		alignTo = 256
	}
	bindOff = offset / alignTo * alignTo
	inner = offset - bindOff
	if inner+size > limit {
		return 0, 0, 0, fmt.Errorf("gpu: %d bytes of buffer %q: %w (%d bytes); split the tensor", size, b.label, ErrBindingTooLarge, limit)
	}
	// Round the window down to 4 bytes so it stays a valid binding size.
	bindSize = min(b.size-bindOff, limit/4*4)
	return bindOff, bindSize, inner, nil
}

func align(n, a uint64) uint64 { return (n + a - 1) / a * a }
