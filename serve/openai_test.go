package serve_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/wgllm/wgllm/runtime/engine"
	"github.com/wgllm/wgllm/serve"
	"github.com/wgllm/wgllm/serve/servetest"
)

func (ts *testServer) openAI(key string) openai.Client {
	return openai.NewClient(option.WithBaseURL(ts.url("/v1/")), option.WithAPIKey(key),
		option.WithMaxRetries(0), option.WithRequestTimeout(30*time.Second))
}

func TestOpenAIClientChat(t *testing.T) {
	const key = "sk-local"
	ts := start(t, serve.Config{APIKey: key}, &servetest.Options{})
	client := ts.openAI(key)
	ctx := context.Background()
	params := openai.ChatCompletionNewParams{
		Model: "anything",
		Messages: []openai.ChatCompletionMessageParamUnion{
			openai.SystemMessage("You are terse."), openai.UserMessage("Say something"),
		},
		MaxTokens:   openai.Int(12),
		Temperature: openai.Float(0),
		Seed:        openai.Int(3),
	}
	resp, err := client.Chat.Completions.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Choices) != 1 || resp.Choices[0].Message.Content != wantText(12) ||
		resp.Choices[0].FinishReason != "length" || resp.Choices[0].Message.Role != "assistant" {
		t.Fatalf("chat completion %+v", resp)
	}
	if resp.Model != "fake-model" || !strings.HasPrefix(resp.ID, "chatcmpl-") || resp.Object != "chat.completion" ||
		resp.Usage.CompletionTokens != 12 || resp.Usage.PromptTokens == 0 ||
		resp.Usage.TotalTokens != resp.Usage.PromptTokens+12 {
		t.Errorf("chat completion metadata %+v usage %+v", resp, resp.Usage)
	}
	job := jobWithPrompt(t, ts.backend, "Say something")
	if job.Prompt != "<|system|>\nYou are terse.\n<|user|>\nSay something\n<|assistant|>\n" ||
		job.Sampling.Temperature != 0 || job.Sampling.Seed != 3 || job.MaxTokens != 12 {
		t.Errorf("engine job %+v", job)
	}

	// Streaming, with a stop string and the usage chunk.
	params.MaxTokens = openai.Int(50)
	params.Stop = openai.ChatCompletionNewParamsStopUnion{OfStringArray: []string{" w7"}}
	params.StreamOptions.IncludeUsage = openai.Bool(true)
	stream := client.Chat.Completions.NewStreaming(ctx, params)
	acc := openai.ChatCompletionAccumulator{}
	chunks, finish := 0, ""
	var usage openai.CompletionUsage
	for stream.Next() {
		chunk := stream.Current()
		acc.AddChunk(chunk)
		chunks++
		if len(chunk.Choices) > 0 && chunk.Choices[0].FinishReason != "" {
			finish = chunk.Choices[0].FinishReason
		}
		if chunk.Usage.TotalTokens > 0 {
			usage = chunk.Usage
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if got := acc.Choices[0].Message.Content; got != wantText(7) || finish != "stop" {
		t.Errorf("streamed %q finish %q, want %q stop", got, finish, wantText(7))
	}
	// role chunk + 7 pieces + finish chunk + usage chunk
	if chunks != 10 {
		t.Errorf("%d chunks, want 10", chunks)
	}
	if usage.CompletionTokens != 8 { // the 8th piece hit the stop string
		t.Errorf("usage %+v", usage)
	}
}

func TestOpenAIClientCompletions(t *testing.T) {
	ts := start(t, serve.Config{}, &servetest.Options{})
	client := ts.openAI("")
	ctx := context.Background()
	params := openai.CompletionNewParams{
		Model:     "fake-model",
		Prompt:    openai.CompletionNewParamsPromptUnion{OfString: openai.String("Once upon a time")},
		MaxTokens: openai.Int(9),
	}
	resp, err := client.Completions.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Choices) != 1 || resp.Choices[0].Text != wantText(9) || resp.Choices[0].FinishReason != "length" ||
		!strings.HasPrefix(resp.ID, "cmpl-") || resp.Usage.CompletionTokens != 9 {
		t.Fatalf("completion %+v", resp)
	}
	if got := jobWithPrompt(t, ts.backend, "Once upon").Prompt; got != "Once upon a time" {
		t.Errorf("engine prompt %q", got)
	}

	stream := client.Completions.NewStreaming(ctx, params)
	var text strings.Builder
	finish := ""
	for stream.Next() {
		c := stream.Current()
		if len(c.Choices) > 0 {
			text.WriteString(c.Choices[0].Text)
			if c.Choices[0].FinishReason != "" {
				finish = string(c.Choices[0].FinishReason)
			}
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if text.String() != wantText(9) || finish != "length" {
		t.Errorf("streamed %q finish %q", text.String(), finish)
	}

	models, err := client.Models.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(models.Data) != 1 || models.Data[0].ID != "fake-model" || models.Data[0].OwnedBy == "" {
		t.Errorf("models %+v", models.Data)
	}
	m, err := client.Models.Get(ctx, "fake-model")
	if err != nil || m.ID != "fake-model" {
		t.Errorf("model: %+v %v", m, err)
	}
}

func TestOpenAIClientErrors(t *testing.T) {
	ts := start(t, serve.Config{APIKey: "right"}, &servetest.Options{QueueLimit: 1})
	ctx := context.Background()
	var apiErr *openai.Error

	wrong := ts.openAI("wrong")
	_, err := wrong.Models.List(ctx)
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusUnauthorized || apiErr.Code != "invalid_api_key" {
		t.Errorf("wrong key: %v", err)
	}
	client := ts.openAI("right")
	_, err = client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:       "m",
		Messages:    []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
		Temperature: openai.Float(-0.5),
	})
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusBadRequest || apiErr.Param != "temperature" ||
		apiErr.Type != "invalid_request_error" || apiErr.Message == "" {
		t.Errorf("negative temperature: %v", err)
	}
	_, err = client.Models.Get(ctx, "other-model")
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusNotFound {
		t.Errorf("unknown model: %v", err)
	}

	// Busy: one job queued behind a paused engine fills the queue.
	ts.backend.SetPaused(true)
	resp := ts.do("POST", "/v1/requests", map[string]any{"prompt": "first", "max_tokens": 2},
		http.Header{"Authorization": {"Bearer right"}})
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("first request: %d", resp.StatusCode)
	}
	resp.Body.Close()
	stream := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
		Model: "m", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
	})
	for stream.Next() {
	}
	if err := stream.Err(); !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusTooManyRequests || apiErr.Code != "server_busy" {
		t.Errorf("busy stream: %v", err)
	}
	ts.backend.SetPaused(false)
}

