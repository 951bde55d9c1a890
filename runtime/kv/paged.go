// Package kv is the attention key/value cache: a vLLM-style paged cache on
// the GPU, f32, f16 or q8_0 (ggml's Q8_0 blocks in the planes of
// ops/kv_pool.go: 17/32 of f16's bytes). A sequence that would exceed its room, or a pool with
// no free block, gets ErrFull, never a silent overwrite.
package kv

import (
	"errors"
	"fmt"

	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/runtime/gpu"
)

// ErrFull is wrapped by errors for sequences that have no room left.
var ErrFull = errors.New("kv cache full")

// PagedConfig sizes a paged cache.
type PagedConfig struct {
	Layers    int
	KVHeads   int
	HeadDim   int
	BlockSize int       // tokens per block (16 or 32 are typical)
	Blocks    int       // blocks in the pool: the same block ids in every layer
	Seqs      int       // sequence slots (block table rows)
	MaxSeqLen int       // most tokens one sequence may hold: the table has ceil(MaxSeqLen/BlockSize) columns
	DType     ops.DType // ops.F32, ops.F16 or ops.Q8_0
}

// TokenBytes is the KV memory of one token: K and V of every layer.
func (c PagedConfig) TokenBytes() uint64 {
	return 2 * uint64(c.Layers) * valueBytes(c.DType, c.KVHeads*c.HeadDim)
}

// PoolBytes is the GPU memory of the block pools (K and V of every layer),
// as NewPaged allocates them.
func (c PagedConfig) PoolBytes() uint64 {
	return 2 * uint64(c.Layers) * c.layerBytes()
}

// layerBytes is one layer's K (or V) pool, rounded to whole words as
// buffers are.
func (c PagedConfig) layerBytes() uint64 {
	return (valueBytes(c.DType, c.Blocks*c.BlockSize*c.KVHeads*c.HeadDim) + 3) / 4 * 4
}

// valueBytes is the storage of n values of a pool type (n a whole number
// of its blocks).
func valueBytes(dt ops.DType, n int) uint64 {
	return uint64(n/dt.BlockSize()) * uint64(dt.BlockBytes())
}

// Paged is a vLLM-style paged KV cache: per layer one pool of Blocks
// fixed-size blocks for K and one for V, [Blocks, BlockSize, KVHeads,
// HeadDim], shared by all sequences. A sequence owns a list of blocks,
// taken from a free list as it grows and returned the moment it is
// truncated or released, so memory is reserved per token used, not per
// maximum context. Token pos of a sequence lives in pool row
// block[pos/BlockSize]·BlockSize + pos%BlockSize ("slot").
//
// Sequences may share blocks: Fork starts a sequence holding the same
// blocks as another (a common prompt prefix), with reference counts; a
// shared block is copied before a sequence writes into it (copy on write,
// recorded by the next Sync), so each sequence's tokens stay its own.
//
// The block table, u32 [Seqs, ceil(MaxSeqLen/BlockSize)], lives on the
// GPU for ops.AttentionPaged; changes are kept on the host and uploaded by
// Sync in one write of the changed range. A step goes:
//
//	Reserve / Fork / Truncate / Release as the scheduler decides
//	Sync(enc)                         block copies + table upload
//	step.Set(cache, batch)            seqInfo + write slots, one upload
//	per layer: Write(enc, layer, k, v, step.Slots), ops.AttentionPaged(…)
//	enc.Submit()
//
// Uploads go through the queue ahead of the next submission, so Sync and
// Step.Set must be called once per submission, after the previous step's
// encoder was submitted and before this one is. Paged is not safe for
// concurrent use.
type Paged struct {
	ctx     *gpu.Context
	cfg     PagedConfig
	width   int // table columns
	row     int // elements per token: KVHeads·HeadDim
	k, v    []ops.Tensor
	table   ops.Tensor
	host    []uint32 // the table as the GPU will see it after Sync
	dirtyLo int      // table entries [dirtyLo, dirtyHi) to upload
	dirtyHi int
	free    []int32 // free block ids, a stack
	refs    []int32 // sequences holding each block
	held    []int32 // pending copies reading each block
	seqs    []pagedSeq
	pending []blockCopy
}

type pagedSeq struct {
	used   bool
	len    int
	blocks []int32
}

