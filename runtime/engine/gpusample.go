package engine

import (
	"errors"

	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/runtime/model"
)

// GPU sampling (Options.GPUSampling): a job whose settings the GPU sampler
// takes draws its tokens on the GPU (model.StepSampled), so a step reads
// back token ids, not logits. The chain is runtime/sample's; the draw's
// random number is Philox4x32-10 of the job's seed and its token count
// (ops.SampleParams), not runtime/sample's PCG stream, so a seed gives
// other text than on the CPU path, the same text every time, whatever the
// batch. A step runs on the GPU sampler when every job in it is a GPU job;
// otherwise the whole step samples on the CPU as before (each job with
// its own runtime/sample stream) and the GPU jobs' penalty windows are
// kept up to date from the host.

// gpuDraw is a GPU job's sampler state, loop goroutine only.
type gpuDraw struct {
	on       bool
	step     uint64 // tokens drawn so far: the Philox counter
	capacity int    // penalty ring size (PenaltyLastN, at most model.SampleWindow); 0: no penalties
	filled   int    // ring slots holding tokens
	head     int    // next ring slot
}

// startGPUDraw decides whether j samples on the GPU and, if so, writes the
// end of its prompt into its sequence's penalty window.
func (e *Engine) startGPUDraw(j *job) error {
	j.draw = gpuDraw{}
	p := j.Sampling
	if !e.opt.GPUSampling || j.Grammar != nil || len(j.LogitBias) > 0 || j.Logprobs {
		return nil // runtime/sample does what the GPU sampler does not
	}
	// Greedy jobs take the plain argmax, as on the CPU path.
	penalties := p.Temperature != 0 && p.PenaltyLastN > 0 && (p.RepeatPenalty != 1 || p.FrequencyPenalty != 0 || p.PresencePenalty != 0)
	if penalties && p.PenaltyLastN > model.SampleWindow {
		return nil // the GPU window is shorter: the CPU samples this job
	}
	if ops.SampleSupported(j.gpuParams(), e.m.Cfg.Vocab, model.SampleWindow) != nil {
		return nil
	}
	j.draw.on = true
	if !penalties {
		return nil
	}
	j.draw.capacity = p.PenaltyLastN
	tail := j.ids[max(0, len(j.ids)-j.draw.capacity):]
	if err := e.m.SetSampleWindow(j.seq, 0, tail); err != nil {
		return err
	}
	j.draw.filled = len(tail)
	j.draw.head = len(tail) % j.draw.capacity
	return nil
}

// gpuParams is j's next draw on the GPU.
func (j *job) gpuParams() ops.SampleParams {
	p := j.Sampling
	sp := ops.SampleParams{Temperature: p.Temperature, TopK: p.TopK, TopP: p.TopP, MinP: p.MinP,
		RepeatPenalty: p.RepeatPenalty, FrequencyPenalty: p.FrequencyPenalty, PresencePenalty: p.PresencePenalty,
		Seed: p.Seed, Step: j.draw.step, WindowSlot: ops.NoWindowSlot}
	if sp.TopP == 0 { // greedy jobs may leave the rest unset
		sp.TopP = 1
	}
	if j.draw.capacity == 0 { // no penalties (greedy jobs never take them)
		sp.RepeatPenalty, sp.FrequencyPenalty, sp.PresencePenalty = 1, 0, 0
	}
	if j.draw.capacity > 0 {
		sp.WindowLen, sp.WindowSlot = j.draw.filled, j.draw.head
	}
	return sp
}

// drew advances a GPU job's draw counter and penalty ring past tok.
func (j *job) drew() {
	j.draw.step++
	if j.draw.capacity > 0 {
		j.draw.head = (j.draw.head + 1) % j.draw.capacity
		j.draw.filled = min(j.draw.filled+1, j.draw.capacity)
	}
}

// gpuStep reports whether this step's jobs all sample on the GPU.
func gpuStep(jobs []*job) bool {
	for _, j := range jobs {
		if !j.draw.on {
			return false
		}
	}
	return len(jobs) > 0
}

// stepOnGPU runs the step with every span's token drawn on the GPU. A
// span in the middle of its prompt draws greedily into no window; its
// token is not used.
func (e *Engine) stepOnGPU(spans []model.Span, jobs []*job, next []int32) error {
	ps := e.paramBuf[:0]
	for i, j := range jobs {
		if len(j.toPrefill) > len(spans[i].Tokens) {
			ps = append(ps, ops.SampleParams{TopP: 1, RepeatPenalty: 1, WindowSlot: ops.NoWindowSlot})
		} else {
			ps = append(ps, j.gpuParams())
		}
	}
	e.paramBuf = ps
	return e.m.StepSampled(spans, ps, next)
}

// keptOnGPU records a token that a GPU job got: drawn on the GPU, where
// the kernel wrote it into the window, or on the CPU in a mixed step,
// where the host writes it.
func (e *Engine) keptOnGPU(j *job, tok int32, onGPU bool) error {
	if !j.draw.on {
		return nil
	}
	if tok < 0 {
		return errors.New("engine: sampling: a logit is NaN or +Inf, or every one is -Inf")
	}
	if !onGPU && j.draw.capacity > 0 {
		if err := e.m.SetSampleWindow(j.seq, j.draw.head, []int32{tok}); err != nil {
			return err
		}
	}
	if onGPU && j.sampler != nil {
		// The CPU sampler's penalty window follows, for steps on the CPU.
		if err := j.sampler.Accept(tok); err != nil {
			return err
		}
	}
	j.drew()
	return nil
}
