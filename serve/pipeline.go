package serve

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"github.com/wgllm/wgllm/runtime/chat"
	"github.com/wgllm/wgllm/runtime/engine"
)

// The one path every protocol's generation takes: the model's backend
// (start), the job (buildJob), its submission and events (submit, an
// eventQueue), then the answer, streamed (streamHTTP, or the websocket's
// onEvent) or whole (awaitDone), in the protocol's shapes, which a framer
// makes.

// delta is one piece of a generation's output: text, reasoning, or one
// whole tool call.
type delta struct {
	Content   string
	Reasoning string
	Call      *toolCallOut
	// Logprobs of the tokens generated since the previous delta (with
	// logprobs asked for); a delta may carry only these.
	Logprobs []engine.TokenLogprob
}

// toolCallOut is a tool call the model made.
type toolCallOut struct {
	Index     int
	ID        string
	Name      string
	Arguments json.RawMessage // compact JSON of an object
}

// outcome is a finished generation: the engine's final event (its finish
// reason "tool_calls" when the answer is calls) and the whole output.
type outcome struct {
	engine.Event
	Content   string
	Reasoning string
	ToolCalls []toolCallOut
	Logprobs  []engine.TokenLogprob // every token's, with logprobs asked for
	// Invalid is set when the request required a call and the output is
	// none: the answer is this error.
	Invalid *apiError
}

// pieceFramer makes one protocol's streamed objects for one request.
type pieceFramer interface {
	// piece is the objects carrying one piece of output.
	piece(d delta) []any
	// closing are the objects that end a successful stream.
	closing(o *outcome) []any
	// failure is the object that ends a failed stream.
	failure(e *apiError) any
}

// framer makes one HTTP protocol's response objects for one request.
type framer interface {
	pieceFramer
	// contentType is the streamed response's media type.
	contentType() string
	// opening are the objects sent as soon as the stream opens.
	opening() []any
	// frame appends v as one stream frame (an SSE event, an NDJSON line).
	frame(buf []byte, v any) []byte
	// terminator follows the last frame ("data: [DONE]" for SSE).
	terminator() string
	// whole is the non-streamed response body.
	whole(o *outcome) any
}

// responseMeta is what a framer needs to know of its request.
type responseMeta struct {
	id      string    // the job's id
	model   string    // the name to echo
	created time.Time // when the request arrived
	loaded  time.Duration
	// choice is this job's index among the request's choices (n).
	choice, choices int
}

// protocol names an endpoint's generations and makes their framers.
type protocol struct {
	endpoint string // for metrics and logs
	idPrefix string // job ids are idPrefix + the request id
	// echoRequested: responses name the model as the request did (Ollama)
	// rather than as the server does (OpenAI).
	echoRequested bool
	framer        func(responseMeta) framer
}

// running is a submitted generation.
type running struct {
	tj   *trackedJob
	meta responseMeta
	log  zerolog.Logger
	plan *outputPlan // nil: the output is text as it comes
}

// start finds g's model, builds its job and submits it; emit gets its
// events. The model is held until the job's last event.
func (s *Server) start(r *http.Request, b Backend, g *generation, p protocol, emit func(engine.Event)) (*running, *apiError) {
	arrived := time.Now()
	b, release, loaded, aerr := s.modelBackend(r.Context(), b, g.model)
	if aerr != nil {
		return nil, aerr
	}
	if g, aerr = s.withModelDefaults(r, b, g); aerr != nil {
		release()
		return nil, aerr
	}
	job, plan, aerr := s.buildJob(b, g)
	if aerr != nil {
		release()
		reqLog(r).Info().Str("code", aerr.Code).Str("param", aerr.Param).Msg(aerr.Message)
		return nil, aerr
	}
	job.ID = p.idPrefix + requestID(r)
	log := reqLog(r).With().Str("job_id", job.ID).Str("endpoint", p.endpoint).Logger()
	tj, aerr := s.submit(b, job, p.endpoint, log, releaseOnDone(emit, release))
	if aerr != nil {
		release()
		if aerr.Code == codeContextLength && g.kind == kindCompletion {
			aerr.Param = "prompt"
		}
		return nil, aerr
	}
	meta := responseMeta{id: tj.id, model: b.ModelName(), created: arrived, loaded: loaded}
	if p.echoRequested {
		meta.model = g.model
	}
	return &running{tj: tj, meta: meta, log: log, plan: plan}, nil
}