// blockCopy is a copy-on-write copy of one block (every layer, K and V)
// that Sync records; the source is not freed until then.
type blockCopy struct{ from, to int32 }

// NewPaged allocates the pools and the block table.
func NewPaged(ctx *gpu.Context, cfg PagedConfig) (*Paged, error) {
	if cfg.Layers <= 0 || cfg.KVHeads <= 0 || cfg.HeadDim <= 0 || cfg.BlockSize <= 0 || cfg.Blocks <= 0 ||
		cfg.Seqs <= 0 || cfg.MaxSeqLen <= 0 {
		return nil, fmt.Errorf("kv: invalid paged config %+v", cfg)
	}
	if !ops.IsKVPoolType(cfg.DType) {
		return nil, fmt.Errorf("kv: storage type %s: want f32, f16 or q8_0", cfg.DType)
	}
	row := cfg.KVHeads * cfg.HeadDim
	if cfg.DType == ops.F16 && row%2 != 0 {
		return nil, fmt.Errorf("kv: f16 rows of %d×%d elements: want an even count (whole 4-byte words)", cfg.KVHeads, cfg.HeadDim)
	}
	if cfg.DType == ops.Q8_0 && row%32 != 0 {
		return nil, fmt.Errorf("kv: q8_0 rows of %d×%d elements: want a multiple of 32 (whole blocks)", cfg.KVHeads, cfg.HeadDim)
	}
	if cfg.DType == ops.Q8_0 && cfg.BlockSize*row%64 != 0 {
		// A block's scales must be whole words to be copied on write.
		return nil, fmt.Errorf("kv: q8_0 blocks of %d tokens × %d elements: want a multiple of 64 values a block (an even block size)", cfg.BlockSize, row)
	}
	if uint64(cfg.Blocks)*uint64(cfg.BlockSize)*uint64(row) >= 1<<32 {
		return nil, fmt.Errorf("kv: a pool of %d blocks × %d tokens × %d elements is too large for 32-bit indexing", cfg.Blocks, cfg.BlockSize, row)
	}
	if cfg.Blocks >= 1<<31 {
		return nil, fmt.Errorf("kv: %d blocks: too many", cfg.Blocks)
	}
	c := &Paged{
		ctx: ctx, cfg: cfg, row: row, width: (cfg.MaxSeqLen + cfg.BlockSize - 1) / cfg.BlockSize,
		refs: make([]int32, cfg.Blocks), held: make([]int32, cfg.Blocks), seqs: make([]pagedSeq, cfg.Seqs),
	}
	c.host = make([]uint32, cfg.Seqs*c.width)
	// Lowest ids first: fresh pools fill from the start.
	c.free = make([]int32, cfg.Blocks)
	for i := range c.free {
		c.free[i] = int32(cfg.Blocks - 1 - i)
	}
	var err error
	if c.table, err = ops.New(ctx, "kv.block_table", ops.U32, cfg.Seqs, c.width); err != nil {
		return nil, fmt.Errorf("kv: allocating the block table: %w", err)
	}
	for l := 0; l < cfg.Layers; l++ {
		for _, dst := range []*[]ops.Tensor{&c.k, &c.v} {
			// Allocated flat: a q8_0 pool's rows, not its head dim, are whole blocks.
			t, err := ops.New(ctx, fmt.Sprintf("kv.paged.%d", l), cfg.DType, cfg.Blocks*cfg.BlockSize*row)
			if err != nil {
				c.Close()
				return nil, fmt.Errorf("kv: allocating layer %d (%d bytes): %w", l, cfg.layerBytes(), err)
			}
			*dst = append(*dst, t.View(0, cfg.Blocks, cfg.BlockSize, cfg.KVHeads, cfg.HeadDim))
		}
	}
	return c, nil
}

// Bytes is the GPU memory the pools and the table hold.
func (c *Paged) Bytes() uint64 { return c.cfg.PoolBytes() + c.table.Bytes() }

// Config returns the cache's sizes.
func (c *Paged) Config() PagedConfig { return c.cfg }

// Close frees the GPU memory.
func (c *Paged) Close() {
	for _, t := range append(c.k, c.v...) {
		t.Buf.Destroy()
	}
	c.k, c.v = nil, nil
	if c.table.Buf != nil {
		c.table.Buf.Destroy()
		c.table.Buf = nil
	}
}