// readSSE reads "data:" lines of a stream until [DONE] or EOF.
func readSSE(t *testing.T, sc *bufio.Scanner, n int) []string {
	t.Helper()
	var out []string
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			t.Fatalf("stream line %q", line)
		}
		out = append(out, data)
		if data == "[DONE]" || len(out) == n {
			break
		}
	}
	return out
}

func TestHTTPStreamShapesAndFailure(t *testing.T) {
	ts := start(t, serve.Config{}, &servetest.Options{FailOn: "FAIL"})
	resp := ts.do("POST", "/v1/chat/completions", map[string]any{"stream": true, "max_tokens": 2,
		"messages": []map[string]any{{"role": "user", "content": []map[string]string{{"type": "text", "text": "parts"}}}}}, nil)
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || ct != "text/event-stream" {
		t.Fatalf("status %d content type %q", resp.StatusCode, ct)
	}
	events := readSSE(t, bufio.NewScanner(resp.Body), 0)
	resp.Body.Close()
	if len(events) != 5 || events[4] != "[DONE]" {
		t.Fatalf("events %q", events)
	}
	var first, last struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Choices []struct {
			Delta        map[string]any `json:"delta"`
			FinishReason *string        `json:"finish_reason"`
		} `json:"choices"`
	}
	_ = json.Unmarshal([]byte(events[0]), &first)
	_ = json.Unmarshal([]byte(events[3]), &last)
	if first.Object != "chat.completion.chunk" || first.Choices[0].Delta["role"] != "assistant" || first.Choices[0].FinishReason != nil ||
		first.ID != "chatcmpl-"+resp.Header.Get("X-Request-Id") {
		t.Errorf("first chunk %s", events[0])
	}
	if last.Choices[0].FinishReason == nil || *last.Choices[0].FinishReason != "length" || len(last.Choices[0].Delta) != 0 {
		t.Errorf("last chunk %s", events[3])
	}
	if got := jobWithPrompt(t, ts.backend, "parts").Prompt; !strings.Contains(got, "<|user|>\nparts\n") {
		t.Errorf("content parts rendered as %q", got)
	}

	// A failure mid-stream is an OpenAI error object in the stream.
	resp = ts.do("POST", "/v1/completions", map[string]any{"stream": true, "prompt": "FAIL now", "max_tokens": 5}, nil)
	events = readSSE(t, bufio.NewScanner(resp.Body), 0)
	resp.Body.Close()
	if len(events) != 2 || !strings.Contains(events[1], `"code":"generation_failed"`) {
		t.Errorf("failed stream events %q", events)
	}
	// Without streaming: 500 with the error.
	resp = ts.do("POST", "/v1/completions", map[string]any{"prompt": "FAIL again", "max_tokens": 5}, nil)
	expectError(t, resp, http.StatusInternalServerError, "generation_failed", "")
}