// run serves g over HTTP in p's shapes: streamed or whole. With n > 1
// choices (OpenAI's n) it submits n jobs of the same prompt at once, with
// seeds seed, seed+1, …: the engine prefills the prompt once and the
// others fork its KV blocks.
func (s *Server) run(w http.ResponseWriter, r *http.Request, b Backend, g *generation, p protocol) {
	n := max(g.n, 1)
	shared := newEventQueue() // streamed: every choice's events, told apart by job id
	jobs := make([]*running, 0, n)
	queues := make([]*eventQueue, 0, n)
	framers := make([]framer, 0, n)
	for i := 0; i < n; i++ {
		gi, pi, q := *g, p, shared
		gi.settings.Sampling.Seed += uint64(i)
		gi.choice = i
		if i > 0 {
			pi.idPrefix = fmt.Sprintf("%s%d-", p.idPrefix, i)
		}
		if !g.stream {
			q = newEventQueue()
		}
		job, aerr := s.start(r, b, &gi, pi, q.push)
		if aerr != nil {
			cancelAll(jobs)
			writeError(w, aerr)
			return
		}
		meta := job.meta
		if i > 0 {
			meta.id = jobs[0].meta.id // one response
		}
		meta.choice, meta.choices = i, n
		jobs, queues, framers = append(jobs, job), append(queues, q), append(framers, p.framer(meta))
	}
	if g.stream {
		s.streamHTTP(w, r, jobs, shared, framers)
		return
	}
	outs := make([]*outcome, n)
	for i, job := range jobs {
		o, ok := s.awaitDone(w, r, job, queues[i])
		if !ok {
			cancelAll(jobs)
			return
		}
		outs[i] = o
	}
	if n == 1 {
		writeJSON(w, http.StatusOK, framers[0].whole(outs[0]))
		return
	}
	writeJSON(w, http.StatusOK, framers[0].(choicesFramer).wholeChoices(outs))
}

// choicesFramer is a framer of a protocol with n > 1 choices (OpenAI's).
type choicesFramer interface {
	// wholeChoices is the non-streamed response of every choice.
	wholeChoices(outs []*outcome) any
	// summary ends a stream of several choices (the usage of them all).
	summary(total engine.Usage) []any
}

func cancelAll(jobs []*running) {
	for _, j := range jobs {
		j.tj.backend.Cancel(j.tj.id)
	}
}

// totalUsage is the usage of several choices of one prompt: the prompt
// once, every choice's completion.
func totalUsage(us []engine.Usage) engine.Usage {
	t := us[0]
	for _, u := range us[1:] {
		t.CompletionTokens += u.CompletionTokens
	}
	return t
}

