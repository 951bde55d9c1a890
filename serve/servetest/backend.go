// Package servetest has a fake engine for testing the server, and pages
// served by it, without a GPU or a model.
package servetest

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/wgllm/wgllm/runtime/chat"
	"github.com/wgllm/wgllm/runtime/engine"
)

// Options shape the fake engine. Zero fields take the defaults noted.
type Options struct {
	Model string // "fake-model"
	// QueueLimit is how many jobs may wait for a slot; Submit answers
	// engine.ErrBusy beyond it. Default 8.
	QueueLimit int
	// MaxActive is how many sequences are generated together. Default 4.
	MaxActive int
	// StepDelay is the time one decode step takes (one piece for every
	// active sequence). Default 2ms.
	StepDelay time.Duration
	// Piece returns the i-th piece (from 0) of job's text. Default
	// " w<i>".
	Piece func(job engine.Job, i int) string
	// EOSAfter, when > 0, ends every job with finish reason "stop" after
	// that many pieces, as an end-of-generation token would.
	EOSAfter int
	// DefaultMaxTokens is used for a job with MaxTokens 0. Default 64.
	DefaultMaxTokens int
	// FailOn makes a job whose prompt contains it fail after its first
	// piece (Done with Err).
	FailOn string
	// ChatFormat is what RenderChat reports of the model's output (none by
	// default); with chat.Hermes, Piece can write calls as a Qwen would.
	ChatFormat chat.Format
	// Render, when set, renders chats in place of the built-in format
	// (engine.TemplateRenderer of a real template, say); ChatFormat is
	// then unused.
	Render func(engine.Chat) (engine.RenderedChat, error)
	// ContextLength, when > 0, refuses a prompt of that many tokens or
	// more (a token a word, plus one) as the engine does.
	ContextLength int
	// KVBlocksTotal is reported in Metrics; each sequence uses one block
	// per 16 tokens. Default 256.
	KVBlocksTotal int
}

// Backend is a fake engine with the real one's serving behaviour: a
// bounded queue, a single goroutine that advances up to MaxActive
// sequences in lock step and calls every job's emit from that goroutine
// (so an emit that blocks stalls everyone, as it would for real), stop
// strings, cancellation of queued and running jobs, status records and
// metrics. Text that may be the start of a stop string is held back until
// it is known not to be. It is safe for concurrent use.
type Backend struct {
	opts Options

	mu       sync.Mutex
	queue    []*job
	active   []*job
	byID     map[string]*job
	jobs     []engine.Job // every job submitted, in order
	paused   bool
	closed   bool
	counters engine.Metrics
	nextID   int

	wake chan struct{}
	quit chan struct{}
	done chan struct{}
}

type job struct {
	spec      engine.Job
	emit      func(engine.Event)
	status    engine.Status
	pieces    int
	emitted   int // bytes of status.Text emitted so far
	cancel    bool
	submitted time.Time
	started   time.Time
	firstAt   time.Time
	prompt    int                   // prompt tokens
	logprobs  []engine.TokenLogprob // with spec.Logprobs: not yet emitted
}