// A client that goes away mid-stream has its job cancelled.
func TestHTTPStreamDisconnectCancels(t *testing.T) {
	ts := start(t, serve.Config{}, &servetest.Options{StepDelay: 5 * time.Millisecond})
	for _, stream := range []bool{true, false} {
		ctx, cancel := context.WithCancel(context.Background())
		prompt := "going away " + itoa(len(ts.backend.Jobs()))
		body := `{"stream":` + map[bool]string{true: "true", false: "false"}[stream] + `,"prompt":"` + prompt + `","max_tokens":4000}`
		req, _ := http.NewRequestWithContext(ctx, "POST", ts.url("/v1/completions"), strings.NewReader(body))
		done := make(chan struct{})
		go func() {
			defer close(done)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return
			}
			defer resp.Body.Close()
			if stream {
				readSSE(t, bufio.NewScanner(resp.Body), 2)
				cancel()
			}
		}()
		var job engine.Job
		waitFor(t, "the job to produce", 10*time.Second, func() bool {
			for _, j := range ts.backend.Jobs() {
				if j.Prompt == prompt {
					job = j
					st, _ := ts.backend.Status(j.ID)
					return len(st.Text) > 0
				}
			}
			return false
		})
		if !stream {
			cancel()
		}
		<-done
		waitFor(t, "the job to be cancelled", 10*time.Second, func() bool {
			st, _ := ts.backend.Status(job.ID)
			return st.State == engine.Cancelled
		})
	}
}

