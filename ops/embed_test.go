package ops_test

import (
	"fmt"
	"math/rand"
	"testing"

	"github.com/wgllm/wgllm/internal/gputest"
	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/ops/ref"
	"github.com/wgllm/wgllm/runtime/gpu"
)

// TestEmbed looks up f32 and f16 tables at odd offsets with odd dims,
// repeated ids and ids out of the vocabulary (which must give zeros), with
// the whole table in one binding and split into chunks of a few rows.
// The reference reads the table as stored (f16 rounding included), so
// every element must match exactly: a lookup does no arithmetic.
func TestEmbed(t *testing.T) {
	ctx := gputest.Ctx(t)
	cases := []struct {
		vocab, dim int
		ids        []uint32
	}{
		{1, 1, []uint32{0}},
		{7, 57, []uint32{3, 3, 0, 6, 3}},
		{50, 64, []uint32{49, 0, 17, 17, 17, 2, 49, 8, 31}},
		{300, 57, []uint32{299, 150, 1, 0, 150, 298}},
		{11, 33, []uint32{5, 11, 0, 1 << 31, 0xffffffff, 10, 12}}, // out of vocabulary
		{1000, 129, nil},                                          // 64 random ids, filled below
	}
	for ci, c := range cases {
		for _, dt := range []ops.DType{ops.F32, ops.F16} {
			for _, chunk := range []int{0, 3} {
				t.Run(fmt.Sprintf("%s/%dx%d_%dids_chunkrows%d", dt, c.vocab, c.dim, len(c.ids), chunk), func(t *testing.T) {
					seed := int64(5000 + ci)
					rng := rand.New(rand.NewSource(seed))
					ids := c.ids
					if ids == nil {
						ids = make([]uint32, 64)
						for i := range ids {
							ids[i] = uint32(rng.Intn(c.vocab))
						}
					}
					if chunk > 0 {
						// Leave room for the binding window's alignment.
						restore := ops.SetEmbedChunkBytes(uint64(ctx.Limits.MinStorageBufferOffsetAlignment) + uint64(chunk*c.dim*dt.Size()))
						defer restore()
					}
					const tabOff = 3
					tv := gputest.Rand(rng, tabOff+c.vocab*c.dim+1, 2)
					tabBuf, err := ops.FromFloat32(ctx, "table", dt, tv, len(tv))
					must(t, err)
					defer tabBuf.Buf.Destroy()
					table := tabBuf.View(tabOff, c.vocab, c.dim)
					stored, err := table.Read()
					must(t, err)
					idBuf, err := ops.FromUint32(ctx, "ids", append([]uint32{0}, ids...), len(ids)+1)
					must(t, err)
					defer idBuf.Buf.Destroy()
					idv := idBuf.View(1, len(ids))
					d := paddedF32(t, ctx, "d", rng, make([]float32, len(ids)*c.dim), 1, len(ids), c.dim)
					gputest.Poison(t, d)
					enc, err := ctx.NewEncoder()
					must(t, err)
					must(t, ops.Embed(enc, d, table, idv))
					if chunk > 0 && c.vocab > chunk && enc.Dispatches() < 2 {
						t.Errorf("table of %d rows with %d-row chunks took %d dispatch", c.vocab, chunk, enc.Dispatches())
					}
					must(t, enc.SubmitAndWait())
					got, err := d.Read()
					must(t, err)
					want := make([]float64, len(ids)*c.dim)
					ref.Embed(want, gputest.F64(stored), ids, c.vocab, c.dim)
					for i := range got {
						if float64(got[i]) != want[i] {
							t.Fatalf("seed %d: token %d (id %d) dim %d: got %g, want %g", seed, i/c.dim, ids[i/c.dim], i%c.dim, got[i], want[i])
						}
					}
				})
			}
		}
	}
}

func TestValidateIDs(t *testing.T) {
	if err := ops.ValidateIDs([]uint32{0, 5, 31999}, 32000); err != nil {
		t.Errorf("valid ids rejected: %v", err)
	}
	for _, ids := range [][]uint32{{32000}, {1, 2, 0xffffffff}} {
		if err := ops.ValidateIDs(ids, 32000); err == nil {
			t.Errorf("ids %v accepted for a vocabulary of 32000", ids)
		}
	}
}

func TestEmbedRejectsBadInput(t *testing.T) {
	ctx := gputest.Ctx(t)
	mk := func(dt ops.DType, shape ...int) ops.Tensor {
		x, err := ops.New(ctx, "x", dt, shape...)
		must(t, err)
		t.Cleanup(x.Buf.Destroy)
		return x
	}
	table, ids, d := mk(ops.F16, 10, 8), mk(ops.U32, 4), mk(ops.F32, 4, 8)
	enc, err := ctx.NewEncoder()
	must(t, err)
	defer enc.Release()
	must(t, ops.Embed(enc, d, table, ids))
	for name, err := range map[string]error{
		"u32 table":      ops.Embed(enc, d, mk(ops.U32, 10, 8), ids),
		"1-D table":      ops.Embed(enc, d, table.View(0, 80), ids),
		"f32 ids":        ops.Embed(enc, d, table, mk(ops.F32, 4)),
		"2-D ids":        ops.Embed(enc, d, table, ids.View(0, 2, 2)),
		"dst rows":       ops.Embed(enc, mk(ops.F32, 3, 8), table, ids),
		"dst dim":        ops.Embed(enc, mk(ops.F32, 4, 7), table, ids),
		"f16 dst":        ops.Embed(enc, mk(ops.F16, 4, 8), table, ids),
		"dst over ids":   ops.Embed(enc, ops.Tensor{Buf: ids.Buf, DType: ops.F32, Shape: []int{4, 1}}, table.View(0, 10, 1), ids),
		"dst over table": ops.Embed(enc, ops.Tensor{Buf: table.Buf, DType: ops.F32, Shape: []int{4, 8}}, table, ids),
	} {
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestEmbedOneArena: table, ids and output as disjoint ranges of one
// buffer.
func TestEmbedOneArena(t *testing.T) {
	ctx := gputest.Ctx(t)
	const vocab, dim, seed = 9, 57, 5900
	rng := rand.New(rand.NewSource(seed))
	ids := []uint32{8, 0, 3, 3, 20}
	tv := gputest.Rand(rng, vocab*dim, 2)
	arena, err := ops.New(ctx, "arena", ops.F32, vocab*dim+len(ids)+len(ids)*dim+2)
	must(t, err)
	defer arena.Buf.Destroy()
	table := arena.View(1, vocab, dim)
	must(t, table.Write(tv))
	idv := ops.Tensor{Buf: arena.Buf, Off: 1 + vocab*dim, DType: ops.U32, Shape: []int{len(ids)}}
	must(t, idv.WriteUint32(ids))
	d := arena.View(1+vocab*dim+len(ids), len(ids), dim)
	gputest.Poison(t, d)
	runOp(t, ctx, func(enc *gpu.Encoder) error { return ops.Embed(enc, d, table, idv) })
	got, err := d.Read()
	must(t, err)
	want := make([]float64, len(ids)*dim)
	ref.Embed(want, gputest.F64(tv), ids, vocab, dim)
	for i := range got {
		if float64(got[i]) != want[i] {
			t.Fatalf("token %d dim %d: got %g, want %g", i/dim, i%dim, got[i], want[i])
		}
	}
}
