package engine

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/runtime/grammar"
	"github.com/wgllm/wgllm/runtime/model"
	"github.com/wgllm/wgllm/runtime/sample"
	"github.com/wgllm/wgllm/runtime/tokenizer"
)

// Options configure an Engine.
type Options struct {
	MaxBatch         int // sequences decoding together (at most the model's KV slots); 0: all slots
	QueueLimit       int // waiting jobs beyond which Submit answers ErrBusy; 0: 64
	DefaultMaxTokens int // when a job gives none; 0: the rest of the context
	KeepFinished     int // finished jobs kept for Status; 0: 1024
	// KeepFinishedBytes bounds the text those jobs keep, in bytes, oldest
	// dropped first (their prompts are not kept); 0: 32 MiB.
	KeepFinishedBytes int
	// StepTokens is the token budget of one model step: every running
	// job's next token first, then a chunk of a prompt being prefilled
	// (schedule.go). 0: 512; at least MaxBatch, at most the model's batch.
	StepTokens int
	// PromptChunks bounds the prompt chunks (of different jobs) one step
	// carries, after the decode tokens; 0: the model's advice
	// (model.PromptChunksPerStep), no bound on GPUs.
	PromptChunks int
	// GPUSampling draws the tokens of jobs whose settings the GPU sampler
	// takes on the GPU (gpusample.go); runtime/sample stays the reference
	// path and samples everything else.
	GPUSampling bool
	Name        string
	// RenderChat renders a chat with the model's template.
	RenderChat func(Chat) (RenderedChat, error)
	// ChatStop ends chat jobs at these strings as well (the end-of-turn
	// marker of a fallback template the model has no token for).
	ChatStop []string
	Log      zerolog.Logger
}

// Engine schedules jobs on one model: a bounded queue, continuous batching
// (sequences join and leave between decode steps and share each step's
// matrix multiplications), cancellation that frees a sequence's cache at
// once, stop strings, and reuse of a cached prompt prefix.
type Engine struct {
	m   *model.Model
	tok *tokenizer.Tokenizer
	opt Options

	mu          sync.Mutex
	queue       []*job
	embeds      []*embedWork // embedding requests, run between steps
	jobs        map[string]*job
	finished    []string // ids in finishing order, for pruning
	keptText    int      // bytes of text the finished jobs hold
	active      []*job   // owned by the loop goroutine
	slots       []slot   // per KV sequence slot; owned by the loop goroutine
	stepBuffers          // a step's reused slices; owned by the loop goroutine
	closed      bool
	abortErr    error // set by Abort: why the jobs still pending fail
	wake        chan struct{}
	done        chan struct{}
	nextID      atomic.Uint64

	vocabOnce sync.Once // builds vocab on the first job with a grammar
	vocab     *grammar.Vocab
	vocabErr  error

	tokensGenerated, promptTokens, requestsFinished atomic.Uint64
	activeCount                                     atomic.Int64
	mostChunks                                      atomic.Int64 // the most prompt chunks one step carried
	kvUsed                                          atomic.Int64 // KV blocks held by running jobs
}

// slot remembers which tokens a KV sequence slot holds, for prefix reuse.
type slot struct {
	busy     bool
	tokens   []int32
	lastUsed time.Time
}

type job struct {
	Job
	emit    func(Event)
	created time.Time

	// Guarded by Engine.mu (read by Status).
	state   State
	text    strings.Builder
	usage   Usage
	timings Timings
	reason  string
	errText string

	cancel atomic.Bool

	// Loop goroutine only.
	seq       int
	ids       []int32          // prompt
	fed       []int32          // tokens whose KV is in the cache
	toPrefill []int32          // prompt tokens not yet in the cache (a suffix of ids)
	next      int32            // token to feed at the next step
	sampler   *sample.Sampler  // nil: greedy on the GPU's argmax
	draw      gpuDraw          // GPU sampling state (gpusample.go)
	matcher   *grammar.Matcher // with Job.Grammar
	allowed   []bool           // the matcher's mask, per step
	logprobs  []TokenLogprob   // generated since the last event
	tops      []sample.TokenLogprob
	dec       *tokenizer.Decoder
	pending   string // decoded text held back: it may start a stop string
	maxTokens int
	started   time.Time
	firstTok  time.Time
	decodeT0  time.Time
}

