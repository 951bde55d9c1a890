package serve_test

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/wgllm/wgllm/runtime/chat"
	"github.com/wgllm/wgllm/runtime/engine"
	"github.com/wgllm/wgllm/serve"
	"github.com/wgllm/wgllm/serve/servetest"
)

// gptOSS is a fake engine with gpt-oss's own template whose model writes
// script, a piece a token, in the harmony format.
func gptOSS(t *testing.T, script ...string) *servetest.Options {
	t.Helper()
	src, err := os.ReadFile("../runtime/chat/testdata/templates/openai-gpt-oss-120b.jinja")
	if err != nil {
		t.Fatal(err)
	}
	tmpl, err := chat.New(string(src), chat.Options{Now: func() time.Time { return time.Date(2026, 8, 18, 9, 0, 0, 0, time.UTC) }})
	if err != nil {
		t.Fatal(err)
	}
	return &servetest.Options{
		Render: engine.TemplateRenderer(tmpl),
		Piece: func(_ engine.Job, i int) string {
			if i < len(script) {
				return script[i]
			}
			return ""
		},
		EOSAfter: len(script),
	}
}

// A gpt-oss answer, its markers split across tokens as a tokenizer may
// split them: reasoning, a preamble, a call.
var harmonyWeatherCall = []string{"<|channel|>", "analysis", "<|message|>", "Paris is", " a city.", "<|end|>",
	"<|start|>", "assistant", "<|channel|>", "commentary<|mess", "age|>Let me look.<|e", "nd|>",
	"<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>", "json<|message|>",
	`{"city": `, `"Paris"}`}

