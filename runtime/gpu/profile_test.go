package gpu

import (
	"encoding/binary"
	"errors"
	"math"
	"testing"
)

// Profiling times every dispatch per pipeline label, and the work still
// computes the right result (each dispatch in its own pass, in order).
func TestProfileTimesEveryDispatch(t *testing.T) {
	opts := OptionsFromEnv()
	opts.Timestamps = true
	c, err := New(opts)
	if errors.Is(err, ErrNoAdapter) {
		t.Skipf("no WebGPU adapter: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !c.HasTimestamps {
		if err := c.EnableProfiling(); err == nil {
			t.Fatal("profiling enabled without timestamp queries")
		}
		t.Skipf("adapter %q has no timestamp queries: nothing to profile with", c.Adapter.Name)
	}
	if err := c.EnableProfiling(); err != nil {
		t.Fatal(err)
	}
	add, err := c.Pipeline(testKey{"add"}, func() (PipelineSpec, error) {
		return PipelineSpec{Source: addShader, Storage: []Access{ReadWrite}}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	add2, err := c.Pipeline(testKey{"add-again"}, func() (PipelineSpec, error) {
		return PipelineSpec{Source: addShader, Storage: []Access{ReadWrite}}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	const n = 4096
	b, _ := c.NewBuffer("x", n*4)
	defer b.Destroy()
	for round := 0; round < 2; round++ { // two submissions add up
		enc, err := c.NewEncoder()
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 5; i++ {
			if err := enc.Dispatch(add, addParams{N: n, Add: 1}, []Arg{WholeBuffer(b)}, n/64, 1, 1); err != nil {
				t.Fatal(err)
			}
		}
		if err := enc.Dispatch(add2, addParams{N: n, Add: 0.5}, []Arg{WholeBuffer(b)}, n/64, 1, 1); err != nil {
			t.Fatal(err)
		}
		if err := enc.SubmitAndWait(); err != nil {
			t.Fatal(err)
		}
	}
	prof, untimed := c.Profile()
	if untimed != 0 || len(prof) != 2 {
		t.Fatalf("profile %+v, %d untimed: want two pipelines", prof, untimed)
	}
	counts := map[string]int{}
	for _, o := range prof {
		counts[o.Label] = o.Count
		if o.Nanos == 0 || o.Nanos > 10e9 {
			t.Errorf("%s: %d ns for %d dispatches", o.Label, o.Nanos, o.Count)
		}
	}
	if counts[testKey{"add"}.String()] != 10 || counts[testKey{"add-again"}.String()] != 2 {
		t.Errorf("dispatch counts %v: want add 10, add-again 2", counts)
	}
	raw, err := b.Read(0, n*4)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if got := math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:])); got != 11 {
			t.Fatalf("x[%d] = %v after profiled dispatches, want 11", i, got)
		}
	}
	c.ResetProfile()
	if p, _ := c.Profile(); len(p) != 0 {
		t.Errorf("after reset: %+v", p)
	}
}
