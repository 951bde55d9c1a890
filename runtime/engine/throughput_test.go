package engine

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/runtime/model"
	"github.com/wgllm/wgllm/runtime/sample"
)

// BenchmarkThroughput measures aggregate decode tokens/s of the bundled-size
// kjv model with 1, 4 and 16 concurrent greedy clients (continuous batching
// shares each step's weight reads across sequences).
func BenchmarkThroughput(b *testing.B) {
	for _, clients := range []int{1, 4, 16} {
		b.Run(fmt.Sprintf("clients%d", clients), func(b *testing.B) {
			g := open(b, "kjv-30m-q4_k_m.gguf", model.Options{CtxLen: 256, Seqs: 16, KVType: ops.F16, Batch: 64})
			ctx := g.M.Context()
			debug := ctx.Debug
			ctx.Debug = false
			defer func() { ctx.Debug = debug }()
			e, err := NewEngine(g.M, g.Tok, Options{MaxBatch: 16})
			if err != nil {
				b.Fatal(err)
			}
			defer e.Close()
			const perJob = 64
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				var wg sync.WaitGroup
				for c := 0; c < clients; c++ {
					wg.Add(1)
					done := make(chan struct{})
					if _, err := e.Submit(Job{Prompt: prompts[c%len(prompts)], MaxTokens: perJob, Sampling: sample.Greedy()}, func(ev Event) {
						if ev.Done {
							close(done)
						}
					}); err != nil {
						b.Fatal(err)
					}
					go func() { <-done; wg.Done() }()
				}
				wg.Wait()
			}
			el := time.Since(start)
			b.StopTimer()
			m := e.Metrics()
			b.ReportMetric(float64(m.TokensGenerated)/el.Seconds(), "tokens/s")
		})
	}
}