// NewEngine starts the scheduling goroutine.
func NewEngine(m *model.Model, tok *tokenizer.Tokenizer, opt Options) (*Engine, error) {
	if tok.VocabSize() > m.Cfg.Vocab {
		return nil, fmt.Errorf("engine: tokenizer has %d tokens, the model's output only %d", tok.VocabSize(), m.Cfg.Vocab)
	}
	seqs := m.KV.Config().Seqs
	if opt.MaxBatch <= 0 || opt.MaxBatch > seqs {
		opt.MaxBatch = seqs
	}
	opt.MaxBatch = min(opt.MaxBatch, m.Batch())
	if opt.StepTokens <= 0 {
		opt.StepTokens = defaultStepTokens
	}
	opt.StepTokens = min(max(opt.StepTokens, opt.MaxBatch), m.Batch())
	if opt.PromptChunks <= 0 {
		opt.PromptChunks = m.PromptChunksPerStep()
	}
	if opt.QueueLimit <= 0 {
		opt.QueueLimit = 64
	}
	if opt.KeepFinished <= 0 {
		opt.KeepFinished = 1024
	}
	if opt.KeepFinishedBytes <= 0 {
		opt.KeepFinishedBytes = 32 << 20
	}
	e := &Engine{m: m, tok: tok, opt: opt, jobs: map[string]*job{}, slots: make([]slot, seqs),
		wake: make(chan struct{}, 1), done: make(chan struct{})}
	// The engine owns every sequence slot for its life, so a finished job's
	// cached tokens stay valid for the next job that shares their prefix.
	for i := 0; i < seqs; i++ {
		if _, err := m.KV.Acquire(); err != nil {
			return nil, fmt.Errorf("engine: the model's KV cache must be unused: %w", err)
		}
	}
	go e.loop()
	return e, nil
}

// ModelName is the model's name for clients.
func (e *Engine) ModelName() string { return e.opt.Name }

// RenderChat renders a chat with the model's chat template.
func (e *Engine) RenderChat(c Chat) (RenderedChat, error) {
	if e.opt.RenderChat == nil {
		return RenderedChat{}, fmt.Errorf("%w: the model has no chat template", ErrBadJob)
	}
	return e.opt.RenderChat(c)
}

// Submit queues a job; emit gets its events. It fails at once with ErrBusy
// when the queue is full.
func (e *Engine) Submit(j Job, emit func(Event)) (string, error) {
	if j.MaxTokens < 0 {
		return "", fmt.Errorf("%w: max_tokens %d", ErrBadJob, j.MaxTokens)
	}
	if err := j.Sampling.Validate(); err != nil && j.Sampling.Temperature != 0 {
		return "", fmt.Errorf("%w: %v", ErrBadJob, err)
	}
	if j.TopLogprobs < 0 || j.TopLogprobs > sample.MaxTopLogprobs {
		return "", fmt.Errorf("%w: top_logprobs %d must be in [0, %d]", ErrBadJob, j.TopLogprobs, sample.MaxTopLogprobs)
	}
	for id, b := range j.LogitBias {
		if id < 0 || int(id) >= e.m.Cfg.Vocab {
			return "", fmt.Errorf("%w: logit_bias: token %d is outside the vocabulary [0, %d)", ErrBadJob, id, e.m.Cfg.Vocab)
		}
		if math.IsNaN(float64(b)) || b < -sample.MaxLogitBias || b > sample.MaxLogitBias {
			return "", fmt.Errorf("%w: logit_bias: %v for token %d must be in [-%d, %d]", ErrBadJob, b, id, sample.MaxLogitBias, sample.MaxLogitBias)
		}
	}
	addBOS := e.tok.AddBOS()
	if j.AddBOS != nil {
		addBOS = *j.AddBOS
	}
	ids := e.tok.Encode(j.Prompt, addBOS)
	// Chat templates that print the BOS text themselves would otherwise
	// give two BOS tokens (llama.cpp drops one too).
	if len(ids) >= 2 && ids[0] == e.tok.BOS() && ids[1] == e.tok.BOS() {
		ids = ids[1:]
	}
	if len(ids) == 0 {
		return "", fmt.Errorf("%w: empty prompt", ErrBadJob)
	}
	capacity := e.m.KV.Config().MaxSeqLen
	if len(ids) >= capacity {
		return "", fmt.Errorf("%w: %w: %d tokens, the context holds %d", ErrBadJob, ErrPromptTooLong, len(ids), capacity)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return "", ErrClosed
	}
	if len(e.queue) >= e.opt.QueueLimit {
		return "", ErrBusy
	}
	if j.ID == "" {
		j.ID = "req-" + strconv.FormatUint(e.nextID.Add(1), 10)
	}
	if _, dup := e.jobs[j.ID]; dup {
		return "", fmt.Errorf("%w: id %q is already in use", ErrBadJob, j.ID)
	}
	if j.Chat && len(e.opt.ChatStop) > 0 {
		j.Stop = append(append([]string(nil), j.Stop...), e.opt.ChatStop...)
	}
	jb := &job{Job: j, emit: emit, created: time.Now(), state: Queued, ids: ids}
	jb.usage.PromptTokens = len(ids)
	e.jobs[j.ID] = jb
	e.queue = append(e.queue, jb)
	e.signal()
	return j.ID, nil
}

