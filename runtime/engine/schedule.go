package engine

import (
	"errors"
	"fmt"

	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/runtime/kv"
	"github.com/wgllm/wgllm/runtime/model"
)

// defaultStepTokens is Options.StepTokens' default: vLLM's chunked
// prefill fills each step to a budget the same way.
const defaultStepTokens = 512

// stepBuffers are the slices a step reuses, so a steady step allocates
// nothing that grows with the batch.
type stepBuffers struct {
	spanBuf  []model.Span
	jobBuf   []*job
	tokBuf   []int32
	nextBuf  []int32
	logitBuf []float32
	paramBuf []ops.SampleParams
}

// planStep fills one step to the token budget: every decoding job's next
// token first, then a chunk of the oldest prompt still prefilling. jobs[i]
// owns spans[i]. Decode tokens always fit (the budget is at least
// MaxBatch), so a long prompt entering never holds back the running
// streams: it takes what the step has left, over as many steps as it
// needs.
func (e *Engine) planStep() (spans []model.Span, jobs []*job) {
	spans, jobs = e.spanBuf[:0], e.jobBuf[:0]
	if cap(e.tokBuf) < len(e.active) {
		e.tokBuf = make([]int32, len(e.active))
	}
	toks := e.tokBuf[:len(e.active)]
	for i, j := range e.active {
		if len(j.toPrefill) == 0 {
			toks[i] = j.next
			spans = append(spans, model.Span{Seq: j.seq, Tokens: toks[i : i+1]})
			jobs = append(jobs, j)
		}
	}
	// Then prompt chunks, oldest job first, while the budget lasts (at
	// most PromptChunks of them when set): a span's results do not depend
	// on what shares its step (model.Step), so prompts enter together.
	left := e.opt.StepTokens - len(spans)
	chunks := 0
	for _, j := range e.active {
		if e.opt.PromptChunks > 0 && chunks == e.opt.PromptChunks {
			break
		}
		if n := min(left, len(j.toPrefill)); n > 0 {
			spans = append(spans, model.Span{Seq: j.seq, Tokens: j.toPrefill[:n]})
			jobs = append(jobs, j)
			left -= n
			chunks++
		}
	}
	if int64(chunks) > e.mostChunks.Load() {
		e.mostChunks.Store(int64(chunks))
	}
	e.spanBuf, e.jobBuf = spans, jobs
	return spans, jobs
}

// step runs one model step over the planned spans, then samples the next
// token of every job that decoded or finished its prompt.
func (e *Engine) step() {
	if len(e.active) == 0 {
		return
	}
	spans, jobs := e.planStep()
	greedy := true
	for _, j := range jobs {
		greedy = greedy && j.sampler == nil
	}
	if cap(e.nextBuf) < len(spans) {
		e.nextBuf = make([]int32, len(spans))
	}
	next := e.nextBuf[:len(spans)]
	var logits []float32
	want := model.NextGreedy
	if !greedy {
		want = model.LastLogits
		if n := len(spans) * e.m.Cfg.Vocab; cap(e.logitBuf) < n {
			e.logitBuf = make([]float32, n)
		}
		logits = e.logitBuf[:len(spans)*e.m.Cfg.Vocab]
	}
	onGPU := gpuStep(jobs)
	run := func() error {
		if onGPU {
			return e.stepOnGPU(spans, jobs, next)
		}
		return e.m.Step(spans, want, logits, next)
	}
	err := run()
	if errors.Is(err, kv.ErrFull) && e.evictIdle() {
		err = run()
	}
	if errors.Is(err, kv.ErrFull) && len(e.active) > 1 {
		// Still no room for every sequence to grow: the newest job gives
		// way (fails with the reason) and the others go on.
		last := e.active[len(e.active)-1]
		e.active = e.active[:len(e.active)-1]
		e.activeCount.Store(int64(len(e.active)))
		e.finish(last, "", fmt.Errorf("engine: %w: no room to continue this request alongside the others", err))
		return
	}
	var nonFinite *ops.NonFiniteError
	if errors.As(err, &nonFinite) {
		// The step was rolled back for every sequence: the jobs without a
		// token fail, the others run it again next time (bit-identical).
		e.dropJobs(jobs, nonFinite.Rows, fmt.Errorf("engine: %w", ops.ErrNonFinite))
		return
	}
	if err != nil {
		for _, j := range e.active {
			e.finish(j, "", err)
		}
		e.active = e.active[:0]
		e.activeCount.Store(0)
		return
	}
	var ended map[*job]bool // jobs that finished this step
	end := func(j *job) {
		if ended == nil {
			ended = map[*job]bool{}
		}
		ended[j] = true
	}
	vocab := e.m.Cfg.Vocab
	for i, j := range jobs {
		j.fed = append(j.fed, spans[i].Tokens...)
		if len(j.toPrefill) > 0 {
			j.toPrefill = j.toPrefill[len(spans[i].Tokens):]
			if len(j.toPrefill) > 0 {
				continue // more of the prompt next step
			}
			e.prefilled(j)
		}
		if !greedy && !onGPU {
			row := logits[i*vocab : (i+1)*vocab]
			var err error
			if j.sampler == nil {
				next[i], err = argmax(row)
			} else {
				next[i], err = e.pick(j, row)
			}
			if err != nil {
				e.finish(j, "", err)
				end(j)
				continue
			}
		}
		if err := e.keptOnGPU(j, next[i], onGPU); err != nil {
			e.finish(j, "", err)
			end(j)
			continue
		}
		j.next = next[i]
		if !e.accept(j) {
			end(j)
		}
	}
	if len(ended) == 0 {
		return
	}
	kept := e.active[:0]
	for _, j := range e.active {
		if !ended[j] {
			kept = append(kept, j)
		}
	}
	e.active = kept
	e.activeCount.Store(int64(len(e.active)))
}

// awaitsPrefix reports whether a prompt should wait to be admitted because
// a job still prefilling will soon hold a longer shared prefix of it (a
// common system prompt) than its cache holds now: once that prefix is in
// the cache, the prompt forks its blocks instead of computing them again.
// Prefixes shorter than a KV block are not worth the wait, unless they are
// the whole prompt (several choices of one request).
func (e *Engine) awaitsPrefix(ids []int32) bool {
	bs := e.m.KV.Config().BlockSize
	for _, a := range e.active {
		if len(a.toPrefill) == 0 {
			continue
		}
		n := 0
		for n < len(a.ids) && n < len(ids) && a.ids[n] == ids[n] {
			n++
		}
		if (n >= bs || n >= len(ids)-1) && n > len(a.fed) {
			return true
		}
	}
	return false
}

// dropJobs fails the jobs of the step's spans rows with err.
func (e *Engine) dropJobs(jobs []*job, rows []int, err error) {
	drop := make(map[*job]bool, len(rows))
	for _, r := range rows {
		drop[jobs[r]] = true
	}
	kept := e.active[:0]
	for _, j := range e.active {
		if drop[j] {
			e.finish(j, "", err)
			continue
		}
		kept = append(kept, j)
	}
	e.active = kept
	e.activeCount.Store(int64(len(e.active)))
}
