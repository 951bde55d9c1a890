package engine

import (
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/runtime/model"
	"github.com/wgllm/wgllm/runtime/sample"
)

// collector gathers one job's events.
type collector struct {
	mu   sync.Mutex
	text strings.Builder
	done chan Event
}

func newCollector() *collector { return &collector{done: make(chan Event, 1)} }

func (c *collector) emit(ev Event) {
	if ev.Done {
		c.done <- ev
		return
	}
	c.mu.Lock()
	c.text.WriteString(ev.Text)
	c.mu.Unlock()
}

func (c *collector) wait(t *testing.T) (string, Event) {
	t.Helper()
	select {
	case ev := <-c.done:
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.text.String(), ev
	case <-time.After(5 * time.Minute):
		t.Fatal("job did not finish")
	}
	return "", Event{}
}

func newEngine(t *testing.T, seqs int, opt Options) *Engine {
	t.Helper()
	g := open(t, "stories260K.gguf", model.Options{CtxLen: 128, Seqs: seqs, KVType: ops.F16, Batch: 64})
	e, err := NewEngine(g.M, g.Tok, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

var prompts = []string{"Tom had a little", "Once upon a time", "Lily saw a big", "The dog ran", "One day, a girl",
	"Sam and Tim", "The sun was", "A bird sang", "Mom said", "The cat", "Ben wanted to", "In the park",
	"The little boy", "She was happy", "They played", "It was a"}

// TestConcurrentJobsGetTheirAloneText runs 16 greedy jobs at once through
// continuous batching; each must produce exactly the text it gets alone.
func TestConcurrentJobsGetTheirAloneText(t *testing.T) {
	e := newEngine(t, 16, Options{MaxBatch: 16})
	alone := make([]string, len(prompts))
	for i, p := range prompts {
		c := newCollector()
		if _, err := e.Submit(Job{Prompt: p, MaxTokens: 24, Sampling: sample.Greedy()}, c.emit); err != nil {
			t.Fatal(err)
		}
		alone[i], _ = c.wait(t)
	}
	cs := make([]*collector, len(prompts))
	for i, p := range prompts {
		cs[i] = newCollector()
		if _, err := e.Submit(Job{Prompt: p, MaxTokens: 24, Sampling: sample.Greedy()}, cs[i].emit); err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range cs {
		got, ev := c.wait(t)
		if ev.Err != nil {
			t.Fatal(ev.Err)
		}
		if got != alone[i] {
			t.Errorf("prompt %q: batched text\n%q\nalone\n%q", prompts[i], got, alone[i])
		}
	}
	if m := e.Metrics(); m.RequestsFinished != 32 || m.TokensGenerated == 0 {
		t.Errorf("metrics %+v", m)
	}
}

func TestCancelFreesTheSlot(t *testing.T) {
	e := newEngine(t, 2, Options{})
	c := newCollector()
	started := make(chan struct{}, 1)
	id, err := e.Submit(Job{Prompt: "Once upon a time", MaxTokens: 100, Sampling: sample.Greedy()}, func(ev Event) {
		if !ev.Done {
			select {
			case started <- struct{}{}:
			default:
			}
		}
		c.emit(ev)
	})
	if err != nil {
		t.Fatal(err)
	}
	<-started
	if !e.Cancel(id) {
		t.Fatal("cancel of a running job reported not found")
	}
	_, ev := c.wait(t)
	if ev.FinishReason != "cancelled" || ev.Usage.CompletionTokens >= 100 {
		t.Fatalf("cancelled job ended with %+v", ev)
	}
	st, ok := e.Status(id)
	if !ok || st.State != Cancelled {
		t.Fatalf("status %+v %v", st, ok)
	}
	if e.Cancel(id) || e.Cancel("nope") {
		t.Error("cancel of a finished or unknown job reported success")
	}
	// The engine keeps serving.
	c2 := newCollector()
	if _, err := e.Submit(Job{Prompt: "Tom had", MaxTokens: 5, Sampling: sample.Greedy()}, c2.emit); err != nil {
		t.Fatal(err)
	}
	if _, ev := c2.wait(t); ev.FinishReason != "length" || ev.Usage.CompletionTokens != 5 {
		t.Fatalf("after cancel: %+v", ev)
	}
	// The loop updates its gauges just after the last event.
	m := e.Metrics()
	for deadline := time.Now().Add(5 * time.Second); (m.ActiveSequences != 0 || m.KVBlocksUsed != 0) && time.Now().Before(deadline); m = e.Metrics() {
		time.Sleep(5 * time.Millisecond)
	}
	if m.ActiveSequences != 0 || m.KVBlocksUsed != 0 {
		t.Errorf("idle engine holds %+v", m)
	}
	// Only the finished job's prompt stays cached: the cancelled one's
	// blocks went back to the pool at once.
	bs := e.m.KV.Config().BlockSize
	cached := 0
	for s := range e.slots {
		cached += len(e.m.KV.Blocks(s))
	}
	if want := (e.m.KV.Len(0) + e.m.KV.Len(1) + bs - 1) / bs; cached > want || e.m.KV.Len(0) > 0 && e.m.KV.Len(1) > 0 {
		t.Errorf("after a cancel and a finished job the cache holds %d blocks (lengths %d, %d)", cached, e.m.KV.Len(0), e.m.KV.Len(1))
	}
}

func TestQueueLimitIsBusy(t *testing.T) {
	e := newEngine(t, 1, Options{QueueLimit: 2})
	var ids []string
	busy := false
	for i := 0; i < 10; i++ {
		id, err := e.Submit(Job{Prompt: "Once upon a time", MaxTokens: 60, Sampling: sample.Greedy()}, nil)
		if errors.Is(err, ErrBusy) {
			busy = true
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if !busy {
		t.Fatal("10 jobs into a queue of 2 never got ErrBusy")
	}
	for _, id := range ids {
		e.Cancel(id)
	}
}

func TestStopStringsAndPrefixReuse(t *testing.T) {
	e := newEngine(t, 2, Options{})
	c := newCollector()
	if _, err := e.Submit(Job{Prompt: "Tom had a little", MaxTokens: 40, Sampling: sample.Greedy()}, c.emit); err != nil {
		t.Fatal(err)
	}
	full, _ := c.wait(t) // " boy named Tim. He loved to play with his toys. ..."
	i := strings.Index(full, "Tim")
	if i < 0 {
		t.Fatalf("reference text changed: %q", full)
	}
	c = newCollector()
	if _, err := e.Submit(Job{Prompt: "Tom had a little", MaxTokens: 40, Sampling: sample.Greedy(), Stop: []string{"Tim"}}, c.emit); err != nil {
		t.Fatal(err)
	}
	got, ev := c.wait(t)
	if got != full[:i] || ev.FinishReason != "stop" {
		t.Fatalf("with stop \"Tim\": %q (%s), want %q", got, ev.FinishReason, full[:i])
	}
	// The same prompt again reuses the cached prefix and gives the same text.
	if ev.Usage.CachedTokens == 0 {
		t.Errorf("second run of the same prompt reused no cached tokens: %+v", ev.Usage)
	}
	c = newCollector()
	if _, err := e.Submit(Job{Prompt: "Tom had a little", MaxTokens: 40, Sampling: sample.Greedy()}, c.emit); err != nil {
		t.Fatal(err)
	}
	if again, _ := c.wait(t); again != full {
		t.Errorf("prefix-reused text\n%q\nfresh\n%q", again, full)
	}
}

func TestSubmitRejectsBadJobs(t *testing.T) {
	e := newEngine(t, 1, Options{})
	long := strings.Repeat("Once upon a time ", 100)
	bad := sample.DefaultParams()
	bad.TopP = 2
	for i, j := range []Job{{Prompt: long}, {Prompt: "x", MaxTokens: -1}, {Prompt: "x", Sampling: bad}} {
		if _, err := e.Submit(j, nil); !errors.Is(err, ErrBadJob) {
			t.Errorf("job %d: %v, want ErrBadJob", i, err)
		}
	}
	if _, err := e.Submit(Job{ID: "a", Prompt: "Tom", MaxTokens: 2, Sampling: sample.Greedy()}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Submit(Job{ID: "a", Prompt: "Tom", Sampling: sample.Greedy()}, nil); !errors.Is(err, ErrBadJob) {
		t.Errorf("duplicate id: %v", err)
	}
}

// TestSmallKVPoolQueuesAndRecovers gives the engine a block pool that holds
// only a few sequences' worth of tokens: jobs wait for blocks instead of
// failing, every job finishes, and the blocks come back.
func TestSmallKVPoolQueuesAndRecovers(t *testing.T) {
	g := open(t, "stories260K.gguf", model.Options{CtxLen: 128, Seqs: 8, KVType: ops.F16, Batch: 64, BlockSize: 16, KVTokens: 96})
	e, err := NewEngine(g.M, g.Tok, Options{MaxBatch: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	cs := make([]*collector, 6)
	for i := range cs {
		cs[i] = newCollector()
		if _, err := e.Submit(Job{Prompt: prompts[i], MaxTokens: 20, Sampling: sample.Greedy()}, cs[i].emit); err != nil {
			t.Fatal(err)
		}
	}
	finished := 0
	for _, c := range cs {
		_, ev := c.wait(t)
		if ev.Err == nil {
			finished++
		} else if !strings.Contains(ev.Err.Error(), "kv cache full") {
			t.Errorf("unexpected failure: %v", ev.Err)
		}
	}
	if finished < 3 {
		t.Errorf("only %d of 6 jobs finished with a pool of 6 blocks", finished)
	}
	m := e.Metrics()
	for deadline := time.Now().Add(5 * time.Second); (m.ActiveSequences != 0 || m.KVBlocksUsed != 0) && time.Now().Before(deadline); m = e.Metrics() {
		time.Sleep(5 * time.Millisecond)
	}
	if m.KVBlocksUsed != 0 || m.ActiveSequences != 0 || m.KVBlocksTotal != 6 {
		t.Errorf("after all jobs: %+v", m)
	}
}

// TestRunningJobsSharePrefixBlocks: a job whose prompt starts like a
// running job's (a shared system prompt) forks that job's cached blocks
// instead of prefilling them again, and both texts equal their alone runs.
func TestRunningJobsSharePrefixBlocks(t *testing.T) {
	e := newEngine(t, 4, Options{})
	system := "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. "
	a, b := system+"One day", system+"Her mom"
	aloneText := map[string]string{}
	for _, p := range []string{a, b} {
		e.evictForTest()
		c := newCollector()
		if _, err := e.Submit(Job{Prompt: p, MaxTokens: 30, Sampling: sample.Greedy()}, c.emit); err != nil {
			t.Fatal(err)
		}
		aloneText[p], _ = c.wait(t)
	}
	e.evictForTest()
	ca, cb := newCollector(), newCollector()
	if _, err := e.Submit(Job{Prompt: a, MaxTokens: 30, Sampling: sample.Greedy()}, ca.emit); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Submit(Job{Prompt: b, MaxTokens: 30, Sampling: sample.Greedy()}, cb.emit); err != nil {
		t.Fatal(err)
	}
	ta, eva := ca.wait(t)
	tb, evb := cb.wait(t)
	if ta != aloneText[a] || tb != aloneText[b] {
		t.Errorf("shared-prefix texts differ from alone:\n%q\n%q\n%q\n%q", ta, aloneText[a], tb, aloneText[b])
	}
	if eva.Usage.CachedTokens != 0 || evb.Usage.CachedTokens < 20 {
		t.Errorf("cached tokens: first %d, second %d (want 0 and the shared system prompt)", eva.Usage.CachedTokens, evb.Usage.CachedTokens)
	}
}

func TestChatStopAppliesToChatJobsOnly(t *testing.T) {
	e := newEngine(t, 2, Options{ChatStop: []string{"Tim"}})
	run := func(chat bool) (string, Event) {
		c := newCollector()
		if _, err := e.Submit(Job{Prompt: "Tom had a little", MaxTokens: 20, Sampling: sample.Greedy(), Chat: chat}, c.emit); err != nil {
			t.Fatal(err)
		}
		return c.wait(t)
	}
	plain, _ := run(false)
	chat, ev := run(true)
	if !strings.Contains(plain, "Tim") || strings.Contains(chat, "Tim") || ev.FinishReason != "stop" || !strings.HasPrefix(plain, chat) {
		t.Errorf("plain %q, chat %q (%s)", plain, chat, ev.FinishReason)
	}
}

// TestLongPromptDoesNotStallRunningStreams: while a long prompt is
// prefilled in chunks (a step budget of 8 tokens), a running stream gets a
// token from every step; both texts equal their alone runs.
func TestLongPromptDoesNotStallRunningStreams(t *testing.T) {
	const budget = 8
	e := newEngine(t, 2, Options{StepTokens: budget})
	long := "Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her friends. " +
		"One day, she saw a big red ball under a tree and she"
	n := len(e.tok.Encode(long, e.tok.AddBOS()))
	if n < 6*budget {
		t.Fatalf("the long prompt has only %d tokens", n)
	}
	short := "Tom had a little"
	alone := map[string]string{}
	for _, p := range []string{short, long} {
		e.evictForTest()
		c := newCollector()
		if _, err := e.Submit(Job{Prompt: p, MaxTokens: 60, Sampling: sample.Greedy()}, c.emit); err != nil {
			t.Fatal(err)
		}
		alone[p], _ = c.wait(t)
	}
	e.evictForTest()

	var streamed atomic.Int64 // pieces of the running stream so far
	firstPiece := make(chan struct{}, 1)
	running := newCollector()
	if _, err := e.Submit(Job{Prompt: short, MaxTokens: 60, Sampling: sample.Greedy()}, func(ev Event) {
		if !ev.Done && ev.Text != "" && streamed.Add(1) == 1 {
			firstPiece <- struct{}{}
		}
		running.emit(ev)
	}); err != nil {
		t.Fatal(err)
	}
	<-firstPiece
	// Pieces streamed between the long prompt's submission and its first
	// token: a lower bound of the steps that ran the stream meanwhile.
	atSubmit := streamed.Load()
	duringPrefill := int64(-1)
	longC := newCollector()
	if _, err := e.Submit(Job{Prompt: long, MaxTokens: 60, Sampling: sample.Greedy()}, func(ev Event) {
		if duringPrefill < 0 && !ev.Done {
			duringPrefill = streamed.Load() - atSubmit
		}
		longC.emit(ev)
	}); err != nil {
		t.Fatal(err)
	}
	textRun, evRun := running.wait(t)
	textLong, evLong := longC.wait(t)
	if evRun.Err != nil || evLong.Err != nil {
		t.Fatal(evRun.Err, evLong.Err)
	}
	if textRun != alone[short] || textLong != alone[long] {
		t.Errorf("texts differ from alone runs:\n%q\n%q\n%q\n%q", textRun, alone[short], textLong, alone[long])
	}
	// The long prompt needs ⌈n / (budget-1)⌉ steps with the stream's token
	// in each; the stream must have gone on through them.
	steps := (n + budget - 2) / (budget - 1)
	if duringPrefill < int64(steps)-1 {
		t.Errorf("the running stream had %d pieces by the long prompt's first token; its %d-token prefill took at least %d steps, each with a stream token",
			duringPrefill, n, steps)
	}
	t.Logf("long prompt: %d tokens in ≥%d steps; the running stream streamed %d pieces meanwhile", n, steps, duringPrefill)
}

// TestPromptsEnterTogether: with several prompt chunks allowed in a step,
// prompts queued while a stream runs are prefilled in the same steps, and
// every text equals its alone run (a span's results do not depend on what
// shares its step).
func TestPromptsEnterTogether(t *testing.T) {
	e := newEngine(t, 5, Options{PromptChunks: 4, StepTokens: 64})
	ps := []string{"Tom had a little", "Once upon a time, there was a big", "Lily saw", "The dog ran to the park and"}
	alone := make([]string, len(ps))
	for i, p := range ps {
		c := newCollector()
		if _, err := e.Submit(Job{Prompt: p, MaxTokens: 20, Sampling: sample.Greedy()}, c.emit); err != nil {
			t.Fatal(err)
		}
		alone[i], _ = c.wait(t)
	}
	if n := e.mostChunks.Load(); n != 1 {
		t.Fatalf("one job at a time, yet a step carried %d prompt chunks", n)
	}
	// A running stream, so that the four queue up while a step runs.
	first := make(chan struct{}, 1)
	bg := newCollector()
	if _, err := e.Submit(Job{Prompt: "A bird sang", MaxTokens: 60, Sampling: sample.Greedy()}, func(ev Event) {
		if ev.Text != "" {
			select {
			case first <- struct{}{}:
			default:
			}
		}
		bg.emit(ev)
	}); err != nil {
		t.Fatal(err)
	}
	<-first
	cs := make([]*collector, len(ps))
	for i, p := range ps {
		cs[i] = newCollector()
		if _, err := e.Submit(Job{Prompt: p, MaxTokens: 20, Sampling: sample.Greedy()}, cs[i].emit); err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range cs {
		if got, ev := c.wait(t); ev.Err != nil || got != alone[i] {
			t.Errorf("%q: together %q (%v), alone %q", ps[i], got, ev.Err, alone[i])
		}
	}
	bg.wait(t)
	if n := e.mostChunks.Load(); n < 2 {
		t.Errorf("four prompts queued together: the most chunks in a step was %d, want several", n)
	}
}
