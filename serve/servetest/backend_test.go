package servetest

import (
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/wgllm/wgllm/runtime/engine"
	"github.com/wgllm/wgllm/runtime/sample"
)

// recorder collects a job's events; done is closed on the Done event.
type recorder struct {
	mu     sync.Mutex
	events []engine.Event
	done   chan struct{}
}

func newRecorder() *recorder { return &recorder{done: make(chan struct{})} }

func (r *recorder) emit(ev engine.Event) {
	r.mu.Lock()
	r.events = append(r.events, ev)
	r.mu.Unlock()
	if ev.Done {
		close(r.done)
	}
}

func (r *recorder) wait(t *testing.T) (string, engine.Event) {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		t.Fatal("no Done event")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	text := ""
	for _, ev := range r.events[:len(r.events)-1] {
		text += ev.Text
	}
	return text, r.events[len(r.events)-1]
}

func TestFakeBackend(t *testing.T) {
	b := New(Options{QueueLimit: 2, MaxActive: 1})
	defer b.Close()
	job := engine.Job{Prompt: "a b c", MaxTokens: 5, Sampling: sample.Greedy()}

	r := newRecorder()
	id, err := b.Submit(job, r.emit)
	if err != nil {
		t.Fatal(err)
	}
	text, end := r.wait(t)
	if text != " w0 w1 w2 w3 w4" || end.FinishReason != "length" || end.Usage != (engine.Usage{PromptTokens: 4, CompletionTokens: 5}) ||
		end.JobID != id || end.Timings.TimeToFirstMS <= 0 {
		t.Errorf("text %q end %+v", text, end)
	}
	if st, ok := b.Status(id); !ok || st.State != engine.Done || st.Text != text {
		t.Errorf("status %+v", st)
	}

	// A stop string ends the text before it.
	stop := job
	stop.Stop = []string{"2 w"}
	r = newRecorder()
	if _, err := b.Submit(stop, r.emit); err != nil {
		t.Fatal(err)
	}
	if text, end := r.wait(t); text != " w0 w1 w" || end.FinishReason != "stop" {
		t.Errorf("stop: %q %+v", text, end)
	}

	// The queue bound, and cancelling queued jobs while paused.
	b.SetPaused(true)
	var recs []*recorder
	var ids []string
	for range 2 {
		r := newRecorder()
		id, err := b.Submit(job, r.emit)
		if err != nil {
			t.Fatal(err)
		}
		recs, ids = append(recs, r), append(ids, id)
	}
	if _, err := b.Submit(job, newRecorder().emit); !errors.Is(err, engine.ErrBusy) {
		t.Errorf("third job: %v, want ErrBusy", err)
	}
	if m := b.Metrics(); m.QueueDepth != 2 || m.QueueLimit != 2 {
		t.Errorf("metrics %+v", m)
	}
	if !b.Cancel(ids[0]) || b.Cancel(ids[0]) || b.Cancel("nope") {
		t.Error("Cancel answers")
	}
	if _, end := recs[0].wait(t); end.FinishReason != "cancelled" || end.Usage.CompletionTokens != 0 {
		t.Errorf("cancelled while queued: %+v", end)
	}
	b.SetPaused(false)
	if text, _ := recs[1].wait(t); text != " w0 w1 w2 w3 w4" {
		t.Errorf("after resuming: %q", text)
	}

	// Bad jobs and duplicate ids.
	bad := job
	bad.Sampling.TopP = 0
	if _, err := b.Submit(bad, newRecorder().emit); !errors.Is(err, engine.ErrBadJob) {
		t.Errorf("invalid sampling: %v", err)
	}
	dup := job
	dup.ID = id
	if _, err := b.Submit(dup, newRecorder().emit); !errors.Is(err, engine.ErrBadJob) {
		t.Errorf("duplicate id: %v", err)
	}

	// Close fails what is left.
	long := job
	long.MaxTokens = 100000
	r = newRecorder()
	if _, err := b.Submit(long, r.emit); err != nil {
		t.Fatal(err)
	}
	b.Close()
	if _, end := r.wait(t); !errors.Is(end.Err, engine.ErrClosed) {
		t.Errorf("after Close: %+v", end)
	}
	if _, err := b.Submit(job, newRecorder().emit); !errors.Is(err, engine.ErrClosed) {
		t.Errorf("Submit after Close: %v", err)
	}
}

func TestFakeRenderChat(t *testing.T) {
	b := New(Options{})
	defer b.Close()
	got, err := b.RenderChat(engine.Chat{Messages: []engine.ChatMessage{{Role: "system", Content: "s"}, {Role: "user", Content: "u"}}})
	if err != nil || got.Prompt != "<|system|>\ns\n<|user|>\nu\n<|assistant|>\n" {
		t.Errorf("%q %v", got.Prompt, err)
	}
	got, err = b.RenderChat(engine.Chat{Tools: []json.RawMessage{json.RawMessage(`{"type":"function"}`)}, Messages: []engine.ChatMessage{
		{Role: "assistant", ToolCalls: []engine.ToolCall{{ID: "c1", Name: "f", Arguments: json.RawMessage(`{"a":1}`)}}},
		{Role: "tool", ToolCallID: "c1", Content: "ok"}}})
	want := "<|tools|>\n{\"type\":\"function\"}\n<|assistant|>\n\n<tool_call>{\"name\": \"f\", \"arguments\": {\"a\":1}}</tool_call>\n<|tool|> c1\nok\n<|assistant|>\n"
	if err != nil || got.Prompt != want {
		t.Errorf("with tools: %q %v", got.Prompt, err)
	}
	if _, err := b.RenderChat(engine.Chat{Messages: []engine.ChatMessage{{Role: "narrator"}}}); !errors.Is(err, engine.ErrBadJob) {
		t.Errorf("unknown role: %v", err)
	}
}
