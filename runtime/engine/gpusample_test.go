package engine

import (
	"testing"

	"github.com/wgllm/wgllm/runtime/sample"
)

// runJobs submits jobs at once and returns their texts.
func runJobs(t *testing.T, e *Engine, jobs ...Job) []string {
	t.Helper()
	cs := make([]*collector, len(jobs))
	for i, j := range jobs {
		cs[i] = newCollector()
		if _, err := e.Submit(j, cs[i].emit); err != nil {
			t.Fatal(err)
		}
	}
	texts := make([]string, len(jobs))
	for i, c := range cs {
		var ev Event
		texts[i], ev = c.wait(t)
		if ev.Err != nil {
			t.Fatalf("job %d: %v", i, ev.Err)
		}
	}
	return texts
}

// TestGPUSampling: with Options.GPUSampling, greedy jobs give the CPU
// path's text; a seeded sampled job (with and without penalties) gives the
// same text alone and among other jobs, another seed other text; a job the
// GPU sampler does not take (a penalty window longer than the GPU's) runs
// beside GPU jobs on the CPU path.
func TestGPUSampling(t *testing.T) {
	gpu := newEngine(t, 4, Options{GPUSampling: true})
	cpu := newEngine(t, 4, Options{})
	_, _, scratch0 := gpu.m.Memory()

	greedy := make([]Job, 3)
	for i := range greedy {
		greedy[i] = Job{Prompt: prompts[i], MaxTokens: 20, Sampling: sample.Greedy()}
	}
	if g, c := runJobs(t, gpu, greedy...), runJobs(t, cpu, greedy...); g[0] != c[0] || g[1] != c[1] || g[2] != c[2] {
		t.Errorf("greedy texts differ between GPU and CPU sampling:\n%q\n%q", g, c)
	}
	if _, _, s := gpu.m.Memory(); s <= scratch0 {
		t.Fatal("the GPU sampler's buffers were never made: the jobs did not sample on the GPU")
	}

	seeded := func(seed uint64, penalties bool) Job {
		p := sample.DefaultParams()
		p.Seed = seed
		if penalties {
			p.RepeatPenalty, p.FrequencyPenalty, p.PresencePenalty, p.PenaltyLastN = 1.3, 0.1, 0.2, 16
		}
		return Job{Prompt: "Once upon a time", MaxTokens: 30, Sampling: p}
	}
	for _, penalties := range []bool{false, true} {
		alone := runJobs(t, gpu, seeded(7, penalties))[0]
		again := runJobs(t, gpu, seeded(7, penalties), seeded(8, penalties), greedy[0], seeded(9, !penalties))
		if again[0] != alone {
			t.Errorf("penalties %v: seed 7 alone %q, among other jobs %q", penalties, alone, again[0])
		}
		if again[1] == alone {
			t.Errorf("penalties %v: seeds 7 and 8 gave the same 30 tokens %q", penalties, alone)
		}
	}

	long := seeded(3, true)
	long.Sampling.PenaltyLastN = 100 // more than model.SampleWindow: the CPU samples it
	texts := runJobs(t, gpu, long, seeded(4, true), greedy[1])
	for i, s := range texts {
		if s == "" {
			t.Errorf("mixed step: job %d produced no text", i)
		}
	}
	if texts[2] != runJobs(t, cpu, greedy[1])[0] {
		t.Errorf("a greedy job in a mixed step: %q, alone on the CPU path %q", texts[2], runJobs(t, cpu, greedy[1])[0])
	}
}