func TestHTTPValidation(t *testing.T) {
	ts := start(t, serve.Config{}, &servetest.Options{})
	many := make([]string, 17)
	for i := range many {
		many[i] = "s" + itoa(i)
	}
	cases := []struct {
		path  string
		body  any
		code  string
		param string
	}{
		{"/v1/completions", `{"prompt":"x","temperature":-1}`, "invalid_parameter", "temperature"},
		{"/v1/completions", `{"prompt":"x","temperature":NaN}`, "invalid_json", ""},
		{"/v1/completions", `{"prompt":"x","top_p":0}`, "invalid_parameter", "top_p"},
		{"/v1/completions", `{"prompt":"x","top_p":1.01}`, "invalid_parameter", "top_p"},
		{"/v1/completions", `{"prompt":"x","top_k":-1}`, "invalid_parameter", "top_k"},
		{"/v1/completions", `{"prompt":"x","min_p":1.5}`, "invalid_parameter", "min_p"},
		{"/v1/completions", `{"prompt":"x","max_tokens":0}`, "invalid_parameter", "max_tokens"},
		{"/v1/completions", `{"prompt":"x","max_tokens":-5}`, "invalid_parameter", "max_tokens"},
		{"/v1/completions", `{"prompt":"x","max_tokens":4097}`, "invalid_parameter", "max_tokens"},
		{"/v1/chat/completions", `{"messages":[{"role":"user","content":"x"}],"max_completion_tokens":0}`, "invalid_parameter", "max_completion_tokens"},
		{"/v1/completions", `{"prompt":"x","presence_penalty":3}`, "invalid_parameter", "presence_penalty"},
		{"/v1/completions", `{"prompt":"x","frequency_penalty":-2.5}`, "invalid_parameter", "frequency_penalty"},
		{"/v1/completions", `{"prompt":"x","repeat_penalty":0}`, "invalid_parameter", "repeat_penalty"},
		{"/v1/completions", `{"prompt":"x","seed":-2}`, "invalid_parameter", "seed"},
		{"/v1/completions", map[string]any{"prompt": "x", "stop": many}, "invalid_parameter", "stop"},
		{"/v1/completions", `{"prompt":"x","stop":[""]}`, "invalid_parameter", "stop"},
		{"/v1/completions", `{"prompt":"x","stop":5}`, "invalid_json", ""},
		{"/v1/completions", `{"prompt":"x","n":0}`, "invalid_parameter", "n"},
		{"/v1/completions", `{"prompt":"x","best_of":2}`, "unsupported_parameter", "best_of"},
		{"/v1/completions", `{"prompt":"x","echo":true}`, "unsupported_parameter", "echo"},
		{"/v1/completions", `{"prompt":[1,2,3]}`, "invalid_parameter", "prompt"},
		{"/v1/completions", `{"prompt":["a","b"]}`, "invalid_parameter", "prompt"},
		{"/v1/completions", `{"max_tokens":3}`, "invalid_parameter", "prompt"},
		{"/v1/completions", `{"messages":[{"role":"user","content":"x"}]}`, "invalid_parameter", "messages"},
		{"/v1/completions", ``, "invalid_json", ""},
		{"/v1/completions", `{"prompt":"x"}{"prompt":"y"}`, "invalid_json", ""},
		{"/v1/chat/completions", `{"messages":[]}`, "invalid_parameter", "messages"},
		{"/v1/chat/completions", `{"prompt":"x"}`, "invalid_parameter", "prompt"},
		{"/v1/chat/completions", `{"messages":[{"role":"robot","content":"x"}]}`, "invalid_parameter", "messages[0].role"},
		{"/v1/chat/completions", `{"messages":[{"role":"user","content":[{"type":"image_url"}]}]}`, "invalid_parameter", "messages[0].content"},
		{"/v1/requests", `{"prompt":"x","stream":true}`, "invalid_parameter", "stream"},
		{"/v1/requests", `{"prompt":"x","top_p":-1}`, "invalid_parameter", "top_p"},
	}
	for i, tc := range cases {
		resp := ts.do("POST", tc.path, tc.body, nil)
		t.Run(itoa(i)+"_"+tc.code, func(t *testing.T) {
			expectError(t, resp, http.StatusBadRequest, tc.code, tc.param)
		})
	}
	if n := len(ts.backend.Jobs()); n != 0 {
		t.Errorf("%d invalid requests reached the engine", n)
	}
	// Valid edge values pass.
	for _, body := range []string{
		`{"prompt":"x","max_tokens":4096,"temperature":0,"top_p":1,"min_p":0,"top_k":0,"seed":-1,"stop":"x"}`,
		`{"prompt":["x"],"max_tokens":1,"presence_penalty":-2,"frequency_penalty":2,"n":1,"model":"whatever"}`,
	} {
		resp := ts.do("POST", "/v1/requests", body, nil)
		if resp.StatusCode != http.StatusAccepted {
			expectError(t, resp, http.StatusAccepted, "", "")
		}
		var created map[string]string
		decode(t, resp, &created)
		ts.do("DELETE", "/v1/requests/"+created["id"], nil, nil).Body.Close()
	}
	// Unknown endpoints and methods.
	expectError(t, ts.do("GET", "/v1/nothing", nil, nil), http.StatusNotFound, "not_found", "")
	resp := ts.do("GET", "/v1/completions", nil, nil)
	if allow := resp.Header.Get("Allow"); allow != "POST" {
		t.Errorf("Allow %q", allow)
	}
	expectError(t, resp, http.StatusMethodNotAllowed, "method_not_allowed", "")
}

func TestBodyAndPromptLimits(t *testing.T) {
	ts := start(t, serve.Config{MaxBodyBytes: 1024, MaxPromptBytes: 200}, &servetest.Options{})
	big := `{"prompt":"` + strings.Repeat("x", 2000) + `"}`
	for _, path := range []string{"/v1/completions", "/v1/chat/completions", "/v1/requests"} {
		expectError(t, ts.do("POST", path, big, nil), http.StatusRequestEntityTooLarge, "body_too_large", "")
	}
	// Without Content-Length (the wrapper hides the size, so the body is
	// sent chunked) the limit holds too.
	req, _ := http.NewRequest("POST", ts.url("/v1/completions"), struct{ io.Reader }{strings.NewReader(big)})
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	expectError(t, resp, http.StatusRequestEntityTooLarge, "body_too_large", "")

	expectError(t, ts.do("POST", "/v1/completions", `{"prompt":"`+strings.Repeat("x", 201)+`"}`, nil),
		http.StatusRequestEntityTooLarge, "prompt_too_large", "prompt")
	expectError(t, ts.do("POST", "/v1/chat/completions",
		`{"messages":[{"role":"user","content":"`+strings.Repeat("x", 190)+`"}]}`, nil),
		http.StatusRequestEntityTooLarge, "prompt_too_large", "prompt") // over the limit once rendered
	resp = ts.do("POST", "/v1/completions", `{"max_tokens":2,"prompt":"`+strings.Repeat("x", 200)+`"}`, nil)
	if resp.StatusCode != http.StatusOK {
		expectError(t, resp, http.StatusOK, "", "")
	}
	resp.Body.Close()
}