// BlocksTotal is the pool size in blocks.
func (c *Paged) BlocksTotal() int { return c.cfg.Blocks }

// BlocksUsed counts the blocks held by sequences (a shared block once) or
// waiting for a copy that Sync records.
func (c *Paged) BlocksUsed() int { return c.cfg.Blocks - len(c.free) }

// BlocksFree is how many blocks can still be handed out.
func (c *Paged) BlocksFree() int { return len(c.free) }

// Keys is one layer's key pool, [Blocks, BlockSize, KVHeads, HeadDim]
// (an empty tensor, which ops reject, for a layer out of range).
func (c *Paged) Keys(layer int) ops.Tensor { return pool(c.k, layer) }

// Values is one layer's value pool, [Blocks, BlockSize, KVHeads, HeadDim].
func (c *Paged) Values(layer int) ops.Tensor { return pool(c.v, layer) }

func pool(ts []ops.Tensor, layer int) ops.Tensor {
	if layer < 0 || layer >= len(ts) {
		return ops.Tensor{}
	}
	return ts[layer]
}

// BlockTable is the GPU block table, u32 [Seqs, MaxBlocksPerSeq]: row s
// lists sequence slot s's blocks in order (entries past its last block are
// stale). It reflects the host's state as of the last Sync.
func (c *Paged) BlockTable() ops.Tensor { return c.table }

// MaxBlocksPerSeq is the block table's width.
func (c *Paged) MaxBlocksPerSeq() int { return c.width }

// Acquire takes a free sequence slot, empty.
func (c *Paged) Acquire() (int, error) {
	for s := range c.seqs {
		if !c.seqs[s].used {
			c.seqs[s] = pagedSeq{used: true, blocks: c.seqs[s].blocks[:0]}
			return s, nil
		}
	}
	return -1, fmt.Errorf("%w: all %d sequence slots are in use", ErrFull, c.cfg.Seqs)
}

// Release frees a sequence slot and, at once, every block only it held.
func (c *Paged) Release(seq int) {
	if c.check(seq) != nil {
		return
	}
	s := &c.seqs[seq]
	c.drop(s.blocks)
	s.used, s.len, s.blocks = false, 0, s.blocks[:0]
}

func (c *Paged) check(seq int) error {
	if seq < 0 || seq >= len(c.seqs) || !c.seqs[seq].used {
		return fmt.Errorf("kv: sequence %d is not acquired", seq)
	}
	return nil
}

// drop releases one sequence's hold on each block; blocks nobody holds
// go back to the free list.
func (c *Paged) drop(blocks []int32) {
	for _, b := range blocks {
		c.refs[b]--
		if c.refs[b] == 0 && c.held[b] == 0 {
			c.free = append(c.free, b)
		}
	}
}

func (c *Paged) take() int32 {
	b := c.free[len(c.free)-1]
	c.free = c.free[:len(c.free)-1]
	c.refs[b] = 1
	return b
}

// Len is the number of tokens a sequence holds.
func (c *Paged) Len(seq int) int {
	if c.check(seq) != nil {
		return 0
	}
	return c.seqs[seq].len
}

// Blocks lists a sequence's blocks in order (a copy).
func (c *Paged) Blocks(seq int) []int {
	if c.check(seq) != nil {
		return nil
	}
	out := make([]int, len(c.seqs[seq].blocks))
	for i, b := range c.seqs[seq].blocks {
		out[i] = int(b)
	}
	return out
}

