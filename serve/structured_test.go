package serve_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/shared"
	"github.com/wgllm/wgllm/runtime/grammar"
	"github.com/wgllm/wgllm/serve"
	"github.com/wgllm/wgllm/serve/servetest"
)

// response_format and Ollama's format reach the engine as a grammar;
// logit_bias as token ids.
func TestStructuredOutputReachesTheJob(t *testing.T) {
	ts := start(t, serve.Config{}, &servetest.Options{})
	client := ts.openAI("")
	ctx := context.Background()
	schema := map[string]any{"type": "object", "properties": map[string]any{"n": map[string]any{"type": "integer"}},
		"required": []string{"n"}, "additionalProperties": false}
	_, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:    "m",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("schema please")},
		ResponseFormat: openai.ChatCompletionNewParamsResponseFormatUnion{OfJSONSchema: &shared.ResponseFormatJSONSchemaParam{
			JSONSchema: shared.ResponseFormatJSONSchemaJSONSchemaParam{Name: "n", Schema: schema, Strict: openai.Bool(true)}}},
		LogitBias: map[string]int64{"42": -100, "7": 5},
		MaxTokens: openai.Int(3),
	})
	if err != nil {
		t.Fatal(err)
	}
	job := jobWithPrompt(t, ts.backend, "schema please")
	if job.Grammar == nil || job.Grammar == grammar.JSON() {
		t.Errorf("json_schema: job grammar %v, want the schema's", job.Grammar)
	}
	if len(job.LogitBias) != 2 || job.LogitBias[42] != -100 || job.LogitBias[7] != 5 {
		t.Errorf("logit_bias %v", job.LogitBias)
	}
	_, err = client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:          "m",
		Messages:       []openai.ChatCompletionMessageParamUnion{openai.UserMessage("object please")},
		ResponseFormat: openai.ChatCompletionNewParamsResponseFormatUnion{OfJSONObject: &shared.ResponseFormatJSONObjectParam{}},
		MaxTokens:      openai.Int(3),
	})
	if err != nil {
		t.Fatal(err)
	}
	if job := jobWithPrompt(t, ts.backend, "object please"); job.Grammar != grammar.JSON() {
		t.Errorf("json_object: job grammar %v, want JSON mode", job.Grammar)
	}
	for _, body := range []string{
		`{"model":"fake-model","prompt":"ollama json","format":"json","stream":false,"options":{"num_predict":2}}`,
		`{"model":"fake-model","prompt":"ollama schema","format":{"type":"array","items":{"type":"boolean"}},"stream":false,"options":{"num_predict":2}}`,
	} {
		resp := ts.do("POST", "/api/generate", body, nil)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: status %d", body, resp.StatusCode)
		}
	}
	if job := jobWithPrompt(t, ts.backend, "ollama json"); job.Grammar != grammar.JSON() {
		t.Errorf("format json: grammar %v", job.Grammar)
	}
	if job := jobWithPrompt(t, ts.backend, "ollama schema"); job.Grammar == nil || job.Grammar == grammar.JSON() {
		t.Errorf("format schema: grammar %v", job.Grammar)
	}
	// Tools and a response format together are refused.
	resp := ts.do("POST", "/v1/chat/completions", `{"messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_object"},"tools":[{"type":"function","function":{"name":"f"}}]}`, nil)
	expectError(t, resp, 400, "unsupported_parameter", "response_format")
}