// Cancel stops a queued or running job; its cache is freed before the next
// step. It reports whether the job was found unfinished.
func (e *Engine) Cancel(id string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	j, ok := e.jobs[id]
	if !ok || (j.state != Queued && j.state != Running) {
		return false
	}
	j.cancel.Store(true)
	e.signal()
	return true
}

// Status reports a job's state and text so far.
func (e *Engine) Status(id string) (Status, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	j, ok := e.jobs[id]
	if !ok {
		return Status{}, false
	}
	return Status{ID: j.ID, State: j.state, Text: j.text.String(), FinishReason: j.reason, Error: j.errText,
		Usage: j.usage, Timings: j.timings, Created: j.created}, true
}

// Metrics is a snapshot of the engine's counters.
func (e *Engine) Metrics() Metrics {
	e.mu.Lock()
	q := len(e.queue)
	e.mu.Unlock()
	return Metrics{QueueDepth: q, QueueLimit: e.opt.QueueLimit, ActiveSequences: int(e.activeCount.Load()),
		KVBlocksUsed: int(e.kvUsed.Load()), KVBlocksTotal: e.m.KV.BlocksTotal(),
		TokensGenerated: e.tokensGenerated.Load(), PromptTokens: e.promptTokens.Load(), RequestsFinished: e.requestsFinished.Load()}
}

// Close cancels every job and stops the loop.
func (e *Engine) Close() { e.Abort(nil) }

// Abort stops the loop like Close, but with err not nil the jobs still
// queued or running fail with err instead of being cancelled: after a GPU
// device loss their clients must see an error, not a clean end.
func (e *Engine) Abort(err error) {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		<-e.done
		return
	}
	e.closed = true
	e.abortErr = err
	// Cancelling makes the loop stop mid-prefill; an aborted job must not
	// end "cancelled", so its current step ends and drain fails it.
	if err == nil {
		for _, j := range e.jobs {
			j.cancel.Store(true)
		}
	}
	e.signal()
	e.mu.Unlock()
	<-e.done
}

func (e *Engine) signal() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// loop owns the model: it admits queued jobs, prefills them, and advances
// every running job by one token per step until it finishes.
func (e *Engine) loop() {
	defer close(e.done)
	for {
		e.mu.Lock()
		closed := e.closed
		idle := len(e.queue) == 0 && len(e.active) == 0 && len(e.embeds) == 0
		e.mu.Unlock()
		if closed {
			e.drain()
			// The slots go back to the cache: the model may serve again
			// (a one-slot engine per Generator call).
			for s := range e.slots {
				e.m.KV.Release(s)
			}
			e.kvUsed.Store(0)
			e.activeCount.Store(0)
			return
		}
		if idle {
			e.kvUsed.Store(0)
			e.activeCount.Store(0)
			<-e.wake
			continue
		}
		e.reap()
		e.admit()
		e.embedStep()
		e.step()
		used := 0
		for _, j := range e.active {
			used += len(e.m.KV.Blocks(j.seq))
		}
		e.kvUsed.Store(int64(used))
	}
}