// New starts a fake engine; Close stops it.
func New(opts Options) *Backend {
	if opts.Model == "" {
		opts.Model = "fake-model"
	}
	if opts.QueueLimit == 0 {
		opts.QueueLimit = 8
	}
	if opts.MaxActive == 0 {
		opts.MaxActive = 4
	}
	if opts.StepDelay == 0 {
		opts.StepDelay = 2 * time.Millisecond
	}
	if opts.Piece == nil {
		opts.Piece = func(_ engine.Job, i int) string { return fmt.Sprintf(" w%d", i) }
	}
	if opts.DefaultMaxTokens == 0 {
		opts.DefaultMaxTokens = 64
	}
	if opts.KVBlocksTotal == 0 {
		opts.KVBlocksTotal = 256
	}
	b := &Backend{opts: opts, byID: map[string]*job{},
		wake: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
	b.counters.QueueLimit = opts.QueueLimit
	b.counters.KVBlocksTotal = opts.KVBlocksTotal
	go b.run()
	return b
}

// Submit queues j; emit is called from the engine goroutine.
func (b *Backend) Submit(j engine.Job, emit func(engine.Event)) (string, error) {
	if emit == nil {
		return "", fmt.Errorf("%w: nil emit", engine.ErrBadJob)
	}
	if err := j.Sampling.Validate(); err != nil {
		return "", fmt.Errorf("%w: %v", engine.ErrBadJob, err)
	}
	if j.MaxTokens < 0 {
		return "", fmt.Errorf("%w: max tokens %d", engine.ErrBadJob, j.MaxTokens)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.closed:
		return "", engine.ErrClosed
	case len(b.queue) >= b.opts.QueueLimit:
		return "", engine.ErrBusy
	}
	if j.ID == "" {
		b.nextID++
		j.ID = fmt.Sprintf("fake-%d", b.nextID)
	}
	if _, dup := b.byID[j.ID]; dup {
		return "", fmt.Errorf("%w: duplicate id %q", engine.ErrBadJob, j.ID)
	}
	if j.MaxTokens == 0 {
		j.MaxTokens = b.opts.DefaultMaxTokens
	}
	tokens := len(strings.Fields(j.Prompt)) + 1
	if b.opts.ContextLength > 0 && tokens >= b.opts.ContextLength {
		return "", fmt.Errorf("%w: %w: %d tokens, the context holds %d", engine.ErrBadJob, engine.ErrPromptTooLong, tokens, b.opts.ContextLength)
	}
	now := time.Now()
	q := &job{spec: j, emit: emit, submitted: now, prompt: tokens,
		status: engine.Status{ID: j.ID, State: engine.Queued, Created: now}}
	q.status.Usage.PromptTokens = q.prompt
	b.byID[j.ID] = q
	b.jobs = append(b.jobs, j)
	b.queue = append(b.queue, q)
	b.signal()
	return j.ID, nil
}

// Cancel stops a queued or running job; its Done event (finish reason
// "cancelled") follows from the engine goroutine.
func (b *Backend) Cancel(id string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	j, ok := b.byID[id]
	if !ok || j.cancel || (j.status.State != engine.Queued && j.status.State != engine.Running) {
		return false
	}
	j.cancel = true
	b.signal()
	return true
}

// Status returns a job's record (kept for the Backend's lifetime).
func (b *Backend) Status(id string) (engine.Status, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	j, ok := b.byID[id]
	if !ok {
		return engine.Status{}, false
	}
	return j.status, true
}

// RenderChat renders "<|role|>\ncontent\n" per message (an assistant's
// tool calls as Hermes <tool_call> blocks, a tool's answer with its call
// id), the tools as "<|tools|>\n" and one JSON line each, and an open
// assistant turn. Its format is Options.ChatFormat. Options.Render
// replaces all of this.
func (b *Backend) RenderChat(c engine.Chat) (engine.RenderedChat, error) {
	if b.opts.Render != nil {
		return b.opts.Render(c)
	}
	var sb strings.Builder
	if len(c.Tools) > 0 {
		sb.WriteString("<|tools|>\n")
		for _, t := range c.Tools {
			fmt.Fprintf(&sb, "%s\n", t)
		}
	}
	for _, m := range c.Messages {
		switch m.Role {
		case "system", "user", "assistant":
		case "tool":
			fmt.Fprintf(&sb, "<|tool|> %s\n%s\n", m.ToolCallID, m.Content)
			continue
		default:
			return engine.RenderedChat{}, fmt.Errorf("%w: role %q", engine.ErrBadJob, m.Role)
		}
		fmt.Fprintf(&sb, "<|%s|>\n%s\n", m.Role, m.Content)
		for _, tc := range m.ToolCalls {
			fmt.Fprintf(&sb, "<tool_call>{\"name\": %q, \"arguments\": %s}</tool_call>\n", tc.Name, tc.Arguments)
		}
	}
	if c.Thinking != nil {
		fmt.Fprintf(&sb, "<|thinking|> %v\n", *c.Thinking)
	}
	sb.WriteString("<|assistant|>\n")
	return engine.RenderedChat{Prompt: sb.String(), Format: b.opts.ChatFormat}, nil
}

// Tokenize is the fake's tokenizer: a token per byte (its value), and 256
// for BOS with addSpecial.
func (b *Backend) Tokenize(text string, addSpecial bool) ([]int32, error) {
	ids := make([]int32, 0, len(text)+1)
	if addSpecial {
		ids = append(ids, 256)
	}
	for i := 0; i < len(text); i++ {
		ids = append(ids, int32(text[i]))
	}
	return ids, nil
}

// TokenPiece is a token's byte ("" for BOS).
func (b *Backend) TokenPiece(id int32) string {
	if id >= 0 && id < 256 {
		return string([]byte{byte(id)})
	}
	return ""
}

// Detokenize decodes the fake's tokens; ids above 256 are an error.
func (b *Backend) Detokenize(ids []int32) (string, error) {
	out := make([]byte, 0, len(ids))
	for i, id := range ids {
		switch {
		case id == 256:
		case id >= 0 && id < 256:
			out = append(out, byte(id))
		default:
			return "", fmt.Errorf("%w: tokens[%d] = %d is outside the vocabulary of 257 tokens", engine.ErrBadJob, i, id)
		}
	}
	return string(out), nil
}

// ContextLength is Options.ContextLength.
func (b *Backend) ContextLength() int { return b.opts.ContextLength }

// ModelName returns Options.Model.
func (b *Backend) ModelName() string { return b.opts.Model }

// Metrics returns a snapshot.
func (b *Backend) Metrics() engine.Metrics {
	b.mu.Lock()
	defer b.mu.Unlock()
	m := b.counters
	m.QueueDepth = len(b.queue)
	m.ActiveSequences = len(b.active)
	m.KVBlocksUsed = 0
	for _, j := range b.active {
		m.KVBlocksUsed += (j.prompt+j.pieces)/16 + 1
	}
	return m
}

// Jobs returns every job submitted so far (ids and defaults filled in).
func (b *Backend) Jobs() []engine.Job {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]engine.Job(nil), b.jobs...)
}

