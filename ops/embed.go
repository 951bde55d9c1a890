package ops

import (
	"fmt"

	"github.com/wgllm/wgllm/runtime/gpu"
	"github.com/wgllm/wgllm/wgsl"
)

type embedKey struct {
	T          DType // table dtype
	AliasTable bool  // table shares dst's buffer (disjoint; bound read_write)
	AliasIDs   bool  // ids share dst's buffer (disjoint; bound read_write)
	// InDTable / InDIDs: the table / ids lie in dst's binding window: not
	// bound, read as words of dst's binding (Dawn rejects overlapping
	// writable bindings).
	InDTable, InDIDs bool
	WG               int
}

func (k embedKey) String() string {
	s := fmt.Sprintf("embed_t%s_wg%d", k.T, k.WG)
	for _, f := range []struct {
		on   bool
		name string
	}{{k.AliasTable && !k.InDTable, "_aliastable"}, {k.AliasIDs && !k.InDIDs, "_aliasids"}, {k.InDTable, "_indtable"}, {k.InDIDs, "_indids"}} {
		if f.on {
			s += f.name
		}
	}
	return s
}

type embedParams struct {
	NTokens, Dim uint32
	TOff, IDsOff uint32
	DOff         uint32
	RowLo, RowHi uint32 // the table rows this dispatch's binding covers
	Vocab        uint32
	ZeroOOV      uint32 // 1 in the one dispatch that writes zeros for ids >= vocab
	Total        uint32
}

// embedChunkBytes, when non-zero, caps the table bytes one dispatch binds
// (tests use it to exercise the chunked path on any device).
var embedChunkBytes uint64

// Embed looks up token embeddings: dst[t, :] = table[ids[t], :] for
// dst [nTokens, dim] f32, table [vocab, dim] f32 or f16 (converted to
// f32 exactly), ids [nTokens] u32.
//
// The ids live on the GPU, so the host cannot check them here: a token id
// >= vocab never reads outside the table, its row of dst is written as
// zeros instead. Callers holding the ids on the host (prompt tokens,
// sampled tokens) should check them with ValidateIDs before uploading.
//
// A table larger than one storage binding (a 262 MB f16 llama-7B table on
// a device with the 128 MiB default) is bound in row chunks, one dispatch
// each; every dst element is still written by exactly one dispatch.
func Embed(enc *gpu.Encoder, dst, table, ids Tensor) error {
	if len(table.Shape) != 2 || table.Len() == 0 || (table.DType != F32 && table.DType != F16) {
		return fmt.Errorf("ops.Embed: table %s must be [vocab, dim] f32 or f16", table)
	}
	vocab, dim := table.Shape[0], table.Shape[1]
	if ids.DType != U32 || len(ids.Shape) != 1 || ids.Len() == 0 {
		return fmt.Errorf("ops.Embed: ids %s must be u32 [nTokens]", ids)
	}
	nTokens := ids.Len()
	if dst.DType != F32 || len(dst.Shape) != 2 || dst.Shape[0] != nTokens || dst.Shape[1] != dim {
		return fmt.Errorf("ops.Embed: dst %s must be f32 [%d, %d] for ids %s and table %s", dst, nTokens, dim, ids, table)
	}
	if uint64(nTokens)*uint64(dim) >= 1<<32 || uint64(vocab) >= 1<<32 {
		return fmt.Errorf("ops.Embed: dst %s or table %s too large for one dispatch", dst, table)
	}
	key := embedKey{T: table.DType, WG: 256}
	var err error
	if key.AliasTable, err = aliasOf("Embed", dst, table, false); err != nil {
		return err
	}
	if key.AliasIDs, err = aliasOf("Embed", dst, ids, false); err != nil {
		return err
	}
	ctx := enc.Context()
	// Rows per binding: leave room for the binding window's alignment.
	limit := ctx.MaxBinding()
	if embedChunkBytes != 0 {
		limit = min(limit, embedChunkBytes)
	}
	align := uint64(ctx.Limits.MinStorageBufferOffsetAlignment)
	rowBytes := uint64(dim * table.DType.Size())
	chunkRows := vocab
	if table.Bytes() > limit {
		if limit <= align+rowBytes {
			return fmt.Errorf("ops.Embed: one row of table %s (%d bytes) does not fit a storage binding of %d bytes", table, rowBytes, limit)
		}
		chunkRows = int((limit - align) / rowBytes)
	}
	var idsOff uint32
	if key.AliasIDs {
		key.InDIDs, idsOff = windowOf(dst, ids)
	}
	if key.AliasTable && chunkRows == vocab {
		key.InDTable, _ = windowOf(dst, table)
	}
	pipe, err := ctx.Pipeline(key, func() (gpu.PipelineSpec, error) {
		src, err := wgsl.Render("embed.wgsl", map[string]any{
			"T": key.T.String(), "WG": key.WG, "AliasTable": key.AliasTable, "AliasIDs": key.AliasIDs,
			"InDTable": key.InDTable, "InDIDs": key.InDIDs, "BindIDs": 2 - b2i(key.InDTable), "BindD": 3 - b2i(key.InDTable) - b2i(key.InDIDs),
		})
		var storage []gpu.Access
		if !key.InDTable {
			storage = append(storage, access(key.AliasTable))
		}
		if !key.InDIDs {
			storage = append(storage, access(key.AliasIDs))
		}
		return gpu.PipelineSpec{Source: src, Storage: append(storage, gpu.ReadWrite)}, err
	})
	if err != nil {
		return err
	}
	total := nTokens * dim
	gx, gy := ctx.Grid(uint32(ceilDiv(total, key.WG)))
	for lo := 0; lo < vocab; lo += chunkRows {
		hi := min(lo+chunkRows, vocab)
		chunk := table.View(lo*dim, hi-lo, dim)
		var bound []Tensor
		if !key.InDTable {
			bound = append(bound, chunk)
		}
		if !key.InDIDs {
			bound = append(bound, ids)
		}
		args, offs, err := binds("Embed", append(bound, dst)...)
		if err != nil {
			return err
		}
		tOff, iOff, dOff := uint32(0), idsOff, offs[len(offs)-1]
		if key.InDTable {
			_, tOff = windowOf(dst, chunk)
		} else {
			tOff = offs[0]
		}
		if !key.InDIDs {
			iOff = offs[len(offs)-2]
		}
		p := embedParams{
			NTokens: uint32(nTokens), Dim: uint32(dim),
			TOff: tOff, IDsOff: iOff, DOff: dOff,
			RowLo: uint32(lo), RowHi: uint32(hi), Vocab: uint32(vocab),
			Total: uint32(total),
		}
		if lo == 0 {
			p.ZeroOOV = 1
		}
		if err := enc.Dispatch(pipe, p, args, gx, gy, 1); err != nil {
			return err
		}
	}
	return nil
}

// ValidateIDs reports the first token id outside [0, vocab), for callers
// that hold the ids on the host before uploading them for Embed.
func ValidateIDs(ids []uint32, vocab int) error {
	for i, id := range ids {
		if uint64(id) >= uint64(vocab) {
			return fmt.Errorf("ops: token id %d at index %d is outside the vocabulary of %d", id, i, vocab)
		}
	}
	return nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