// drain ends every job at shutdown: cancelled, or failed with Abort's
// error.
func (e *Engine) drain() {
	e.mu.Lock()
	q := e.queue
	e.queue = nil
	err := e.abortErr
	e.mu.Unlock()
	reason := "cancelled"
	if err != nil {
		reason = ""
	}
	if err == nil {
		e.failEmbeds(ErrClosed)
	} else {
		e.failEmbeds(err)
	}
	for _, j := range e.active {
		e.finish(j, reason, err)
	}
	e.active = nil
	for _, j := range q {
		j.seq = -1
		e.finish(j, reason, err)
	}
}

// reap finishes cancelled jobs, queued or running.
func (e *Engine) reap() {
	kept := e.active[:0]
	for _, j := range e.active {
		if j.cancel.Load() {
			e.finish(j, "cancelled", nil)
		} else {
			kept = append(kept, j)
		}
	}
	e.active = kept
	e.activeCount.Store(int64(len(e.active)))
	e.mu.Lock()
	var cancelled []*job
	q := e.queue[:0]
	for _, j := range e.queue {
		if j.cancel.Load() {
			cancelled = append(cancelled, j)
		} else {
			q = append(q, j)
		}
	}
	e.queue = q
	e.mu.Unlock()
	for _, j := range cancelled {
		j.seq = -1
		e.finish(j, "cancelled", nil)
	}
}

// admit moves queued jobs into free sequence slots; their prompts are
// prefilled in chunks by the steps that follow.
func (e *Engine) admit() {
	for len(e.active) < e.opt.MaxBatch {
		e.mu.Lock()
		if len(e.queue) == 0 {
			e.mu.Unlock()
			return
		}
		j := e.queue[0]
		if len(e.active) > 0 && !e.fits(len(j.ids)+1) {
			e.mu.Unlock()
			return // wait for running jobs to free blocks
		}
		if e.awaitsPrefix(j.ids) {
			e.mu.Unlock()
			return // share a prompt prefix once it is in the cache
		}
		e.queue = e.queue[1:]
		j.state = Running
		e.mu.Unlock()
		if err := e.start(j); err != nil {
			e.finish(j, "", err)
			continue
		}
		e.active = append(e.active, j)
		e.activeCount.Store(int64(len(e.active)))
	}
}

// pickSlot chooses the free slot sharing the longest prefix with ids, else
// the least recently used; it returns the slot and the reusable length.
func (e *Engine) pickSlot(ids []int32) (int, int) {
	best, bestLen := -1, -1
	for s := range e.slots {
		sl := &e.slots[s]
		if sl.busy {
			continue
		}
		n := 0
		for n < len(sl.tokens) && n < len(ids) && sl.tokens[n] == ids[n] {
			n++
		}
		if n > bestLen || (n == bestLen && sl.lastUsed.Before(e.slots[best].lastUsed)) {
			best, bestLen = s, n
		}
	}
	return best, bestLen
}

// longestPrefix finds the slot other than skip, running or idle, whose
// cached tokens share the longest prefix with ids.
func (e *Engine) longestPrefix(ids []int32, skip int) (int, int) {
	best, bestLen := -1, 0
	held := func(s int) []int32 {
		for _, a := range e.active {
			if a.seq == s {
				return a.fed
			}
		}
		return e.slots[s].tokens
	}
	for s := range e.slots {
		if s == skip {
			continue
		}
		toks := held(s)
		n := 0
		for n < len(toks) && n < len(ids) && toks[n] == ids[n] {
			n++
		}
		if n > bestLen {
			best, bestLen = s, n
		}
	}
	return best, bestLen
}