// Logprobs in OpenAI's shapes, read by the official client: chat whole and
// streamed, and legacy completions.
func TestLogprobsShapes(t *testing.T) {
	ts := start(t, serve.Config{}, &servetest.Options{})
	client := ts.openAI("")
	ctx := context.Background()
	params := openai.ChatCompletionNewParams{
		Model:       "m",
		Messages:    []openai.ChatCompletionMessageParamUnion{openai.UserMessage("lp")},
		MaxTokens:   openai.Int(4),
		Logprobs:    openai.Bool(true),
		TopLogprobs: openai.Int(2),
	}
	resp, err := client.Chat.Completions.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	checkContent := func(what string, lps []openai.ChatCompletionTokenLogprob, text string) {
		t.Helper()
		var joined strings.Builder
		for i, lp := range lps {
			want := servetest.FakeLogprob(i, lp.Token, 2)
			joined.WriteString(lp.Token)
			if lp.Logprob != float64(want.Logprob) || string(intsBytes(lp.Bytes)) != lp.Token || len(lp.TopLogprobs) != 2 ||
				lp.TopLogprobs[0].Token != lp.Token || lp.TopLogprobs[1].Token != "alt1" || lp.TopLogprobs[1].Logprob != float64(want.Logprob)-1 {
				t.Errorf("%s: token %d: %+v", what, i, lp)
			}
		}
		if joined.String() != text {
			t.Errorf("%s: tokens %q, text %q", what, joined.String(), text)
		}
	}
	if len(resp.Choices[0].Logprobs.Content) != 4 {
		t.Fatalf("%d logprobs for 4 tokens: %+v", len(resp.Choices[0].Logprobs.Content), resp.Choices[0].Logprobs)
	}
	checkContent("whole", resp.Choices[0].Logprobs.Content, resp.Choices[0].Message.Content)

	stream := client.Chat.Completions.NewStreaming(ctx, params)
	var streamed []openai.ChatCompletionTokenLogprob
	var text strings.Builder
	for stream.Next() {
		c := stream.Current()
		if len(c.Choices) > 0 {
			streamed = append(streamed, c.Choices[0].Logprobs.Content...)
			text.WriteString(c.Choices[0].Delta.Content)
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	checkContent("streamed", streamed, text.String())

	// Legacy completions: logprobs is the number of alternatives.
	body := `{"prompt":"legacy","max_tokens":3,"logprobs":2}`
	r := ts.do("POST", "/v1/completions", body, nil)
	defer r.Body.Close()
	var out struct {
		Choices []struct {
			Text     string `json:"text"`
			Logprobs struct {
				Tokens        []string             `json:"tokens"`
				TokenLogprobs []float64            `json:"token_logprobs"`
				TopLogprobs   []map[string]float64 `json:"top_logprobs"`
				TextOffset    []int                `json:"text_offset"`
			} `json:"logprobs"`
		} `json:"choices"`
	}
	if err := json.NewDecoder(r.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	lp := out.Choices[0].Logprobs
	if strings.Join(lp.Tokens, "") != out.Choices[0].Text || len(lp.TokenLogprobs) != 3 || len(lp.TopLogprobs) != 3 ||
		lp.TextOffset[0] != 0 || lp.TextOffset[1] != len(lp.Tokens[0]) || len(lp.TopLogprobs[1]) != 2 || lp.TokenLogprobs[2] != -0.25 {
		t.Errorf("legacy logprobs %+v for %q", lp, out.Choices[0].Text)
	}
}

// Ollama's logprobs: on every streamed line with tokens, and whole.
func TestOllamaLogprobs(t *testing.T) {
	ts := start(t, serve.Config{}, &servetest.Options{})
	resp := ts.do("POST", "/api/generate", `{"model":"fake-model","prompt":"x","raw":true,"logprobs":true,"top_logprobs":1,"options":{"num_predict":3}}`, nil)
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	var tokens []string
	var text strings.Builder
	for sc.Scan() {
		var line struct {
			Response string `json:"response"`
			Logprobs []struct {
				Token       string  `json:"token"`
				Logprob     float64 `json:"logprob"`
				TopLogprobs []struct {
					Token string `json:"token"`
				} `json:"top_logprobs"`
			} `json:"logprobs"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatal(err)
		}
		text.WriteString(line.Response)
		for _, lp := range line.Logprobs {
			if len(lp.TopLogprobs) != 1 || lp.TopLogprobs[0].Token != lp.Token {
				t.Errorf("line %s", sc.Text())
			}
			tokens = append(tokens, lp.Token)
		}
	}
	if len(tokens) != 3 || strings.Join(tokens, "") != text.String() {
		t.Errorf("tokens %q, text %q", tokens, text.String())
	}
	whole := ts.do("POST", "/api/chat", `{"model":"fake-model","messages":[{"role":"user","content":"x"}],"stream":false,"logprobs":true,"options":{"num_predict":2}}`, nil)
	defer whole.Body.Close()
	var out struct {
		Message  struct{ Content string } `json:"message"`
		Logprobs []struct{ Token string } `json:"logprobs"`
	}
	if err := json.NewDecoder(whole.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	if len(out.Logprobs) != 2 || out.Logprobs[0].Token+out.Logprobs[1].Token != out.Message.Content {
		t.Errorf("whole chat: %+v", out)
	}
	if whole.StatusCode != http.StatusOK {
		t.Errorf("status %d", whole.StatusCode)
	}
}

func intsBytes(v []int64) []byte {
	b := make([]byte, len(v))
	for i, x := range v {
		b[i] = byte(x)
	}
	return b
}

// n > 1: n jobs with consecutive seeds, one response whose choices are
// indexed, whole and streamed (through the official client), usage
// counting the prompt once.
func TestSeveralChoices(t *testing.T) {
	ts := start(t, serve.Config{}, &servetest.Options{})
	client := ts.openAI("")
	ctx := context.Background()
	params := openai.ChatCompletionNewParams{
		Model:     "m",
		Messages:  []openai.ChatCompletionMessageParamUnion{openai.UserMessage("three please")},
		MaxTokens: openai.Int(4),
		N:         openai.Int(3),
		Seed:      openai.Int(10),
	}
	resp, err := client.Chat.Completions.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Choices) != 3 || resp.Usage.CompletionTokens != 12 {
		t.Fatalf("%d choices, usage %+v", len(resp.Choices), resp.Usage)
	}
	for i, c := range resp.Choices {
		if c.Index != int64(i) || c.Message.Content != wantText(4) {
			t.Errorf("choice %d: %+v", i, c)
		}
	}
	seeds := map[uint64]bool{}
	for _, j := range ts.backend.Jobs() {
		if strings.Contains(j.Prompt, "three please") {
			seeds[j.Sampling.Seed] = true
		}
	}
	if len(seeds) != 3 || !seeds[10] || !seeds[11] || !seeds[12] {
		t.Errorf("seeds %v, want 10, 11, 12", seeds)
	}
	params.StreamOptions.IncludeUsage = openai.Bool(true)
	stream := client.Chat.Completions.NewStreaming(ctx, params)
	acc := openai.ChatCompletionAccumulator{}
	usageChunks := 0
	var ids []string
	for stream.Next() {
		c := stream.Current()
		acc.AddChunk(c)
		ids = append(ids, c.ID)
		if c.Usage.TotalTokens > 0 {
			usageChunks++
			if c.Usage.CompletionTokens != 12 {
				t.Errorf("streamed usage %+v", c.Usage)
			}
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if len(acc.Choices) != 3 || usageChunks != 1 {
		t.Fatalf("streamed %d choices, %d usage chunks", len(acc.Choices), usageChunks)
	}
	for i, c := range acc.Choices {
		if c.Message.Content != wantText(4) || c.FinishReason != "length" {
			t.Errorf("streamed choice %d: %q %q", i, c.Message.Content, c.FinishReason)
		}
	}
	for _, id := range ids {
		if id != ids[0] {
			t.Fatalf("chunks of one response carry ids %q and %q", ids[0], id)
		}
	}
	expectError(t, ts.do("POST", "/v1/chat/completions", `{"messages":[{"role":"user","content":"x"}],"n":9}`, nil), 400, "invalid_parameter", "n")
}