// Reserve claims room for n more tokens of a sequence, taking blocks from
// the pool as needed, and returns the position of the first. If the
// sequence's last block is partly filled and shared with another sequence,
// it gets a private copy first (recorded by the next Sync). When the pool
// (or the sequence's table row) has too few blocks left, the error wraps
// ErrFull and nothing changes.
func (c *Paged) Reserve(seq, n int) (int, error) {
	if err := c.check(seq); err != nil {
		return 0, err
	}
	s := &c.seqs[seq]
	if n < 0 {
		return 0, fmt.Errorf("kv: reserve of %d tokens", n)
	}
	if n == 0 {
		return s.len, nil
	}
	if s.len+n > c.cfg.MaxSeqLen {
		return 0, fmt.Errorf("%w: sequence %d holds %d tokens; %d more exceed the maximum of %d", ErrFull, seq, s.len, n, c.cfg.MaxSeqLen)
	}
	bs := c.cfg.BlockSize
	grow := (s.len+n+bs-1)/bs - len(s.blocks)
	cow := s.len%bs != 0 && c.refs[s.blocks[len(s.blocks)-1]] > 1
	need := grow
	if cow {
		need++
	}
	if need > len(c.free) {
		return 0, fmt.Errorf("%w: sequence %d needs %d more blocks of %d tokens, %d of %d are free", ErrFull, seq, need, bs, len(c.free), c.cfg.Blocks)
	}
	if cow {
		last := len(s.blocks) - 1
		from, to := s.blocks[last], c.take()
		// The source is not freed before Sync has recorded the copy; a
		// sequence still holding it may write into it, as the copy is
		// recorded ahead of the step's writes.
		c.pending = append(c.pending, blockCopy{from: from, to: to})
		c.held[from]++
		c.refs[from]--
		s.blocks[last] = to
		c.setEntry(seq, last, to)
	}
	for i := 0; i < grow; i++ {
		b := c.take()
		s.blocks = append(s.blocks, b)
		c.setEntry(seq, len(s.blocks)-1, b)
	}
	pos := s.len
	s.len += n
	return pos, nil
}

func (c *Paged) setEntry(seq, i int, b int32) {
	e := seq*c.width + i
	c.host[e] = uint32(b)
	if c.dirtyLo >= c.dirtyHi {
		c.dirtyLo, c.dirtyHi = e, e+1
		return
	}
	c.dirtyLo, c.dirtyHi = min(c.dirtyLo, e), max(c.dirtyHi, e+1)
}

// Truncate keeps only the first n tokens of a sequence; blocks past them
// are released at once.
func (c *Paged) Truncate(seq, n int) error {
	if err := c.check(seq); err != nil {
		return err
	}
	s := &c.seqs[seq]
	if n < 0 || n > s.len {
		return fmt.Errorf("kv: truncate sequence %d to %d tokens: it holds %d", seq, n, s.len)
	}
	keep := (n + c.cfg.BlockSize - 1) / c.cfg.BlockSize
	c.drop(s.blocks[keep:])
	s.blocks = s.blocks[:keep]
	s.len = n
	return nil
}

// Fork starts a new sequence holding the same tokens as src by sharing
// src's blocks (no copy, no new block): a common prefix is stored once.
// Whichever of the two later writes into a shared, partly filled block
// gets a private copy of it first. That copy is recorded by Sync, so src's
// tokens must have been written by then: in an earlier submission, or
// recorded into the encoder before the Sync.
func (c *Paged) Fork(src int) (int, error) {
	if err := c.check(src); err != nil {
		return -1, err
	}
	dst, err := c.Acquire()
	if err != nil {
		return -1, err
	}
	s, d := &c.seqs[src], &c.seqs[dst]
	d.len = s.len
	d.blocks = append(d.blocks, s.blocks...)
	for i, b := range d.blocks {
		c.refs[b]++
		c.setEntry(dst, i, b)
	}
	return dst, nil
}

// Slot is the pool row (block·BlockSize + offset) of token pos of a
// sequence, for ScatterRows and for tests.
func (c *Paged) Slot(seq, pos int) (uint32, error) {
	if err := c.check(seq); err != nil {
		return 0, err
	}
	s := &c.seqs[seq]
	if pos < 0 || pos >= s.len {
		return 0, fmt.Errorf("kv: token %d of sequence %d: it holds %d", pos, seq, s.len)
	}
	return uint32(int(s.blocks[pos/c.cfg.BlockSize])*c.cfg.BlockSize + pos%c.cfg.BlockSize), nil
}