// start claims a slot for j, reusing a cached prefix of its prompt, and
// leaves the rest of the prompt to prefill.
func (e *Engine) start(j *job) error {
	j.started = time.Now()
	s, reuse := e.pickSlot(j.ids)
	if s < 0 {
		return fmt.Errorf("engine: no free sequence slot")
	}
	cache := e.m.KV
	// A running job (or another idle slot) may hold a longer prefix, e.g.
	// the same system prompt: share its blocks instead of recomputing them.
	if src, n := e.longestPrefix(j.ids, s); n > reuse {
		cache.Release(s)
		got, err := cache.Fork(src)
		if err != nil || got != s {
			return fmt.Errorf("engine: sharing the prefix of slot %d: got slot %d: %v", src, got, err)
		}
		e.slots[s].tokens = append(e.slots[s].tokens[:0], j.ids[:n]...)
		reuse = n
	}
	reuse = min(reuse, len(j.ids)-1) // at least one token must run to get logits
	sl := &e.slots[s]
	sl.busy = true
	j.seq = s
	if err := cache.Truncate(s, reuse); err != nil {
		return err
	}
	sl.tokens = sl.tokens[:reuse]
	j.fed = append(j.fed[:0], j.ids[:reuse]...)
	j.usage.CachedTokens = reuse
	if err := e.setupSampling(j); err != nil {
		return err
	}
	if err := e.startGPUDraw(j); err != nil {
		return err
	}
	j.maxTokens = j.MaxTokens
	if j.maxTokens <= 0 {
		j.maxTokens = e.opt.DefaultMaxTokens
	}
	if room := cache.Config().MaxSeqLen - len(j.ids); j.maxTokens <= 0 || j.maxTokens > room {
		j.maxTokens = room
	}
	j.dec = e.tok.NewDecoder()
	j.toPrefill = j.ids[reuse:]
	return nil
}

// prefilled records the end of j's prompt: its first token is j.next.
func (e *Engine) prefilled(j *job) {
	j.firstTok = time.Now()
	j.decodeT0 = j.firstTok
	e.promptTokens.Add(uint64(len(j.ids)))
	e.mu.Lock()
	j.timings.QueuedMS = ms(j.started.Sub(j.created))
	j.timings.PrefillMS = ms(j.firstTok.Sub(j.started))
	j.timings.TimeToFirstMS = ms(j.firstTok.Sub(j.created))
	if d := j.firstTok.Sub(j.started).Seconds(); d > 0 {
		j.timings.PromptPerSecond = float64(len(j.ids)-j.usage.CachedTokens) / d
	}
	e.mu.Unlock()
}

// accept handles j.next, the token just produced: it ends the job at an
// end-of-generation token, a stop string or the length limit, else streams
// its text. It reports whether the job goes on.
func (e *Engine) accept(j *job) bool {
	tok := j.next
	if e.tok.IsEOG(tok) {
		e.finish(j, "stop", nil)
		return false
	}
	e.tokensGenerated.Add(1)
	e.mu.Lock()
	j.usage.CompletionTokens++
	n := j.usage.CompletionTokens
	e.mu.Unlock()
	text := j.pending + j.dec.Push(tok)
	if cut, hit := cutStop(text, j.Stop); hit {
		e.send(j, cut)
		j.pending = ""
		e.finish(j, "stop", nil)
		return false
	} else {
		// Hold back a tail that could still become a stop string.
		keep := holdBack(text, j.Stop)
		e.send(j, text[:len(text)-keep])
		j.pending = text[len(text)-keep:]
	}
	if j.matcher != nil && j.matcher.Done() {
		e.finish(j, "stop", nil) // the grammar takes nothing more
		return false
	}
	if n >= j.maxTokens {
		e.finish(j, "length", nil)
		return false
	}
	return true
}