func TestBusy(t *testing.T) {
	ts := start(t, serve.Config{}, &servetest.Options{QueueLimit: 2})
	ts.backend.SetPaused(true)
	for i := range 2 {
		resp := ts.do("POST", "/v1/requests", map[string]any{"prompt": "queued " + itoa(i), "max_tokens": 2}, nil)
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("request %d: status %d", i, resp.StatusCode)
		}
		resp.Body.Close()
	}
	for _, path := range []string{"/v1/requests", "/v1/completions"} {
		resp := ts.do("POST", path, map[string]any{"prompt": "one too many", "max_tokens": 2}, nil)
		if resp.Header.Get("Retry-After") == "" {
			t.Error("429 without Retry-After")
		}
		expectError(t, resp, http.StatusTooManyRequests, "server_busy", "")
	}
	c := ts.dialWS(nil, "")
	c.send(map[string]any{"type": "generate", "id": "b", "prompt": "x"})
	c.expectError("b", "server_busy")
	metrics := scrape(t, ts)
	for _, want := range []string{
		`wgllm_requests_total{endpoint="requests",outcome="busy"} 1`,
		`wgllm_requests_total{endpoint="completions",outcome="busy"} 1`,
		`wgllm_requests_total{endpoint="ws",outcome="busy"} 1`,
		"wgllm_queue_depth 2",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	ts.backend.SetPaused(false)
}

func TestHTTPAuthAndCORS(t *testing.T) {
	ts := start(t, serve.Config{APIKey: "k1"}, &servetest.Options{})
	expectError(t, ts.do("GET", "/v1/models", nil, nil), http.StatusUnauthorized, "invalid_api_key", "")
	resp := ts.do("GET", "/v1/models", nil, http.Header{"Authorization": {"Bearer k2"}})
	if resp.Header.Get("WWW-Authenticate") == "" {
		t.Error("401 without WWW-Authenticate")
	}
	expectError(t, resp, http.StatusUnauthorized, "invalid_api_key", "")
	expectError(t, ts.do("GET", "/v1/requests/x", nil, http.Header{"Authorization": {"Basic k1"}}), http.StatusUnauthorized, "invalid_api_key", "")
	expectError(t, ts.do("POST", "/v1/requests", `{"prompt":"x"}`, nil), http.StatusUnauthorized, "invalid_api_key", "")
	resp = ts.do("GET", "/v1/models", nil, http.Header{"Authorization": {"bearer k1"}, "Origin": {"http://localhost:3000"}})
	if resp.StatusCode != http.StatusOK {
		t.Errorf("right key: %d", resp.StatusCode)
	}
	if acao := resp.Header.Get("Access-Control-Allow-Origin"); acao != "" {
		t.Errorf("CORS is off by default, yet Access-Control-Allow-Origin %q", acao)
	}
	resp.Body.Close()
	// Health, metrics and the page stay open.
	for _, path := range []string{"/health", "/metrics"} {
		resp := ts.do("GET", path, nil, nil)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s without key: %d", path, resp.StatusCode)
		}
		resp.Body.Close()
	}

	cors := start(t, serve.Config{CORSOrigins: []string{"https://app.example"}}, &servetest.Options{})
	pre := cors.do("OPTIONS", "/v1/chat/completions", nil, http.Header{"Origin": {"https://app.example"},
		"Access-Control-Request-Method": {"POST"}, "Access-Control-Request-Headers": {"authorization,content-type"}})
	pre.Body.Close()
	if pre.StatusCode != http.StatusNoContent || pre.Header.Get("Access-Control-Allow-Origin") != "https://app.example" ||
		!strings.Contains(pre.Header.Get("Access-Control-Allow-Headers"), "Authorization") ||
		!strings.Contains(pre.Header.Get("Access-Control-Allow-Methods"), "POST") {
		t.Errorf("preflight: %d %v", pre.StatusCode, pre.Header)
	}
	resp = cors.do("GET", "/v1/models", nil, http.Header{"Origin": {"https://app.example"}})
	resp.Body.Close()
	if resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example" {
		t.Errorf("CORS GET headers %v", resp.Header)
	}
	expectError(t, cors.do("OPTIONS", "/v1/models", nil, http.Header{"Origin": {"https://evil.example"},
		"Access-Control-Request-Method": {"GET"}}), http.StatusForbidden, "origin_not_allowed", "")
	// Another site's page is refused outright (TestCrossSitePostRefused).
	resp = cors.do("GET", "/v1/models", nil, http.Header{"Origin": {"https://evil.example"}})
	if resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Error("CORS headers for an origin not configured")
	}
	expectError(t, resp, http.StatusForbidden, "origin_not_allowed", "")
}