// Sync records the pending copy-on-write block copies into enc (every
// layer, K and V) and uploads the changed part of the block table in one
// write. Call it once per step, after the step's Reserve/Fork/Truncate/
// Release calls and before recording writes or attention.
func (c *Paged) Sync(enc *gpu.Encoder) error {
	// WebGPU has no buffer copy within one buffer: a copy dispatch per
	// block and plane, of raw words.
	for _, p := range c.pending {
		for l := range c.k {
			for _, pool := range []ops.Tensor{c.k[l], c.v[l]} {
				for _, pl := range c.planes() {
					words := ops.Tensor{Buf: pool.Buf, DType: ops.U32, Shape: []int{pl.start + c.cfg.Blocks*pl.perBlock}}
					dst, src := words.View(pl.start+int(p.to)*pl.perBlock, pl.perBlock), words.View(pl.start+int(p.from)*pl.perBlock, pl.perBlock)
					if err := ops.CopyRows(enc, dst, src, 1, pl.perBlock, pl.perBlock, pl.perBlock); err != nil {
						return fmt.Errorf("kv: copy of block %d to %d: %w", p.from, p.to, err)
					}
				}
			}
		}
	}
	for _, p := range c.pending {
		c.held[p.from]--
		if c.refs[p.from] == 0 && c.held[p.from] == 0 {
			c.free = append(c.free, p.from)
		}
	}
	c.pending = c.pending[:0]
	if c.dirtyLo < c.dirtyHi {
		if err := c.table.View(c.dirtyLo, c.dirtyHi-c.dirtyLo).WriteUint32(c.host[c.dirtyLo:c.dirtyHi]); err != nil {
			return fmt.Errorf("kv: uploading the block table: %w", err)
		}
		c.dirtyLo, c.dirtyHi = 0, 0
	}
	return nil
}

// plane is a run of 4-byte words in a pool buffer holding perBlock words
// for each block, from word start.
type plane struct{ start, perBlock int }

// planes are where a block's words lie in a pool buffer: one plane for
// f32 and f16, the quants and then the scales for q8_0 (ops/kv_pool.go).
func (c *Paged) planes() []plane {
	values := c.cfg.BlockSize * c.row
	switch c.cfg.DType {
	case ops.F16:
		return []plane{{0, values / 2}}
	case ops.Q8_0:
		return []plane{{0, values / 4}, {c.cfg.Blocks * values / 4, values / 64}}
	}
	return []plane{{0, values}}
}

// Write records the copy of new K and V rows (f32 [n, KVHeads·HeadDim]) of
// one layer into their pool slots (u32 [n], e.g. Step.Slots; ScatterSkip
// skips a row), converting to the pool's type (q8_0: quantised), in one dispatch each for K
// and V: rows of different sequences at different positions at once. The
// slots must be of reserved tokens written by no other sequence (Reserve
// guarantees that for the tokens it reserved).
func (c *Paged) Write(enc *gpu.Encoder, layer int, k, v, slots ops.Tensor) error {
	if layer < 0 || layer >= len(c.k) {
		return fmt.Errorf("kv: layer %d of %d", layer, len(c.k))
	}
	n := k.Len() / c.row
	if k.Len() != n*c.row || v.Len() != k.Len() || n == 0 {
		return fmt.Errorf("kv: write of k %s, v %s: want [n, %d]", k, v, c.row)
	}
	rows := c.cfg.Blocks * c.cfg.BlockSize
	for _, p := range []struct{ pool, src ops.Tensor }{{c.k[layer], k}, {c.v[layer], v}} {
		if err := ops.ScatterRows(enc, p.pool.View(0, rows, c.row), p.src.View(0, n, c.row), slots); err != nil {
			return fmt.Errorf("kv: layer %d: %w", layer, err)
		}
	}
	return nil
}

// WriteRotated applies RoPE to q in place and to k, and writes the rotated
// k and v rows into their pool slots, all in one dispatch (ops.RoPEStore):
// q [n, heads, HeadDim], k and v [n, KVHeads, HeadDim], f32 views of one
// buffer.
func (c *Paged) WriteRotated(enc *gpu.Encoder, layer int, q, k, v, slots ops.Tensor, o ops.RoPEOpts) error {
	if layer < 0 || layer >= len(c.k) {
		return fmt.Errorf("kv: layer %d of %d", layer, len(c.k))
	}
	rows := c.cfg.Blocks * c.cfg.BlockSize
	if err := ops.RoPEStore(enc, q, k, v, c.k[layer].View(0, rows, c.row), c.v[layer].View(0, rows, c.row), slots, o); err != nil {
		return fmt.Errorf("kv: layer %d: %w", layer, err)
	}
	return nil
}