// setupSampling gives a job that needs the logits (sampling, a grammar, a
// logit bias, logprobs) its sampler, and its grammar matcher.
func (e *Engine) setupSampling(j *job) error {
	greedy := j.Sampling.Temperature == 0
	if greedy && j.Grammar == nil && len(j.LogitBias) == 0 && !j.Logprobs {
		return nil // the GPU's argmax
	}
	p := j.Sampling
	if greedy {
		p = sample.Greedy()
	}
	var err error
	if j.sampler, err = sample.New(p, e.m.Cfg.Vocab); err != nil {
		return err
	}
	if err := j.sampler.SetLogitBias(j.LogitBias); err != nil {
		return err
	}
	if err := j.sampler.Accept(j.ids...); err != nil {
		return err
	}
	if j.Grammar != nil {
		e.vocabOnce.Do(func() {
			pieces := make([]string, e.tok.VocabSize())
			for id := range pieces {
				pieces[id] = e.tok.Piece(int32(id))
			}
			e.vocab, e.vocabErr = grammar.NewVocab(pieces, e.tok.EOGTokens())
		})
		if e.vocabErr != nil {
			return e.vocabErr
		}
		j.matcher = grammar.NewMatcher(j.Grammar, e.vocab)
		j.allowed = make([]bool, e.m.Cfg.Vocab)
	}
	return nil
}

// pick chooses a job's next token from its logits row: the grammar's mask,
// the bias and the sampler; it records the token's logprobs if asked.
func (e *Engine) pick(j *job, row []float32) (int32, error) {
	var allowed []bool
	if j.matcher != nil {
		j.matcher.SetRemaining(j.maxTokens - j.usage.CompletionTokens)
		j.matcher.Mask(j.allowed)
		allowed = j.allowed
	}
	id, err := j.sampler.SampleMasked(row, allowed)
	if err != nil {
		if allowed != nil {
			return 0, fmt.Errorf("engine: no token the grammar allows can come next: %w", err)
		}
		return 0, err
	}
	if j.matcher != nil {
		if err := j.matcher.Accept(id); err != nil {
			return 0, err
		}
	}
	if j.Logprobs && !e.tok.IsEOG(id) {
		lp, tops, err := sample.LogProbs(row, id, j.TopLogprobs, j.tops[:0])
		if err != nil {
			return 0, err
		}
		j.tops = tops
		t := TokenLogprob{Token: e.token(id), Logprob: lp, Top: make([]TopLogprob, len(tops))}
		for i, c := range tops {
			t.Top[i] = TopLogprob{Token: e.token(c.ID), Logprob: c.Logprob}
		}
		j.logprobs = append(j.logprobs, t)
	}
	return id, nil
}

func (e *Engine) token(id int32) Token { return Token{ID: id, Bytes: []byte(e.tok.Piece(id))} }

// fits reports whether a sequence of n tokens finds free KV blocks (after
// dropping idle cached prompts if need be).
func (e *Engine) fits(n int) bool {
	bs := e.m.KV.Config().BlockSize
	need := (n + bs - 1) / bs
	if e.m.KV.BlocksFree() >= need {
		return true
	}
	e.evictIdle()
	return e.m.KV.BlocksFree() >= need
}

// evictIdle drops the cached prompts of idle slots to free KV blocks for
// running work; it reports whether anything was freed.
func (e *Engine) evictIdle() bool {
	freed := false
	for s := range e.slots {
		sl := &e.slots[s]
		if !sl.busy && len(sl.tokens) > 0 {
			_ = e.m.KV.Truncate(s, 0)
			sl.tokens = sl.tokens[:0]
			freed = true
		}
	}
	return freed
}

// argmax is the greedy token of a logits row on the CPU, with the GPU
// argmax's rule: a NaN or +Inf, or only -Inf, is an error.
func argmax(row []float32) (int32, error) {
	best := 0
	for i, v := range row {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 1) {
			return 0, fmt.Errorf("engine: %w (logit of token %d is %v)", ops.ErrNonFinite, i, v)
		}
		if v > row[best] {
			best = i
		}
	}
	if math.IsInf(float64(row[best]), -1) {
		return 0, fmt.Errorf("engine: %w", ops.ErrNonFinite)
	}
	return int32(best), nil
}

func (e *Engine) send(j *job, text string) {
	if text == "" {
		return
	}
	e.mu.Lock()
	j.text.WriteString(text)
	e.mu.Unlock()
	if j.emit != nil {
		j.emit(Event{JobID: j.ID, Text: text, Logprobs: j.takeLogprobs()})
	}
}

