package serve_test

import (
	"bufio"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/shared"
	"github.com/wgllm/wgllm/runtime/chat"
	"github.com/wgllm/wgllm/runtime/engine"
	"github.com/wgllm/wgllm/serve"
	"github.com/wgllm/wgllm/serve/servetest"
)

// scripted is a fake engine whose model writes script, a piece a token,
// in the Hermes format with thinking (as a Qwen 3 would).
func scripted(script ...string) *servetest.Options {
	return &servetest.Options{
		ChatFormat: chat.Format{Tools: chat.Hermes, Thinking: true},
		Piece: func(_ engine.Job, i int) string {
			if i < len(script) {
				return script[i]
			}
			return ""
		},
		EOSAfter: len(script),
	}
}

var weatherCall = []string{"<think>", "Paris is", " a city.", "</think>", "\n\nLet me look.", "\n<tool_", "call>\n{\"name\": \"get_weather\", ",
	"\"arguments\": {\"city\": \"Paris\"}}\n</tool_call>", "\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>"}

func weatherTools() []openai.ChatCompletionToolUnionParam {
	return []openai.ChatCompletionToolUnionParam{
		openai.ChatCompletionFunctionTool(shared.FunctionDefinitionParam{Name: "get_weather", Description: openai.String("Weather in a city"),
			Parameters: shared.FunctionParameters{"type": "object", "properties": map[string]any{"city": map[string]any{"type": "string"}}, "required": []string{"city"}}}),
		openai.ChatCompletionFunctionTool(shared.FunctionDefinitionParam{Name: "get_time"}),
	}
}