// Read copies a sequence's keys and values of one layer back to the host,
// [Len, KVHeads·HeadDim] each (dequantised from q8_0), gathered from its blocks (for tests and
// debugging; it reads the whole pool).
func (c *Paged) Read(layer, seq int) (k, v []float32, err error) {
	if err := c.check(seq); err != nil {
		return nil, nil, err
	}
	if layer < 0 || layer >= len(c.k) {
		return nil, nil, fmt.Errorf("kv: layer %d of %d", layer, len(c.k))
	}
	s := &c.seqs[seq]
	gather := func(pool ops.Tensor) ([]float32, error) {
		all, err := ops.ReadKVPool(pool)
		if err != nil {
			return nil, err
		}
		out := make([]float32, 0, s.len*c.row)
		for pos := 0; pos < s.len; pos++ {
			slot := int(s.blocks[pos/c.cfg.BlockSize])*c.cfg.BlockSize + pos%c.cfg.BlockSize
			out = append(out, all[slot*c.row:(slot+1)*c.row]...)
		}
		return out, nil
	}
	if k, err = gather(c.k[layer]); err != nil {
		return nil, nil, err
	}
	v, err = gather(c.v[layer])
	return k, v, err
}

// StepSeq is one sequence of a step's batch: its last New tokens (already
// reserved) are the step's queries and new K/V rows.
type StepSeq struct {
	Seq, New int
}

// Step holds the per-step GPU inputs of a batch, uploaded together in one
// write: Info (ops.AttentionPaged's seqInfo, [len(batch), 3]) and Slots
// (the pool row of every new token, in batch order, for Write).
type Step struct {
	buf             ops.Tensor
	maxSeqs, maxNew int
	host            []uint32
	Info            ops.Tensor
	Slots           ops.Tensor
	Rows            int // new tokens in the batch
}

// NewStep allocates room for batches of up to maxSeqs sequences and
// maxNew new tokens in all.
func (c *Paged) NewStep(maxSeqs, maxNew int) (*Step, error) {
	if maxSeqs <= 0 || maxNew <= 0 {
		return nil, fmt.Errorf("kv: step of %d sequences, %d tokens", maxSeqs, maxNew)
	}
	buf, err := ops.New(c.ctx, "kv.step", ops.U32, maxSeqs*ops.SeqInfoFields+maxNew)
	if err != nil {
		return nil, fmt.Errorf("kv: allocating step buffer: %w", err)
	}
	return &Step{buf: buf, maxSeqs: maxSeqs, maxNew: maxNew}, nil
}

// Close frees the step's GPU memory.
func (s *Step) Close() { s.buf.Buf.Destroy() }

// Set fills the step for a batch: sequence i of the batch has kvLen
// Len(seq), qOffset Len(seq)-New and table row seq; its New slots follow
// those of the sequences before it. One upload (see Paged for when).
func (s *Step) Set(c *Paged, batch []StepSeq) error {
	if len(batch) == 0 || len(batch) > s.maxSeqs {
		return fmt.Errorf("kv: step of %d sequences (room for 1..%d)", len(batch), s.maxSeqs)
	}
	rows := 0
	for _, b := range batch {
		if err := c.check(b.Seq); err != nil {
			return err
		}
		if b.New < 0 || b.New > c.seqs[b.Seq].len {
			return fmt.Errorf("kv: step with %d new tokens of sequence %d, which holds %d", b.New, b.Seq, c.seqs[b.Seq].len)
		}
		rows += b.New
	}
	if rows > s.maxNew {
		return fmt.Errorf("kv: step of %d new tokens (room for %d)", rows, s.maxNew)
	}
	h := s.host[:0]
	for _, b := range batch {
		n := c.seqs[b.Seq].len
		h = append(h, uint32(n), uint32(n-b.New), uint32(b.Seq))
	}
	for _, b := range batch {
		n := c.seqs[b.Seq].len
		for pos := n - b.New; pos < n; pos++ {
			slot, _ := c.Slot(b.Seq, pos)
			h = append(h, slot)
		}
	}
	s.host = h
	if err := s.buf.View(0, len(h)).WriteUint32(h); err != nil {
		return fmt.Errorf("kv: uploading step: %w", err)
	}
	s.Info = s.buf.View(0, len(batch), ops.SeqInfoFields)
	s.Slots, s.Rows = ops.Tensor{}, rows
	if rows > 0 {
		s.Slots = s.buf.View(len(batch)*ops.SeqInfoFields, rows)
	}
	return nil
}