// finish ends a job: frees its slot (keeping the cached tokens for prefix
// reuse), records its outcome and emits the final event.
func (e *Engine) finish(j *job, reason string, err error) {
	if j.seq >= 0 && j.seq < len(e.slots) && e.slots[j.seq].busy {
		sl := &e.slots[j.seq]
		sl.busy = false
		sl.lastUsed = time.Now()
		// The cache holds the KV of the tokens fed; a finished job keeps
		// them for a follow-up that shares the prefix. A cancelled job's
		// blocks are freed at once, and so are a failed job's (its cache
		// may be inconsistent).
		if err == nil && reason != "cancelled" && e.m.KV.Len(j.seq) == len(j.fed) {
			sl.tokens = append(sl.tokens[:0], j.fed...)
		} else {
			sl.tokens = sl.tokens[:0]
			_ = e.m.KV.Truncate(j.seq, 0)
		}
	}
	if reason != "cancelled" && err == nil && j.pending != "" {
		e.send(j, j.pending)
	}
	if reason != "cancelled" && err == nil && j.dec != nil {
		e.send(j, j.dec.Flush())
	}
	now := time.Now()
	e.mu.Lock()
	switch {
	case err != nil:
		j.state, j.errText = Failed, err.Error()
	case reason == "cancelled":
		j.state = Cancelled
	default:
		j.state = Done
	}
	j.reason = reason
	if !j.decodeT0.IsZero() {
		d := now.Sub(j.decodeT0)
		j.timings.DecodeMS = ms(d)
		if n := j.usage.CompletionTokens - 1; n > 0 && d > 0 {
			j.timings.TokensPerSecond = float64(n) / d.Seconds()
		}
	}
	ev := Event{JobID: j.ID, Done: true, FinishReason: reason, Usage: j.usage, Timings: j.timings, Err: err,
		Logprobs: j.takeLogprobs()}
	// A finished job is kept only for Status: drop what decoding needed
	// (the sampler holds vocabulary-sized buffers; a thousand kept jobs
	// held about 160 MB of them).
	// Status shows no prompt: a thousand 256 KiB prompts were 256 MB.
	j.sampler, j.dec, j.ids, j.fed = nil, nil, nil, nil
	j.Prompt, j.Stop = "", nil
	j.matcher, j.allowed, j.tops = nil, nil, nil
	e.finished = append(e.finished, j.ID)
	e.keptText += j.text.Len()
	for len(e.finished) > e.opt.KeepFinished || (e.keptText > e.opt.KeepFinishedBytes && len(e.finished) > 0) {
		if old := e.jobs[e.finished[0]]; old != nil {
			e.keptText -= old.text.Len()
		}
		delete(e.jobs, e.finished[0])
		e.finished = e.finished[1:]
	}
	e.mu.Unlock()
	e.requestsFinished.Add(1)
	if err != nil {
		e.opt.Log.Warn().Str("request_id", j.ID).Err(err).Msg("request failed")
	}
	if j.emit != nil {
		j.emit(ev)
	}
}

func ms(d time.Duration) float64 { return math.Round(float64(d.Microseconds())) / 1000 }

// cutStop returns text up to the first stop string, if one occurs.
func cutStop(text string, stops []string) (string, bool) {
	cut := -1
	for _, s := range stops {
		if s == "" {
			continue
		}
		if i := strings.Index(text, s); i >= 0 && (cut < 0 || i < cut) {
			cut = i
		}
	}
	if cut < 0 {
		return text, false
	}
	return text[:cut], true
}

// holdBack is how many trailing bytes of text could begin a stop string.
func holdBack(text string, stops []string) int {
	keep := 0
	for _, s := range stops {
		for n := min(len(s)-1, len(text)); n > keep; n-- {
			if strings.HasSuffix(text, s[:n]) {
				keep = n
				break
			}
		}
	}
	return keep
}

// takeLogprobs hands over the logprobs gathered since the last event.
func (j *job) takeLogprobs() []TokenLogprob {
	lps := j.logprobs
	j.logprobs = nil
	return lps
}
