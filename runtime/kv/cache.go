// Package kv is the attention key/value cache: for each layer, keys and
// values of every token of every sequence slot, on the GPU, in f32 or f16.
// Memory for all slots is allocated up front; a sequence that would exceed
// its capacity gets ErrFull, never a silent overwrite.
package kv

import (
	"errors"
	"fmt"

	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/runtime/gpu"
)

// Config sizes a cache.
type Config struct {
	Layers   int
	KVHeads  int
	HeadDim  int
	Capacity int // tokens per sequence
	Seqs     int // sequence slots
	DType    ops.DType
}

// ErrFull is wrapped by errors for sequences that have no room left.
var ErrFull = errors.New("kv cache full")

// Cache holds K and V per layer as [Seqs, Capacity, KVHeads, HeadDim].
type Cache struct {
	cfg  Config
	k, v []ops.Tensor
	lens []int
	used []bool
}

// New allocates the whole cache.
func New(ctx *gpu.Context, cfg Config) (*Cache, error) {
	if cfg.Layers <= 0 || cfg.KVHeads <= 0 || cfg.HeadDim <= 0 || cfg.Capacity <= 0 || cfg.Seqs <= 0 {
		return nil, fmt.Errorf("kv: invalid config %+v", cfg)
	}
	if cfg.DType != ops.F32 && cfg.DType != ops.F16 {
		return nil, fmt.Errorf("kv: storage type %s: want f32 or f16", cfg.DType)
	}
	c := &Cache{cfg: cfg, lens: make([]int, cfg.Seqs), used: make([]bool, cfg.Seqs)}
	for l := 0; l < cfg.Layers; l++ {
		for _, dst := range []*[]ops.Tensor{&c.k, &c.v} {
			t, err := ops.New(ctx, fmt.Sprintf("kv.%d", l), cfg.DType, cfg.Seqs, cfg.Capacity, cfg.KVHeads, cfg.HeadDim)
			if err != nil {
				c.Close()
				return nil, fmt.Errorf("kv: allocating layer %d (%d bytes): %w", l, c.layerBytes(), err)
			}
			*dst = append(*dst, t)
		}
	}
	return c, nil
}

func (c *Cache) layerBytes() uint64 {
	return uint64(c.cfg.Seqs*c.cfg.Capacity*c.cfg.KVHeads*c.cfg.HeadDim) * uint64(c.cfg.DType.Size())
}

// Bytes is the GPU memory the cache holds.
func (c *Cache) Bytes() uint64 { return 2 * uint64(c.cfg.Layers) * c.layerBytes() }

// Config returns the cache's sizes.
func (c *Cache) Config() Config { return c.cfg }

// Close frees the GPU memory.
func (c *Cache) Close() {
	for _, t := range append(c.k, c.v...) {
		t.Buf.Destroy()
	}
	c.k, c.v = nil, nil
}

// Acquire takes a free sequence slot, empty.
func (c *Cache) Acquire() (int, error) {
	for s, u := range c.used {
		if !u {
			c.used[s], c.lens[s] = true, 0
			return s, nil
		}
	}
	return -1, fmt.Errorf("%w: all %d sequence slots are in use", ErrFull, c.cfg.Seqs)
}

// Release frees a sequence slot.
func (c *Cache) Release(seq int) {
	if seq >= 0 && seq < len(c.used) {
		c.used[seq], c.lens[seq] = false, 0
	}
}

func (c *Cache) check(seq int) error {
	if seq < 0 || seq >= len(c.used) || !c.used[seq] {
		return fmt.Errorf("kv: sequence %d is not acquired", seq)
	}
	return nil
}

// Len is the number of tokens a sequence holds.
func (c *Cache) Len(seq int) int {
	if c.check(seq) != nil {
		return 0
	}
	return c.lens[seq]
}

// Free is how many more tokens a sequence can take.
func (c *Cache) Free(seq int) int { return c.cfg.Capacity - c.Len(seq) }

// Reserve claims room for n more tokens and returns the position of the
// first. On ErrFull nothing changes.
func (c *Cache) Reserve(seq, n int) (int, error) {
	if err := c.check(seq); err != nil {
		return 0, err
	}
	if n < 0 || c.lens[seq]+n > c.cfg.Capacity {
		return 0, fmt.Errorf("%w: sequence %d holds %d of %d tokens; %d more do not fit", ErrFull, seq, c.lens[seq], c.cfg.Capacity, n)
	}
	pos := c.lens[seq]
	c.lens[seq] += n
	return pos, nil
}

// Truncate keeps only the first n tokens of a sequence.
func (c *Cache) Truncate(seq, n int) error {
	if err := c.check(seq); err != nil {
		return err
	}
	if n < 0 || n > c.lens[seq] {
		return fmt.Errorf("kv: truncate sequence %d to %d tokens: it holds %d", seq, n, c.lens[seq])
	}
	c.lens[seq] = n
	return nil
}

// Keys is a sequence's key cache for one layer, [Capacity, KVHeads, HeadDim].
func (c *Cache) Keys(layer, seq int) ops.Tensor { return c.view(c.k[layer], seq) }

// Values is a sequence's value cache for one layer, [Capacity, KVHeads, HeadDim].
func (c *Cache) Values(layer, seq int) ops.Tensor { return c.view(c.v[layer], seq) }

func (c *Cache) view(t ops.Tensor, seq int) ops.Tensor {
	per := c.cfg.Capacity * c.cfg.KVHeads * c.cfg.HeadDim
	return t.View(seq*per, c.cfg.Capacity, c.cfg.KVHeads, c.cfg.HeadDim)
}

// Write records copies of k and v ([n, KVHeads*HeadDim], f32) into a
// sequence's rows pos..pos+n-1 of one layer, converting to the cache's type.
// The rows must have been reserved.
func (c *Cache) Write(enc *gpu.Encoder, layer, seq, pos int, k, v ops.Tensor) error {
	if err := c.check(seq); err != nil {
		return err
	}
	row := c.cfg.KVHeads * c.cfg.HeadDim
	n := k.Len() / row
	if k.Len() != n*row || v.Len() != k.Len() {
		return fmt.Errorf("kv: write of k %s, v %s: want [n, %d]", k, v, row)
	}
	if pos < 0 || pos+n > c.lens[seq] {
		return fmt.Errorf("kv: write of rows %d..%d of sequence %d: only %d reserved", pos, pos+n, seq, c.lens[seq])
	}
	for _, p := range []struct{ dst, src ops.Tensor }{{c.Keys(layer, seq), k}, {c.Values(layer, seq), v}} {
		dst := p.dst.View(pos*row, n, row)
		if err := ops.CopyRows(enc, dst, p.src, n, row, row, row); err != nil {
			return fmt.Errorf("kv: layer %d: %w", layer, err)
		}
	}
	return nil
}

// Read copies a sequence's keys and values of one layer back to the host,
// [Len, KVHeads*HeadDim] each (for tests and debugging).
func (c *Cache) Read(layer, seq int) (k, v []float32, err error) {
	if err := c.check(seq); err != nil {
		return nil, nil, err
	}
	n := c.lens[seq] * c.cfg.KVHeads * c.cfg.HeadDim
	if n == 0 {
		return nil, nil, nil
	}
	if k, err = c.Keys(layer, seq).View(0, n).Read(); err != nil {
		return nil, nil, err
	}
	v, err = c.Values(layer, seq).View(0, n).Read()
	return k, v, err
}