// SetPaused stops (true) or resumes (false) the engine's steps: queued
// jobs stay queued, running ones produce nothing. Cancellations still
// complete while paused.
func (b *Backend) SetPaused(p bool) {
	b.mu.Lock()
	b.paused = p
	b.mu.Unlock()
	b.signal()
}

// Close fails the jobs still queued or running with engine.ErrClosed and
// stops the engine goroutine.
func (b *Backend) Close() {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		<-b.done
		return
	}
	b.closed = true
	b.mu.Unlock()
	close(b.quit)
	<-b.done
}

func (b *Backend) signal() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// pending is an emit to make once the lock is released.
type pending struct {
	emit func(engine.Event)
	ev   engine.Event
}

func (b *Backend) run() {
	defer close(b.done)
	for {
		b.mu.Lock()
		idle := len(b.queue) == 0 && len(b.active) == 0
		stalled := b.paused && !b.anyCancelled()
		b.mu.Unlock()
		if idle || stalled {
			select {
			case <-b.wake:
				continue
			case <-b.quit:
				b.failAll()
				return
			}
		}
		for _, p := range b.step() {
			p.emit(p.ev)
		}
		select {
		case <-b.quit:
			b.failAll()
			return
		case <-time.After(b.opts.StepDelay):
		}
	}
}

func (b *Backend) anyCancelled() bool {
	for _, j := range b.queue {
		if j.cancel {
			return true
		}
	}
	for _, j := range b.active {
		if j.cancel {
			return true
		}
	}
	return false
}

