package main

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/wgllm/wgllm/runtime/gpu"
	"github.com/wgllm/wgllm/runtime/model"
)

// opProfile is where one test's GPU time goes, per token (decode) or per
// batch (prefill), from timestamp queries around every dispatch.
type opProfile struct {
	test    string
	per     string  // "token" or "batch"
	units   int     // tokens or batches profiled
	wall    float64 // seconds per unit, with profiling on (each dispatch waits for the last)
	ops     []gpu.OpTime
	untimed int
}

// profileRuns times every dispatch of one prefill of nP tokens and of nG
// decode steps (at most 64) after the benchmark proper.
func profileRuns(ctx *gpu.Context, m *model.Model, seq, depth int, tokens []int32, nP, nG int) ([]opProfile, error) {
	if err := ctx.EnableProfiling(); err != nil {
		return nil, err
	}
	var out []opProfile
	if nP > 0 {
		if err := m.KV.Truncate(seq, depth); err != nil {
			return nil, err
		}
		ctx.ResetProfile()
		start := time.Now()
		if _, err := m.Forward(seq, tokens[:nP], model.NextGreedy, nil); err != nil {
			return nil, err
		}
		ops, untimed := ctx.Profile()
		out = append(out, opProfile{test: testName(nP, 0, depth), per: "batch", units: 1, wall: time.Since(start).Seconds(), ops: ops, untimed: untimed})
	}
	if nG > 0 {
		n := min(nG, 64)
		if err := m.KV.Truncate(seq, depth); err != nil {
			return nil, err
		}
		ctx.ResetProfile()
		start := time.Now()
		next := tokens[0]
		for i := 0; i < n; i++ {
			var err error
			if next, err = m.Forward(seq, []int32{next}, model.NextGreedy, nil); err != nil {
				return nil, err
			}
		}
		ops, untimed := ctx.Profile()
		out = append(out, opProfile{test: testName(0, n, depth), per: "token", units: n, wall: time.Since(start).Seconds() / float64(n), ops: ops, untimed: untimed})
	}
	return out, nil
}

func (p opProfile) print(w io.Writer) {
	var total uint64
	count := 0
	for _, o := range p.ops {
		total += o.Nanos
		count += o.Count
	}
	fmt.Fprintf(w, "\nprofile %s: GPU time per %s by pipeline (each dispatch in its own timed pass)\n", p.test, p.per)
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', tabwriter.AlignRight|tabwriter.Debug)
	fmt.Fprintf(tw, "pipeline\tdispatches/%s\tµs/%s\tshare\t\n", p.per, p.per)
	u := float64(p.units)
	for _, o := range p.ops {
		share := 0.0
		if total > 0 {
			share = 100 * float64(o.Nanos) / float64(total)
		}
		fmt.Fprintf(tw, "%s\t%.1f\t%.1f\t%.1f%%\t\n", o.Label, float64(o.Count)/u, float64(o.Nanos)/1e3/u, share)
	}
	fmt.Fprintf(tw, "total GPU\t%.1f\t%.1f\t100%%\t\n", float64(count)/u, float64(total)/1e3/u)
	tw.Flush()
	fmt.Fprintf(w, "wall time per %s while profiling: %.1f µs (GPU busy %.0f%%)", p.per, p.wall*1e6, 100*float64(total)/1e9/u/p.wall)
	if p.untimed > 0 {
		fmt.Fprintf(w, "; %d dispatches untimed (past the query set)", p.untimed)
	}
	fmt.Fprintln(w)
}
