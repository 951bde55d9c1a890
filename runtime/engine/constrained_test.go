package engine

import (
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/runtime/grammar"
	"github.com/wgllm/wgllm/runtime/model"
	"github.com/wgllm/wgllm/runtime/sample"
)

// eventLog gathers every event of one job.
type eventLog struct {
	mu     sync.Mutex
	events []Event
	done   chan struct{}
}

func newEventLog() *eventLog { return &eventLog{done: make(chan struct{})} }

func (l *eventLog) emit(ev Event) {
	l.mu.Lock()
	l.events = append(l.events, ev)
	l.mu.Unlock()
	if ev.Done {
		close(l.done)
	}
}

func (l *eventLog) wait(t *testing.T) (string, []TokenLogprob, Event) {
	t.Helper()
	<-l.done
	var text strings.Builder
	var lps []TokenLogprob
	for _, ev := range l.events {
		text.WriteString(ev.Text)
		lps = append(lps, ev.Logprobs...)
	}
	last := l.events[len(l.events)-1]
	if last.Err != nil {
		t.Fatalf("job failed: %v", last.Err)
	}
	return text.String(), lps, last
}

func validator(t *testing.T, schema string) *jsonschema.Schema {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(strings.NewReader(schema))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("s.json", doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile("s.json")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// The bundled model, which knows nothing of JSON, writes text that parses
// and validates when its output is constrained by a schema: greedy and
// sampled with a budget that is barely enough; and in JSON mode.
func TestSchemaConstrainedOutputValidates(t *testing.T) {
	g := open(t, "kjv-30m-q4_k_m.gguf", model.Options{CtxLen: 256, Seqs: 8, KVType: ops.F16, Batch: 64})
	e, err := NewEngine(g.M, g.Tok, Options{MaxBatch: 8})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	schemas := []string{
		`{"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"},"tribe":{"enum":["Judah","Levi","Dan"]}},"required":["name","age","tribe"],"additionalProperties":false}`,
		`{"type":"object","properties":{"verses":{"type":"array","items":{"type":"object","properties":{"n":{"type":"integer","minimum":0},"ok":{"type":"boolean"}},"required":["n","ok"]},"minItems":1,"maxItems":3}},"required":["verses"]}`,
		`{"$defs":{"who":{"anyOf":[{"type":"string","maxLength":12},{"type":"null"}]}},"type":"object","properties":{"speaker":{"$ref":"#/$defs/who"},"to":{"$ref":"#/$defs/who"}},"required":["speaker","to"]}`,
	}
	type run struct {
		schema   int
		sampling sample.Params
		max      int
		log      *eventLog
	}
	var runs []*run
	for i := range schemas {
		hot := sample.DefaultParams()
		hot.Temperature, hot.Seed = 1.2, uint64(i+1)
		runs = append(runs, &run{i, sample.Greedy(), 40, nil}, &run{i, hot, 0, nil})
	}
	gs := make([]*grammar.Grammar, len(schemas))
	for i, s := range schemas {
		if gs[i], err = grammar.FromJSONSchema([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range runs {
		if r.max == 0 {
			r.max = gs[r.schema].MinLength() + 2 // barely enough
		}
		r.log = newEventLog()
		j := Job{Prompt: "And the LORD spake unto Moses, saying,", MaxTokens: r.max, Sampling: r.sampling, Grammar: gs[r.schema]}
		if _, err := e.Submit(j, r.log.emit); err != nil {
			t.Fatal(err)
		}
	}
	// JSON mode, in the same batch.
	jsonMode := newEventLog()
	if _, err := e.Submit(Job{Prompt: "In the beginning", MaxTokens: 24, Sampling: sample.Greedy(), Grammar: grammar.JSON()}, jsonMode.emit); err != nil {
		t.Fatal(err)
	}
	for _, r := range runs {
		text, _, ev := r.log.wait(t)
		var v any
		if err := json.Unmarshal([]byte(text), &v); err != nil {
			t.Errorf("schema %d, %+v, max %d: %q does not parse: %v", r.schema, r.sampling, r.max, text, err)
			continue
		}
		if err := validator(t, schemas[r.schema]).Validate(v); err != nil {
			t.Errorf("schema %d: %q does not validate: %v", r.schema, text, err)
		}
		if ev.Usage.CompletionTokens > r.max {
			t.Errorf("schema %d: %d tokens, over max_tokens %d", r.schema, ev.Usage.CompletionTokens, r.max)
		}
		t.Logf("schema %d temp %v max %d: %s (%s, %d tokens)", r.schema, r.sampling.Temperature, r.max, text, ev.FinishReason, ev.Usage.CompletionTokens)
	}
	text, _, _ := jsonMode.wait(t)
	var obj map[string]any
	if err := json.Unmarshal([]byte(text), &obj); err != nil {
		t.Errorf("JSON mode: %q: %v", text, err)
	}
}

// Logprobs: the tokens' bytes are the text, greedy picks the top
// alternative, alternatives come best first, and asking for them does not
// change the greedy text (the CPU's pick equals the GPU's argmax).
func TestLogprobsAndLogitBias(t *testing.T) {
	e := newEngine(t, 2, Options{})
	run := func(j Job) (string, []TokenLogprob, Event) {
		l := newEventLog()
		if _, err := e.Submit(j, l.emit); err != nil {
			t.Fatal(err)
		}
		return l.wait(t)
	}
	plain, _, _ := run(Job{Prompt: "Tom had a little", MaxTokens: 12, Sampling: sample.Greedy()})
	text, lps, ev := run(Job{Prompt: "Tom had a little", MaxTokens: 12, Sampling: sample.Greedy(), Logprobs: true, TopLogprobs: 3})
	if text != plain {
		t.Errorf("with logprobs: %q, without: %q", text, plain)
	}
	if len(lps) != ev.Usage.CompletionTokens {
		t.Fatalf("%d logprobs for %d tokens", len(lps), ev.Usage.CompletionTokens)
	}
	var joined []byte
	for i, lp := range lps {
		joined = append(joined, lp.Token.Bytes...)
		if len(lp.Top) != 3 || lp.Top[0].Token.ID != lp.Token.ID || lp.Top[0].Logprob != lp.Logprob {
			t.Fatalf("token %d: %+v: greedy must be the top alternative", i, lp)
		}
		if lp.Logprob > 0 || lp.Top[1].Logprob > lp.Top[0].Logprob || lp.Top[2].Logprob > lp.Top[1].Logprob {
			t.Fatalf("token %d: logprobs not ≤ 0 and best first: %+v", i, lp)
		}
	}
	if string(joined) != text {
		t.Errorf("tokens' bytes %q, text %q", joined, text)
	}
	// A bias of -100 on the first greedy token makes the second best come
	// first; +100 on a token makes it come first.
	first, second := lps[0].Token.ID, lps[0].Top[1].Token.ID
	_, biased, _ := run(Job{Prompt: "Tom had a little", MaxTokens: 1, Sampling: sample.Greedy(), Logprobs: true, TopLogprobs: 1,
		LogitBias: map[int32]float32{first: -100}})
	if biased[0].Token.ID != second {
		t.Errorf("bias -100 on %d: got %d, want the runner-up %d", first, biased[0].Token.ID, second)
	}
	forced := int32(100)
	_, biased, _ = run(Job{Prompt: "Tom had a little", MaxTokens: 3, Sampling: sample.Greedy(), Logprobs: true,
		LogitBias: map[int32]float32{forced: 100}})
	for _, lp := range biased {
		if lp.Token.ID != forced {
			t.Errorf("bias +100 on %d: got %d", forced, lp.Token.ID)
		}
	}
	for _, bad := range []Job{
		{Prompt: "x", LogitBias: map[int32]float32{int32(e.m.Cfg.Vocab): 1}},
		{Prompt: "x", LogitBias: map[int32]float32{1: 150}},
		{Prompt: "x", Logprobs: true, TopLogprobs: 21},
	} {
		if _, err := e.Submit(bad, nil); !errors.Is(err, ErrBadJob) {
			t.Errorf("%+v: got %v, want ErrBadJob", bad, err)
		}
	}
}

// Several choices of one prompt (OpenAI's n) submitted together share the
// prompt's KV: the first prefills it, the others fork its blocks.
func TestChoicesShareThePromptPrefix(t *testing.T) {
	e := newEngine(t, 4, Options{})
	const prompt = "Once upon a time, there was a little girl named"
	var logs []*eventLog
	for i := 0; i < 3; i++ {
		p := sample.DefaultParams()
		p.Seed = uint64(i)
		l := newEventLog()
		if _, err := e.Submit(Job{Prompt: prompt, MaxTokens: 8, Sampling: p}, l.emit); err != nil {
			t.Fatal(err)
		}
		logs = append(logs, l)
	}
	for i, l := range logs {
		_, _, ev := l.wait(t)
		if i > 0 && ev.Usage.CachedTokens != ev.Usage.PromptTokens-1 {
			t.Errorf("choice %d reused %d of %d prompt tokens, want all but the last", i, ev.Usage.CachedTokens, ev.Usage.PromptTokens)
		}
	}
}