// step ends cancelled jobs, admits queued ones, and (unless paused)
// advances every active sequence by one piece. It returns the events to
// emit, in order.
func (b *Backend) step() []pending {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []pending
	now := time.Now()
	keep := b.queue[:0]
	for _, j := range b.queue {
		if j.cancel {
			out = append(out, b.finish(j, now, "cancelled", nil))
		} else {
			keep = append(keep, j)
		}
	}
	b.queue = keep
	active := b.active[:0]
	for _, j := range b.active {
		if j.cancel {
			b.emitText(j, &out, len(j.status.Text)) // what was held back
			out = append(out, b.finish(j, now, "cancelled", nil))
		} else {
			active = append(active, j)
		}
	}
	b.active = active
	if b.paused {
		return out
	}
	for len(b.active) < b.opts.MaxActive && len(b.queue) > 0 {
		j := b.queue[0]
		b.queue = b.queue[1:]
		j.started = now
		j.status.State = engine.Running
		b.counters.PromptTokens += uint64(j.prompt)
		b.active = append(b.active, j)
	}
	active = b.active[:0]
	for _, j := range b.active {
		piece := b.opts.Piece(j.spec, j.pieces)
		if j.spec.Logprobs {
			j.logprobs = append(j.logprobs, FakeLogprob(j.pieces, piece, j.spec.TopLogprobs))
		}
		j.pieces++
		b.counters.TokensGenerated++
		if j.firstAt.IsZero() {
			j.firstAt = now
		}
		reason := ""
		before := len(j.status.Text)
		j.status.Text += piece
		for _, stop := range j.spec.Stop {
			// Search where the new piece could complete a stop string.
			from := max(0, before-len(stop)+1)
			if k := strings.Index(j.status.Text[from:], stop); k >= 0 {
				j.status.Text = j.status.Text[:from+k]
				reason = "stop"
				break
			}
		}
		switch {
		case reason != "":
		case b.opts.FailOn != "" && strings.Contains(j.spec.Prompt, b.opts.FailOn):
			b.emitText(j, &out, len(j.status.Text))
			out = append(out, b.finish(j, now, "", fmt.Errorf("fake engine: failing on %q as asked", b.opts.FailOn)))
			continue
		case b.opts.EOSAfter > 0 && j.pieces >= b.opts.EOSAfter:
			reason = "stop"
		case j.pieces >= j.spec.MaxTokens:
			reason = "length"
		}
		if reason != "" {
			b.emitText(j, &out, len(j.status.Text))
			out = append(out, b.finish(j, now, reason, nil))
			continue
		}
		// Hold back a tail that may yet grow into a stop string.
		b.emitText(j, &out, len(j.status.Text)-heldBack(j.status.Text, j.spec.Stop))
		active = append(active, j)
	}
	b.active = active
	return out
}

// emitText queues the text of j not yet emitted, up to end.
func (b *Backend) emitText(j *job, out *[]pending, end int) {
	if end > j.emitted {
		*out = append(*out, pending{j.emit, engine.Event{JobID: j.spec.ID, Text: j.status.Text[j.emitted:end],
			Logprobs: j.takeLogprobs()}})
		j.emitted = end
	}
}

func (j *job) takeLogprobs() []engine.TokenLogprob {
	lps := j.logprobs
	j.logprobs = nil
	return lps
}

// FakeLogprob is the fake engine's logprob of its i-th piece: the piece as
// token i, logprob -i/8, and top alternatives best first (the piece
// itself, then "alt1", "alt2"… each 1 lower).
func FakeLogprob(i int, piece string, top int) engine.TokenLogprob {
	lp := float32(-i) / 8
	t := engine.TokenLogprob{Token: engine.Token{ID: int32(i), Bytes: []byte(piece)}, Logprob: lp}
	for k := 0; k < top; k++ {
		alt := t.Token
		if k > 0 {
			alt = engine.Token{ID: int32(100000 + k), Bytes: []byte(fmt.Sprintf("alt%d", k))}
		}
		t.Top = append(t.Top, engine.TopLogprob{Token: alt, Logprob: lp - float32(k)})
	}
	return t
}

// heldBack is the length of the longest tail of text that begins some
// stop string.
func heldBack(text string, stops []string) int {
	longest := 0
	for _, stop := range stops {
		for n := min(len(stop)-1, len(text)); n > longest; n-- {
			if strings.HasSuffix(text, stop[:n]) {
				longest = n
				break
			}
		}
	}
	return longest
}