// The openai-go client gets tool calls, reasoning and the text apart, whole
// and streamed, and the tools reach the template.
func TestOpenAIToolCalls(t *testing.T) {
	ts := start(t, serve.Config{}, scripted(weatherCall...))
	client := ts.openAI("")
	ctx := context.Background()
	params := openai.ChatCompletionNewParams{Model: "m", Tools: weatherTools(),
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Weather in Paris?")}}
	res, err := client.Chat.Completions.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	c := res.Choices[0]
	if c.FinishReason != "tool_calls" || c.Message.Content != "Let me look." || len(c.Message.ToolCalls) != 2 {
		t.Fatalf("choice: %+v", c)
	}
	if got := c.Message.JSON.ExtraFields["reasoning_content"].Raw(); got != `"Paris is a city."` {
		t.Errorf("reasoning_content %s", got)
	}
	tc := c.Message.ToolCalls[0]
	if tc.Type != "function" || !strings.HasPrefix(tc.ID, "call_") || tc.Function.Name != "get_weather" || tc.Function.Arguments != `{"city":"Paris"}` {
		t.Errorf("first call: %+v", tc)
	}
	if c.Message.ToolCalls[1].Function.Name != "get_time" || c.Message.ToolCalls[1].ID == tc.ID {
		t.Errorf("second call: %+v", c.Message.ToolCalls[1])
	}
	prompt := ts.backend.Jobs()[0].Prompt
	if !strings.HasPrefix(prompt, "<|tools|>\n{") || !strings.Contains(prompt, `"name":"get_weather","description":"Weather in a city"`) {
		t.Errorf("the tools did not reach the template: %q", prompt)
	}

	// Streamed: the accumulated chunks are the same answer.
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
			reasoning.WriteString(s)
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	sc := acc.Choices[0]
	if sc.FinishReason != "tool_calls" || sc.Message.Content != "Let me look." || len(sc.Message.ToolCalls) != 2 ||
		sc.Message.ToolCalls[0].Function.Arguments != `{"city":"Paris"}` || sc.Message.ToolCalls[1].Function.Name != "get_time" {
		t.Errorf("streamed: %+v", sc)
	}
	if reasoning.String() != "Paris is a city." {
		t.Errorf("streamed reasoning %q", reasoning.String())
	}

	// parallel_tool_calls false: the first call only.
	params.ParallelToolCalls = openai.Bool(false)
	res, err = client.Chat.Completions.New(ctx, params)
	if err != nil || len(res.Choices[0].Message.ToolCalls) != 1 {
		t.Fatalf("parallel_tool_calls false: %v %+v", err, res)
	}
}

// The streamed deltas of a call are OpenAI's: index, id, type and name
// first (arguments ""), then the arguments.
func TestOpenAIToolCallDeltaShape(t *testing.T) {
	ts := start(t, serve.Config{}, scripted(`<tool_call>{"name": "get_time", "arguments": {"tz": "UTC"}}</tool_call>`))
	resp := ts.do("POST", "/v1/chat/completions", map[string]any{"stream": true, "messages": []map[string]any{{"role": "user", "content": "time?"}},
		"tools": []map[string]any{{"type": "function", "function": map[string]any{"name": "get_time"}}}}, nil)
	defer resp.Body.Close()
	lines := readSSE(t, bufio.NewScanner(resp.Body), 0)
	var deltas []string
	var finish []string
	for _, l := range lines {
		if l == "[DONE]" {
			continue
		}
		var chunk struct {
			Choices []struct {
				Delta        json.RawMessage `json:"delta"`
				FinishReason *string         `json:"finish_reason"`
			} `json:"choices"`
		}
		if err := json.Unmarshal([]byte(l), &chunk); err != nil {
			t.Fatal(err)
		}
		deltas = append(deltas, string(chunk.Choices[0].Delta))
		if r := chunk.Choices[0].FinishReason; r != nil {
			finish = append(finish, *r)
		}
	}
	if len(deltas) != 4 || !strings.HasPrefix(deltas[0], `{"role":"assistant"`) {
		t.Fatalf("deltas: %q", deltas)
	}
	var head, args struct {
		ToolCalls []map[string]any `json:"tool_calls"`
	}
	_ = json.Unmarshal([]byte(deltas[1]), &head)
	_ = json.Unmarshal([]byte(deltas[2]), &args)
	h := head.ToolCalls[0]
	fn, _ := h["function"].(map[string]any)
	if h["index"] != 0.0 || h["type"] != "function" || !strings.HasPrefix(h["id"].(string), "call_") || fn["name"] != "get_time" || fn["arguments"] != "" {
		t.Errorf("first delta of the call: %s", deltas[1])
	}
	a := args.ToolCalls[0]
	fa, _ := a["function"].(map[string]any)
	if a["index"] != 0.0 || a["id"] != nil || fa["arguments"] != `{"tz":"UTC"}` || fa["name"] != nil {
		t.Errorf("arguments delta: %s", deltas[2])
	}
	if strings.Join(finish, ",") != "tool_calls" {
		t.Errorf("finish reasons %v", finish)
	}
}

// A named tool_choice opens the call in the prompt and constrains the
// rest by the call's grammar (the fake engine writes a call as the
// grammar would let it); a required call that does not come is an error,
// not a text answer.
func TestRequiredAndNamedToolChoice(t *testing.T) {
	ts := start(t, serve.Config{}, scripted(`{"name": "get_weather", "arguments": {"city": "Oslo"}}`))
	client := ts.openAI("")
	ctx := context.Background()
	params := openai.ChatCompletionNewParams{Model: "m", Tools: weatherTools(),
		Messages:   []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Oslo?")},
		ToolChoice: openai.ChatCompletionToolChoiceOptionUnionParam{OfFunctionToolChoice: &openai.ChatCompletionNamedToolChoiceParam{Function: openai.ChatCompletionNamedToolChoiceFunctionParam{Name: "get_weather"}}}}
	res, err := client.Chat.Completions.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	if calls := res.Choices[0].Message.ToolCalls; len(calls) != 1 || calls[0].Function.Name != "get_weather" || calls[0].Function.Arguments != `{"city":"Oslo"}` {
		t.Fatalf("named call: %+v", res.Choices[0].Message)
	}
	job := ts.backend.Jobs()[0]
	if !strings.HasSuffix(job.Prompt, "<|assistant|>\n<tool_call>\n") || job.Grammar == nil {
		t.Errorf("the call is not opened and constrained: prompt %q, grammar %v", job.Prompt, job.Grammar)
	}

	ts2 := start(t, serve.Config{}, scripted("I will not call anything."))
	resp := ts2.do("POST", "/v1/chat/completions", map[string]any{"tool_choice": "required",
		"messages": []map[string]any{{"role": "user", "content": "x"}},
		"tools":    []map[string]any{{"type": "function", "function": map[string]any{"name": "f"}}}}, nil)
	expectError(t, resp, 500, "invalid_tool_call", "")
}

// A conversation with calls and their answers reaches the template; a
// call's arguments must be a JSON object.
func TestToolHistory(t *testing.T) {
	ts := start(t, serve.Config{}, scripted("It is sunny."))
	body := map[string]any{"messages": []map[string]any{
		{"role": "user", "content": "Weather?"},
		{"role": "assistant", "content": nil, "tool_calls": []map[string]any{{"id": "c1", "type": "function",
			"function": map[string]any{"name": "get_weather", "arguments": `{"city":"Bern"}`}}}},
		{"role": "tool", "tool_call_id": "c1", "content": "sunny"},
	}}
	var res struct {
		Choices []struct {
			Message struct{ Content string }
		}
	}
	decode(t, ts.do("POST", "/v1/chat/completions", body, nil), &res)
	if res.Choices[0].Message.Content != "It is sunny." {
		t.Errorf("answer %+v", res)
	}
	want := "<|user|>\nWeather?\n<|assistant|>\n\n<tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\":\"Bern\"}}</tool_call>\n<|tool|> c1\nsunny\n<|assistant|>\n"
	if p := ts.backend.Jobs()[0].Prompt; p != want {
		t.Errorf("prompt %q, want %q", p, want)
	}
	body["messages"].([]map[string]any)[1]["tool_calls"].([]map[string]any)[0]["function"].(map[string]any)["arguments"] = `[1]`
	expectError(t, ts.do("POST", "/v1/chat/completions", body, nil), 400, "invalid_parameter", "messages[1].tool_calls[0].function.arguments")
}

// Ollama's chat: tools, calls with object arguments, think.
func TestOllamaToolsAndThinking(t *testing.T) {
	ts := start(t, serve.Config{}, scripted(weatherCall...))
	body := map[string]any{"model": "fake-model", "stream": false, "think": true,
		"messages": []map[string]any{{"role": "user", "content": "Weather in Paris?"}},
		"tools":    []map[string]any{{"type": "function", "function": map[string]any{"name": "get_weather"}}, {"type": "function", "function": map[string]any{"name": "get_time"}}}}
	var res struct {
		Message struct {
			Content, Thinking string
			ToolCalls         []struct {
				Function struct {
					Name      string
					Arguments map[string]any
				}
			} `json:"tool_calls"`
		}
		DoneReason string `json:"done_reason"`
	}
	decode(t, ts.do("POST", "/api/chat", body, nil), &res)
	m := res.Message
	if m.Content != "Let me look." || m.Thinking != "Paris is a city." || len(m.ToolCalls) != 2 ||
		m.ToolCalls[0].Function.Name != "get_weather" || m.ToolCalls[0].Function.Arguments["city"] != "Paris" || res.DoneReason != "stop" {
		t.Errorf("answer %+v", res)
	}
	if p := ts.backend.Jobs()[0].Prompt; !strings.Contains(p, "<|thinking|> true") {
		t.Errorf("think did not reach the template: %q", p)
	}

	// Streamed, think false: no thinking, the calls on their own lines.
	body["stream"], body["think"] = true, false
	var calls int
	var thinking, content string
	for _, l := range ndjson(t, ts.do("POST", "/api/chat", body, nil)) {
		msg, _ := l["message"].(map[string]any)
		tc, _ := msg["tool_calls"].([]any)
		calls += len(tc)
		th, _ := msg["thinking"].(string)
		c, _ := msg["content"].(string)
		thinking += th
		content += c
	}
	if calls != 2 || thinking != "" || content != "Let me look." {
		t.Errorf("streamed: %d calls, thinking %q, content %q", calls, thinking, content)
	}

	// Without think, the thinking stays in the text (Ollama's default).
	delete(body, "think")
	body["stream"] = false
	res.Message.Thinking = ""
	decode(t, ts.do("POST", "/api/chat", body, nil), &res)
	if !strings.HasPrefix(res.Message.Content, "<think>Paris is a city.</think>") || res.Message.Thinking != "" {
		t.Errorf("without think: %+v", res.Message)
	}
}

// A prompt over the context is OpenAI's context_length_exceeded, on the
// field that holds it.
func TestContextLengthExceeded(t *testing.T) {
	ts := start(t, serve.Config{}, &servetest.Options{ContextLength: 8})
	long := strings.Repeat("word ", 10)
	expectError(t, ts.do("POST", "/v1/chat/completions", map[string]any{"messages": []map[string]any{{"role": "user", "content": long}}}, nil),
		400, "context_length_exceeded", "messages")
	expectError(t, ts.do("POST", "/v1/completions", map[string]any{"prompt": long}, nil), 400, "context_length_exceeded", "prompt")
}

// The websocket: reasoning and tool calls as their own messages.
func TestWebsocketToolCalls(t *testing.T) {
	ts := start(t, serve.Config{}, scripted(weatherCall...))
	c := ts.dialWS(nil, "") // reads the hello
	c.send(map[string]any{"type": "chat", "id": "t1", "messages": []map[string]any{{"role": "user", "content": "Weather?"}},
		"tools": []map[string]any{{"type": "function", "function": map[string]any{"name": "get_weather"}}, {"type": "function", "function": map[string]any{"name": "get_time"}}}})
	var reasoning, text string
	var calls []string
	for {
		m := c.read()
		switch m.Type {
		case "reasoning":
			reasoning += m.Text
		case "token":
			text += m.Text
		case "tool_call":
			calls = append(calls, m.Call.Name+string(m.Call.Arguments))
			if !strings.HasPrefix(m.Call.ID, "call_") {
				t.Errorf("call id %q", m.Call.ID)
			}
		case "done":
			if m.FinishReason != "tool_calls" || reasoning != "Paris is a city." || text != "Let me look." ||
				strings.Join(calls, "|") != `get_weather{"city":"Paris"}|get_time{}` {
				t.Errorf("done %q: reasoning %q, text %q, calls %v", m.FinishReason, reasoning, text, calls)
			}
			return
		default:
			t.Fatalf("unexpected message %+v", m)
		}
	}
}

// /api/show lists tools and thinking among the capabilities where the
// template supports them (Ollama's clients check before sending tools).
func TestOllamaShowCapabilities(t *testing.T) {
	ts := start(t, serve.Config{}, nil)
	ts.backend = servetest.New(servetest.Options{})
	info := serve.ModelInfo{Name: "fake-model", Template: "{% if tools %}<tool_call>{% endif %}<think>"}
	ts.srv.SetBackend(describedBackend{ts.backend, info})
	var show struct{ Capabilities []string }
	decode(t, ts.do("POST", "/api/show", `{"model":"fake-model"}`, nil), &show)
	if strings.Join(show.Capabilities, ",") != "completion,tools,thinking" {
		t.Errorf("capabilities %v", show.Capabilities)
	}
}