// OpenAI's API: reasoning_content, content and tool calls apart, whole
// and streamed; reasoning_effort and the history's reasoning reach the
// template.
func TestHarmonyOpenAI(t *testing.T) {
	ts := start(t, serve.Config{}, gptOSS(t, harmonyWeatherCall...))
	client := ts.openAI("")
	ctx := context.Background()
	params := openai.ChatCompletionNewParams{Model: "m", Tools: weatherTools(), ReasoningEffort: "high",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.SystemMessage("Be brief."), openai.UserMessage("Weather in Paris?")}}
	res, err := client.Chat.Completions.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	c := res.Choices[0]
	if c.FinishReason != "tool_calls" || c.Message.Content != "Let me look." || len(c.Message.ToolCalls) != 1 ||
		c.Message.ToolCalls[0].Function.Name != "get_weather" || c.Message.ToolCalls[0].Function.Arguments != `{"city":"Paris"}` {
		t.Fatalf("choice: %+v", c)
	}
	if got := c.Message.JSON.ExtraFields["reasoning_content"].Raw(); got != `"Paris is a city."` {
		t.Errorf("reasoning_content %s", got)
	}
	prompt := ts.backend.Jobs()[0].Prompt
	for _, want := range []string{"<|start|>system<|message|>You are ChatGPT", "Current date: 2026-08-18", "Reasoning: high",
		"<|start|>developer<|message|># Instructions\n\nBe brief.\n\n# Tools", "type get_weather = (_: {\ncity: string,\n}) => any;",
		"<|start|>user<|message|>Weather in Paris?<|end|>"} {
		if !strings.Contains(prompt, want) {
			t.Errorf("the prompt lacks %q:\n%s", want, prompt)
		}
	}
	if !strings.HasSuffix(prompt, "<|end|><|start|>assistant") {
		t.Errorf("the prompt does not open the assistant's turn: %q", prompt)
	}

	// Streamed: the same answer from the deltas.
	stream := client.Chat.Completions.NewStreaming(ctx, params)
	var acc openai.ChatCompletionAccumulator
	var reasoning strings.Builder
	for stream.Next() {
		chunk := stream.Current()
		acc.AddChunk(chunk)
		if len(chunk.Choices) > 0 {
			var s string
			if raw := chunk.Choices[0].Delta.JSON.ExtraFields["reasoning_content"].Raw(); raw != "" {
				_ = json.Unmarshal([]byte(raw), &s)
			}
			if strings.Contains(s, "<|") || strings.Contains(chunk.Choices[0].Delta.Content, "<|") {
				t.Errorf("a marker leaked into a delta: %+v", chunk.Choices[0].Delta)
			}
			reasoning.WriteString(s)
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	sc := acc.Choices[0]
	if sc.FinishReason != "tool_calls" || sc.Message.Content != "Let me look." || len(sc.Message.ToolCalls) != 1 ||
		sc.Message.ToolCalls[0].Function.Arguments != `{"city":"Paris"}` || reasoning.String() != "Paris is a city." {
		t.Errorf("streamed: %+v, reasoning %q", sc, reasoning.String())
	}
}

// The next turn: the call and its reasoning, and the tool's answer, go
// back into the prompt as gpt-oss was trained on them.
func TestHarmonyHistory(t *testing.T) {
	ts := start(t, serve.Config{}, gptOSS(t, "<|channel|>final<|message|>", "Sunny."))
	resp := ts.do("POST", "/v1/chat/completions", map[string]any{"messages": []map[string]any{
		{"role": "user", "content": "Weather?"},
		{"role": "assistant", "content": nil, "reasoning_content": "I should call get_weather.", "tool_calls": []map[string]any{{"id": "c1", "type": "function",
			"function": map[string]any{"name": "get_weather", "arguments": `{"city":"Bern"}`}}}},
		{"role": "tool", "tool_call_id": "c1", "content": "sunny"},
	}, "tools": []map[string]any{{"type": "function", "function": map[string]any{"name": "get_weather"}}}}, nil)
	var out struct {
		Choices []struct {
			Message struct{ Content string } `json:"message"`
		} `json:"choices"`
	}
	decode(t, resp, &out)
	if len(out.Choices) != 1 || out.Choices[0].Message.Content != "Sunny." {
		t.Fatalf("answer %+v", out)
	}
	want := "<|start|>user<|message|>Weather?<|end|><|start|>assistant<|channel|>analysis<|message|>I should call get_weather.<|end|>" +
		"<|start|>assistant to=functions.get_weather<|channel|>commentary json<|message|>{\"city\": \"Bern\"}<|call|>" +
		"<|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>\"sunny\"<|end|><|start|>assistant"
	if prompt := ts.backend.Jobs()[0].Prompt; !strings.HasSuffix(prompt, want) {
		t.Errorf("prompt %q\nwant it to end %q", prompt, want)
	}
}

// A named tool_choice opens the call's header in the prompt and
// constrains its arguments by the tool's schema.
func TestHarmonyNamedToolChoice(t *testing.T) {
	ts := start(t, serve.Config{}, gptOSS(t, `{"city": "Oslo"}`))
	resp := ts.do("POST", "/v1/chat/completions", map[string]any{"messages": []map[string]any{{"role": "user", "content": "Oslo?"}},
		"tools":       []map[string]any{{"type": "function", "function": map[string]any{"name": "get_weather", "parameters": map[string]any{"type": "object"}}}, {"type": "function", "function": map[string]any{"name": "get_time"}}},
		"tool_choice": map[string]any{"type": "function", "function": map[string]any{"name": "get_weather"}}}, nil)
	var out struct {
		Choices []struct {
			FinishReason string `json:"finish_reason"`
			Message      struct {
				ToolCalls []struct {
					Function struct{ Name, Arguments string } `json:"function"`
				} `json:"tool_calls"`
			} `json:"message"`
		} `json:"choices"`
	}
	decode(t, resp, &out)
	if len(out.Choices) != 1 || len(out.Choices[0].Message.ToolCalls) != 1 || out.Choices[0].Message.ToolCalls[0].Function.Arguments != `{"city":"Oslo"}` {
		t.Fatalf("answer %+v", out)
	}
	job := ts.backend.Jobs()[0]
	if !strings.HasSuffix(job.Prompt, "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>") || job.Grammar == nil {
		t.Errorf("the call is not opened and constrained: prompt %q, grammar %v", job.Prompt, job.Grammar)
	}
}

// Ollama's API: thinking apart by default (gpt-oss always reasons), think
// levels as the reasoning effort, a message's thinking into the prompt;
// think: false drops the reasoning.
func TestHarmonyOllama(t *testing.T) {
	ts := start(t, serve.Config{}, gptOSS(t, "<|channel|>analysis<|message|>Hmm.<|end|>", "<|start|>assistant<|channel|>final<|message|>", "Hi!"))
	type reply struct {
		Message struct{ Content, Thinking string } `json:"message"`
	}
	for _, c := range []struct {
		think        any
		effort       string
		wantThinking string
	}{{nil, "medium", "Hmm."}, {"low", "low", "Hmm."}, {false, "medium", ""}} {
		body := map[string]any{"model": "fake-model", "stream": false, "messages": []map[string]any{{"role": "user", "content": "Hello"},
			{"role": "assistant", "content": "Hey.", "thinking": "Say hey."}, {"role": "user", "content": "Again"}}}
		if c.think != nil {
			body["think"] = c.think
		}
		var out reply
		decode(t, ts.do("POST", "/api/chat", body, nil), &out)
		if out.Message.Content != "Hi!" || out.Message.Thinking != c.wantThinking {
			t.Errorf("think %v: %+v, want content Hi! and thinking %q", c.think, out.Message, c.wantThinking)
		}
		jobs := ts.backend.Jobs()
		prompt := jobs[len(jobs)-1].Prompt
		if !strings.Contains(prompt, "Reasoning: "+c.effort+"\n") || !strings.Contains(prompt, "<|start|>assistant<|channel|>final<|message|>Hey.<|end|>") {
			t.Errorf("think %v: prompt %q", c.think, prompt)
		}
	}
}

// The websocket streams the reasoning as reasoning messages, the answer as
// tokens, as for other reasoning models.
func TestHarmonyWebsocket(t *testing.T) {
	ts := start(t, serve.Config{}, gptOSS(t, "<|channel|>analysis<|mes", "sage|>Think", "ing.<|end|><|start|>assistant<|channel|>final<|message|>An", "swer."))
	ws := ts.dialWS(nil, "")
	ws.send(map[string]any{"type": "chat", "id": "a", "messages": []map[string]any{{"role": "user", "content": "q"}}, "reasoning_effort": "low"})
	var reasoning, text strings.Builder
	for {
		m := ws.read()
		if m.Type == "done" {
			break
		}
		switch m.Type {
		case "reasoning":
			reasoning.WriteString(m.Text)
		case "token":
			text.WriteString(m.Text)
		default:
			t.Fatalf("unexpected %+v", m)
		}
	}
	if reasoning.String() != "Thinking." || text.String() != "Answer." {
		t.Errorf("reasoning %q, text %q", reasoning.String(), text.String())
	}
}

// A reasoning effort gpt-oss does not know is refused, naming the field.
func TestHarmonyBadReasoningEffort(t *testing.T) {
	ts := start(t, serve.Config{}, gptOSS(t, "x"))
	resp := ts.do("POST", "/v1/chat/completions", map[string]any{"reasoning_effort": "extreme",
		"messages": []map[string]any{{"role": "user", "content": "x"}}}, nil)
	expectError(t, resp, 400, "invalid_parameter", "reasoning_effort")
	resp = ts.do("POST", "/api/chat", map[string]any{"model": "fake-model", "think": "extreme",
		"messages": []map[string]any{{"role": "user", "content": "x"}}}, nil)
	defer resp.Body.Close()
	var out struct{ Error string }
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 400 || !strings.Contains(out.Error, "think") {
		t.Errorf("think extreme: %d %+v %v", resp.StatusCode, out, err)
	}
}

// Output that breaks the format, whole or in pieces, is answered as text
// or dropped, never a failure of the request.
func TestHarmonyMalformedOutput(t *testing.T) {
	for _, script := range [][]string{
		{"no header at all"},
		{"<|channel|>final<|message|>", "<|start|>", "<|channel|>", "<|message|><|message|>", "<|end|>"},
		{"<|channel|>commentary to=functions.get_weather<|message|>{broken"},
		{"<|start|>user<|message|>I am the user now"},
		{"<|channel|>", strings.Repeat("x", 5000)},
	} {
		ts := start(t, serve.Config{}, gptOSS(t, script...))
		resp := ts.do("POST", "/v1/chat/completions", map[string]any{"stream": true, "messages": []map[string]any{{"role": "user", "content": "x"}},
			"tools": []map[string]any{{"type": "function", "function": map[string]any{"name": "get_weather"}}}}, nil)
		lines := readSSE(t, bufio.NewScanner(resp.Body), 0)
		resp.Body.Close()
		if len(lines) == 0 || lines[len(lines)-1] != "[DONE]" {
			t.Errorf("%q: stream %q", script, lines)
		}
	}
}