// streamHTTP writes the jobs' events (one job, or the n choices of one
// request) as their framers' frames: the openings, a frame per piece, the
// closings (or the first failure) and the terminator. Every write has its
// own deadline; a failed write or a client that goes away cancels the
// jobs, and so does a choice that fails.
func (s *Server) streamHTTP(w http.ResponseWriter, r *http.Request, jobs []*running, q *eventQueue, fs []framer) {
	log := jobs[0].log
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", fs[0].contentType())
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // tell proxies not to buffer the stream
	w.WriteHeader(http.StatusOK)
	var buf []byte
	send := func(f framer, vs ...any) {
		for _, v := range vs {
			buf = f.frame(buf, v)
		}
	}
	flush := func() bool {
		_ = rc.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
		_, err := w.Write(buf)
		buf = buf[:0]
		if err == nil {
			err = rc.Flush()
		}
		if err != nil {
			cancelAll(jobs)
			log.Info().Err(err).Msg("stream write failed; generation cancelled")
			return false
		}
		return true
	}
	// The headers (and what the protocol sends first) go out at once, so
	// clients see the stream open before the prompt is processed.
	index := map[string]int{}
	accs := make([]*accumulator, len(jobs))
	usage := make([]engine.Usage, len(jobs))
	for i, job := range jobs {
		send(fs[i], fs[i].opening()...)
		index[job.tj.id] = i
		accs[i] = newAccumulator(job.plan)
	}
	if !flush() {
		return
	}
	left := len(jobs)
	for {
		select {
		case <-q.ready:
		case <-r.Context().Done():
			cancelAll(jobs)
			log.Info().Msg("client disconnected mid-stream; generation cancelled")
			return
		}
		for _, ev := range q.take() {
			i := index[ev.JobID]
			frames, succeeded := eventFrames(accs[i], fs[i], ev)
			send(fs[i], frames...)
			if !ev.Done {
				continue
			}
			if !succeeded {
				cancelAll(jobs)
				flush()
				return
			}
			usage[i], left = ev.Usage, left-1
			if left > 0 {
				continue
			}
			if len(jobs) > 1 {
				send(fs[0], fs[0].(choicesFramer).summary(totalUsage(usage))...)
			}
			buf = append(buf, fs[0].terminator()...)
			flush()
			return
		}
		if len(buf) > 0 && !flush() {
			return
		}
	}
}

// eventFrames is what f sends for one event: its pieces and, after the
// last, the closing objects (succeeded) or the failure.
func eventFrames(acc *accumulator, f pieceFramer, ev engine.Event) (frames []any, succeeded bool) {
	var deltas []delta
	var o *outcome
	if ev.Done && ev.Err == nil {
		deltas, o = acc.finish(ev)
	} else {
		deltas = acc.event(ev)
	}
	for _, d := range deltas {
		frames = append(frames, f.piece(d)...)
	}
	switch {
	case !ev.Done:
	case ev.Err != nil:
		frames = append(frames, f.failure(jobError(ev.Err)))
	case o.Invalid != nil:
		frames = append(frames, f.failure(o.Invalid))
	default:
		return append(frames, f.closing(o)...), true
	}
	return frames, false
}

// awaitDone gathers a non-streamed job's output until its final event and
// sets the write deadline for the reply. It returns false when the client
// went away (the job is cancelled) or the job failed (the error is
// written).
func (s *Server) awaitDone(w http.ResponseWriter, r *http.Request, job *running, q *eventQueue) (*outcome, bool) {
	acc := newAccumulator(job.plan)
	for {
		select {
		case <-q.ready:
		case <-r.Context().Done():
			// The client went away: stop generating for nobody.
			job.tj.backend.Cancel(job.tj.id)
			job.log.Info().Msg("client disconnected; generation cancelled")
			return nil, false
		}
		for _, ev := range q.take() {
			if !ev.Done {
				acc.event(ev)
				continue
			}
			if ev.Err != nil {
				writeError(w, jobError(ev.Err))
				return nil, false
			}
			_, o := acc.finish(ev)
			if o.Invalid != nil {
				writeError(w, o.Invalid)
				return nil, false
			}
			_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
			return o, true
		}
	}
}

// accumulator turns a job's text into deltas (through the plan's
// output parser, if it needs one) and keeps the whole output.
type accumulator struct {
	plan      *outputPlan
	parser    *chat.OutputParser // nil: all text is content
	content   strings.Builder
	reasoning strings.Builder
	calls     []toolCallOut
	logprobs  []engine.TokenLogprob
}

func newAccumulator(plan *outputPlan) *accumulator {
	a := &accumulator{plan: plan}
	if plan == nil {
		return a
	}
	p := chat.NewOutputParser(plan.format, plan.tools != nil, plan.inThink)
	if !p.Passthrough() || plan.prefill != "" {
		a.parser = p
		// The prompt's start of the answer is the output's start.
		a.parser.Feed(plan.prefill)
	}
	return a
}

