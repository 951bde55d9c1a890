package ops

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/wgllm/wgllm/runtime/gguf"
	"github.com/wgllm/wgllm/runtime/half"
	"github.com/wgllm/wgllm/runtime/quant"
)

// KV pools (the key and value caches that RoPEStore, ScatterRows and
// AttentionPaged write and read) are f32, f16 or Q8_0. A Q8_0 pool holds
// ggml's block_q8_0 quantisation (32 consecutive values of a row, one f16
// scale d = amax/127, int8 q = round(x/d)) in two planes instead of 34-byte
// blocks: for a pool of N values (rows of a multiple of 32), bytes [0, N)
// are the int8 quants, value i at byte i, and bytes [N, N + N/16) the f16
// scales, block i/32 at byte N + 2·(i/32). The bytes are the same as ggml's
// (34 per 32 values, so KV bytes per token are 17/32 of f16), but every
// value's quant stays at its element index: rows remain 4-byte aligned,
// a vec4 of keys is one word, and a writer of one block never touches
// another block's quant bytes. Two neighbouring blocks share a scale word,
// which writers update atomically, half by half.
//
// A Q8_0 pool is always a whole tensor as allocated (offset 0, its full
// length), because the scale plane's place follows from the length.

// IsKVPoolType reports the storage types a KV pool may have.
func IsKVPoolType(dt DType) bool { return dt == F32 || dt == F16 || dt == Q8_0 }

// kvQ8ScaleWord checks that a Q8_0 pool is a whole tensor and returns the
// word index of its scale plane (N/4).
func kvQ8ScaleWord(t Tensor) (uint32, error) {
	if t.Off != 0 || (t.Bytes()+3)/4*4 != t.Buf.Size() {
		return 0, fmt.Errorf("a q8_0 KV pool %s must be a whole tensor as allocated (offset %d, %d of %d bytes)", t, t.Off, t.Bytes(), t.Buf.Size())
	}
	if !fitsU32(t.Len()) {
		return 0, fmt.Errorf("a q8_0 KV pool %s is too large for 32-bit indexing", t)
	}
	return uint32(t.Len() / 4), nil
}

// WriteKVPool stores values into a KV pool: as f32 or f16 (Write), or
// quantised to Q8_0 as ggml's quantize_row_q8_0_ref does (a host copy for
// tests and tools; the GPU kernels quantise alike). A q8_0 block holding a
// NaN or infinity is stored as NaN.
func WriteKVPool(t Tensor, data []float32) error {
	if t.DType != Q8_0 {
		return t.Write(data)
	}
	if _, err := kvQ8ScaleWord(t); err != nil {
		return fmt.Errorf("ops.WriteKVPool: %w", err)
	}
	if len(data) != t.Len() {
		return fmt.Errorf("ops.WriteKVPool: %d values for %s", len(data), t)
	}
	n := len(data)
	raw := make([]byte, t.Buf.Size())
	var blk [34]byte
	for b := 0; b < n/32; b++ {
		x := data[32*b : 32*(b+1)]
		if !finite(x) {
			// Stored as NaN (tests poison pools with NaN): quants 0, scale NaN.
			binary.LittleEndian.PutUint16(raw[n+2*b:], 0x7e00)
			continue
		}
		if err := quant.QuantizeRow(gguf.Q8_0, x, blk[:]); err != nil {
			return fmt.Errorf("ops.WriteKVPool: %w", err)
		}
		copy(raw[n+2*b:], blk[:2])
		copy(raw[32*b:], blk[2:])
	}
	return t.Buf.Write(0, raw)
}

// ReadKVPool copies a KV pool back as float32, dequantising a Q8_0 pool
// (waits for submitted work).
func ReadKVPool(t Tensor) ([]float32, error) {
	if t.DType != Q8_0 {
		return t.Read()
	}
	if _, err := kvQ8ScaleWord(t); err != nil {
		return nil, fmt.Errorf("ops.ReadKVPool: %w", err)
	}
	raw, err := t.Buf.Read(0, t.Buf.Size())
	if err != nil {
		return nil, err
	}
	return DecodeKVQ8(raw, t.Len()), nil
}

// DecodeKVQ8 dequantises the first n values of a Q8_0 KV pool's bytes.
func DecodeKVQ8(raw []byte, n int) []float32 {
	out := make([]float32, n)
	for i := range out {
		d := half.ToFloat32(binary.LittleEndian.Uint16(raw[n+2*(i/32):]))
		out[i] = float32(int8(raw[i])) * d
	}
	return out
}

func finite(x []float32) bool {
	for _, v := range x {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return false
		}
	}
	return true
}
