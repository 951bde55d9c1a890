package kv

import (
	"errors"
	"math/rand"
	"strings"
	"testing"

	"github.com/wgllm/wgllm/internal/gputest"
	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/runtime/half"
)

func TestAppendReadTruncateRelease(t *testing.T) {
	ctx := gputest.Ctx(t)
	for _, dt := range []ops.DType{ops.F32, ops.F16} {
		t.Run(dt.String(), func(t *testing.T) {
			cfg := Config{Layers: 2, KVHeads: 3, HeadDim: 6, Capacity: 9, Seqs: 2, DType: dt}
			c, err := New(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if want := uint64(2 * 2 * 2 * 9 * 3 * 6 * dt.Size()); c.Bytes() != want {
				t.Fatalf("Bytes %d, want %d", c.Bytes(), want)
			}
			row := cfg.KVHeads * cfg.HeadDim
			rng := rand.New(rand.NewSource(3))
			a, _ := c.Acquire()
			b, _ := c.Acquire()
			if _, err := c.Acquire(); !errors.Is(err, ErrFull) {
				t.Fatalf("third slot of two: %v", err)
			}
			// Sequence a gets 4 then 3 tokens; b gets 5, interleaved, so a
			// write to one slot must not touch the other.
			var wantA, wantB [][]float32 // per layer: K then V rows
			writes := []struct{ seq, n int }{{a, 4}, {b, 5}, {a, 3}}
			wantA = make([][]float32, 2*cfg.Layers)
			wantB = make([][]float32, 2*cfg.Layers)
			for _, w := range writes {
				pos, err := c.Reserve(w.seq, w.n)
				if err != nil {
					t.Fatal(err)
				}
				enc, _ := ctx.NewEncoder()
				for l := 0; l < cfg.Layers; l++ {
					kv := gputest.Rand(rng, w.n*row, 2)
					vv := gputest.Rand(rng, w.n*row, 2)
					k, _ := ops.FromFloat32(ctx, "k", ops.F32, kv, w.n, row)
					v, _ := ops.FromFloat32(ctx, "v", ops.F32, vv, w.n, row)
					defer k.Buf.Destroy()
					defer v.Buf.Destroy()
					if err := c.Write(enc, l, w.seq, pos, k, v); err != nil {
						t.Fatal(err)
					}
					dst := wantA
					if w.seq == b {
						dst = wantB
					}
					dst[2*l] = append(dst[2*l], kv...)
					dst[2*l+1] = append(dst[2*l+1], vv...)
				}
				if err := enc.SubmitAndWait(); err != nil {
					t.Fatal(err)
				}
			}
			check := func(seq int, want [][]float32) {
				t.Helper()
				for l := 0; l < cfg.Layers; l++ {
					k, v, err := c.Read(l, seq)
					if err != nil {
						t.Fatal(err)
					}
					for i, pair := range [][2][]float32{{k, want[2*l]}, {v, want[2*l+1]}} {
						got, w := pair[0], pair[1]
						if len(got) != len(w) {
							t.Fatalf("seq %d layer %d tensor %d: %d values, want %d", seq, l, i, len(got), len(w))
						}
						for j := range w {
							exp := w[j]
							if dt == ops.F16 {
								exp = half.ToFloat32(half.FromFloat32(exp))
							}
							if got[j] != exp {
								t.Fatalf("seq %d layer %d tensor %d element %d: %v, want %v", seq, l, i, j, got[j], exp)
							}
						}
					}
				}
			}
			check(a, wantA)
			check(b, wantB)
			// Full: a holds 7 of 9; 3 more is an error that changes nothing.
			if _, err := c.Reserve(a, 3); !errors.Is(err, ErrFull) || !strings.Contains(err.Error(), "7 of 9") {
				t.Fatalf("overfull reserve: %v", err)
			}
			if c.Len(a) != 7 {
				t.Fatalf("failed reserve changed the length to %d", c.Len(a))
			}
			// Truncate keeps a prefix; the kept rows are intact.
			if err := c.Truncate(a, 2); err != nil {
				t.Fatal(err)
			}
			for i := range wantA {
				wantA[i] = wantA[i][:2*row]
			}
			check(a, wantA)
			if err := c.Truncate(a, 5); err == nil {
				t.Error("truncate beyond the length accepted")
			}
			// Writing rows that were not reserved is refused.
			enc, _ := ctx.NewEncoder()
			defer enc.Release()
			k, _ := ops.New(ctx, "k", ops.F32, 1, row)
			defer k.Buf.Destroy()
			if err := c.Write(enc, 0, a, 2, k, k); err == nil {
				t.Error("write past the reserved rows accepted")
			}
			// Release frees the slot for reuse, empty.
			c.Release(a)
			if c.Len(a) != 0 {
				t.Error("released slot still has a length")
			}
			if s, err := c.Acquire(); err != nil || s != a || c.Len(s) != 0 {
				t.Fatalf("reacquire: %d %v len %d", s, err, c.Len(s))
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	ctx := gputest.Ctx(t)
	for _, cfg := range []Config{
		{Layers: 0, KVHeads: 1, HeadDim: 4, Capacity: 4, Seqs: 1, DType: ops.F32},
		{Layers: 1, KVHeads: 1, HeadDim: 4, Capacity: 4, Seqs: 1, DType: ops.Q4_0},
	} {
		if _, err := New(ctx, cfg); err == nil {
			t.Errorf("config %+v accepted", cfg)
		}
	}
}