// event takes an event's text and logprobs: the logprobs go with the
// first delta (or alone, when the text gave none yet).
func (a *accumulator) event(ev engine.Event) []delta {
	deltas := a.feed(ev.Text)
	if len(ev.Logprobs) == 0 {
		return deltas
	}
	a.logprobs = append(a.logprobs, ev.Logprobs...)
	if len(deltas) == 0 {
		return []delta{{Logprobs: ev.Logprobs}}
	}
	deltas[0].Logprobs = ev.Logprobs
	return deltas
}

// feed takes a piece of the engine's text.
func (a *accumulator) feed(text string) []delta {
	if a.parser == nil {
		if text == "" {
			return nil
		}
		a.content.WriteString(text)
		return []delta{{Content: text}}
	}
	return a.deltas(a.parser.Feed(text))
}

func (a *accumulator) deltas(parts []chat.Part) []delta {
	var out []delta
	for _, p := range parts {
		switch {
		case p.Call != nil:
			if !a.plan.tools.parallel && len(a.calls) > 0 {
				continue // parallel_tool_calls false: the first call only
			}
			c := toolCallOut{Index: len(a.calls), ID: newID("call_"), Name: p.Call.Name, Arguments: p.Call.Arguments}
			a.calls = append(a.calls, c)
			out = append(out, delta{Call: &c})
		case p.Reasoning != "":
			if a.plan.reasoning == reasoningDrop {
				continue
			}
			a.reasoning.WriteString(p.Reasoning)
			out = append(out, delta{Reasoning: p.Reasoning})
		case p.Content != "":
			a.content.WriteString(p.Content)
			out = append(out, delta{Content: p.Content})
		}
	}
	return out
}

// finish takes the job's final event: the last deltas and the outcome.
func (a *accumulator) finish(ev engine.Event) ([]delta, *outcome) {
	rest := a.event(ev)
	if a.parser != nil {
		rest = append(rest, a.deltas(a.parser.Finish())...)
	}
	o := &outcome{Event: ev, Content: a.content.String(), Reasoning: a.reasoning.String(), ToolCalls: a.calls,
		Logprobs: a.logprobs}
	if len(a.calls) > 0 && (ev.FinishReason == "stop" || ev.FinishReason == "length") {
		// The calls parsed are whole: the answer is calls (a grammar
		// ends a required one at the limit at the latest).
		o.FinishReason = "tool_calls"
	}
	if t := a.plan.requiredTools(); t != nil && len(a.calls) == 0 {
		want := "a call of one of the tools"
		if t.mode == toolsNamed {
			want = "a call of " + t.name
		}
		o.Invalid = &apiError{Status: http.StatusInternalServerError, Type: "server_error", Code: codeInvalidToolCall,
			Message: fmt.Sprintf("tool_choice asked for %s, and the model's output is not one (finish_reason %s)", want, ev.FinishReason)}
	}
	return rest, o
}

// requiredTools is the tools when the request requires a call.
func (p *outputPlan) requiredTools() *toolSpec {
	if p == nil || p.tools == nil || (p.tools.mode != toolsRequired && p.tools.mode != toolsNamed) {
		return nil
	}
	return p.tools
}

// eventQueue hands a job's events from the engine's goroutine to a
// handler without ever blocking the engine. It is unbounded, but a job's
// events are bounded by its max_tokens.
type eventQueue struct {
	mu     sync.Mutex
	events []engine.Event
	ready  chan struct{} // holds a token while events are waiting
}

func newEventQueue() *eventQueue { return &eventQueue{ready: make(chan struct{}, 1)} }

func (q *eventQueue) push(ev engine.Event) {
	q.mu.Lock()
	q.events = append(q.events, ev)
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

func (q *eventQueue) take() []engine.Event {
	q.mu.Lock()
	defer q.mu.Unlock()
	evs := q.events
	q.events = nil
	return evs
}

// releaseOnDone passes events to emit and calls release after the last.
func releaseOnDone(emit func(engine.Event), release func()) func(engine.Event) {
	return func(ev engine.Event) {
		emit(ev)
		if ev.Done {
			release()
		}
	}
}