// finish records j's end and returns its Done event. The status is
// final before the event is emitted.
func (b *Backend) finish(j *job, now time.Time, reason string, err error) pending {
	st := &j.status
	switch {
	case err != nil:
		st.State, st.Error = engine.Failed, err.Error()
	case reason == "cancelled":
		st.State = engine.Cancelled
	default:
		st.State = engine.Done
	}
	st.FinishReason = reason
	st.Usage = engine.Usage{PromptTokens: j.prompt, CompletionTokens: j.pieces}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	t := &st.Timings
	if j.started.IsZero() {
		t.QueuedMS = ms(now.Sub(j.submitted))
	} else {
		t.QueuedMS = ms(j.started.Sub(j.submitted))
	}
	if !j.firstAt.IsZero() {
		t.TimeToFirstMS = ms(j.firstAt.Sub(j.submitted))
		t.PrefillMS = ms(j.firstAt.Sub(j.started))
		t.DecodeMS = ms(now.Sub(j.firstAt))
		if t.PrefillMS > 0 {
			t.PromptPerSecond = float64(j.prompt) / (t.PrefillMS / 1000)
		}
		if t.DecodeMS > 0 {
			t.TokensPerSecond = float64(j.pieces) / (t.DecodeMS / 1000)
		}
	}
	b.counters.RequestsFinished++
	return pending{j.emit, engine.Event{JobID: j.spec.ID, Done: true, FinishReason: reason,
		Usage: st.Usage, Timings: *t, Err: err, Logprobs: j.takeLogprobs()}}
}

// failAll ends every job with ErrClosed when the engine stops.
func (b *Backend) failAll() {
	b.mu.Lock()
	now := time.Now()
	var out []pending
	for _, j := range append(b.queue, b.active...) {
		out = append(out, b.finish(j, now, "", engine.ErrClosed))
	}
	b.queue, b.active = nil, nil
	b.mu.Unlock()
	for _, p := range out {
		p.emit(p.ev)
	}
}

// FakeContext is the fake engine's context in tokens, for embeddings (a
// text has one token per word, plus one).
const FakeContext = 64

// Embed returns FakeEmbedding of each input, with the engine's errors for
// an input over FakeContext (unless req.Truncate) or an empty one.
func (b *Backend) Embed(ctx context.Context, req engine.EmbedRequest) (engine.EmbedResult, error) {
	var res engine.EmbedResult
	if len(req.Inputs) == 0 {
		return res, fmt.Errorf("%w: no input", engine.ErrBadJob)
	}
	for i, in := range req.Inputs {
		n, key := len(in.Tokens), fmt.Sprint(in.Tokens)
		if in.Tokens == nil {
			n, key = len(strings.Fields(in.Text))+1, in.Text
		}
		if n == 0 {
			return engine.EmbedResult{}, &engine.InputError{Index: i, Err: fmt.Errorf("%w: empty input", engine.ErrBadJob)}
		}
		if n > FakeContext {
			if !req.Truncate {
				return engine.EmbedResult{}, &engine.InputError{Index: i, Err: fmt.Errorf("%w: %w: %d tokens, the context holds %d",
					engine.ErrBadJob, engine.ErrPromptTooLong, n, FakeContext)}
			}
			n = FakeContext
		}
		res.Vectors = append(res.Vectors, FakeEmbedding(key, req.Normalize))
		res.PromptTokens += n
	}
	return res, ctx.Err()
}

// FakeEmbedding is the fake engine's 8-dimensional embedding of key (the
// text, or the token ids as fmt.Sprint prints them).
func FakeEmbedding(key string, normalize bool) []float32 {
	v := make([]float32, 8)
	h := uint32(2166136261)
	for d := range v {
		for i := 0; i < len(key); i++ {
			h = (h ^ uint32(key[i])) * 16777619
		}
		h = (h ^ uint32(d)) * 16777619
		v[d] = float32(h%2001)/1000 - 1
	}
	if normalize {
		n := 0.0
		for _, x := range v {
			n += float64(x) * float64(x)
		}
		for d := range v {
			v[d] = float32(float64(v[d]) / math.Sqrt(n))
		}
	}
	return v
}
