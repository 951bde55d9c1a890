package gpu

import (
	"encoding/binary"
	"sort"
)

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
