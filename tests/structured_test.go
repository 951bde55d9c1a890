package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/shared"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/wgllm/wgllm/runtime/engine"
	"github.com/wgllm/wgllm/serve"
	"github.com/wgllm/wgllm/web"
)

const personSchema = `{"type":"object","properties":{"name":{"type":"string","maxLength":24},"age":{"type":"integer"},` +
	`"tribe":{"enum":["Judah","Levi","Dan"]},"sons":{"type":"array","items":{"type":"string","maxLength":12},"maxItems":2}},` +
	`"required":["name","age","tribe","sons"],"additionalProperties":false}`

func validates(t *testing.T, where, schema, text string) {
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
	v, err := jsonschema.UnmarshalJSON(strings.NewReader(text))
	if err != nil {
		t.Errorf("%s: %q does not parse: %v", where, text, err)
		return
	}
	if err := s.Validate(v); err != nil {
		t.Errorf("%s: %q does not validate: %v", where, text, err)
	}
}

// The bundled model answers in the schema's shape through every door: the
// official OpenAI client (json_schema, two choices), Ollama's /api/chat
// (format: a schema) and the websocket (json_object), all at once; then
// logprobs, and embeddings equal to the engine's own.
func TestServerStructuredOutputLogprobsEmbeddings(t *testing.T) {
	ls := startServerWith(t, "../models/kjv-30m-q4_k_m.gguf", 4, serve.Config{Static: web.FS()}, nil)
	client := openai.NewClient(option.WithBaseURL(ls.base+"/v1/"), option.WithAPIKey("unused"), option.WithMaxRetries(0),
		option.WithRequestTimeout(5*time.Minute))
	ctx := context.Background()
	var schema map[string]any
	if err := json.Unmarshal([]byte(personSchema), &schema); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(3)
	go func() {
		defer wg.Done()
		resp, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model:    "test-model",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Who begat whom?")},
			ResponseFormat: openai.ChatCompletionNewParamsResponseFormatUnion{OfJSONSchema: &shared.ResponseFormatJSONSchemaParam{
				JSONSchema: shared.ResponseFormatJSONSchemaJSONSchemaParam{Name: "person", Schema: schema, Strict: openai.Bool(true)}}},
			MaxTokens:   openai.Int(48),
			Temperature: openai.Float(0.9),
			Seed:        openai.Int(7),
			N:           openai.Int(2),
		})
		if err != nil {
			t.Error(err)
			return
		}
		if len(resp.Choices) != 2 {
			t.Errorf("%d choices, want 2", len(resp.Choices))
		}
		for _, c := range resp.Choices {
			validates(t, "openai json_schema", personSchema, c.Message.Content)
		}
	}()
	go func() {
		defer wg.Done()
		body := `{"model":"test-model","stream":false,"messages":[{"role":"user","content":"Name a son of Jacob"}],` +
			`"format":` + personSchema + `,"options":{"num_predict":48,"temperature":0}}`
		resp, err := http.Post(ls.base+"/api/chat", "application/json", strings.NewReader(body))
		if err != nil {
			t.Error(err)
			return
		}
		defer resp.Body.Close()
		var out struct {
			Message struct{ Content string } `json:"message"`
			Error   string                   `json:"error"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.Error != "" {
			t.Errorf("ollama chat: %v %s", err, out.Error)
			return
		}
		validates(t, "ollama format", personSchema, out.Message.Content)
	}()
	go func() {
		defer wg.Done()
		c := ls.dial(t)
		req := map[string]any{"type": "chat", "id": "j", "max_tokens": 32, "temperature": 0,
			"messages":        []map[string]string{{"role": "user", "content": "And God said"}},
			"response_format": map[string]string{"type": "json_object"}}
		if err := c.WriteJSON(req); err != nil {
			t.Error(err)
			return
		}
		text, last := collect(t, c, "j")
		if last["j"].Type != "done" {
			t.Errorf("websocket: %+v", last["j"])
		}
		var obj map[string]any
		if err := json.Unmarshal([]byte(text["j"]), &obj); err != nil {
			t.Errorf("websocket json_object: %q: %v", text["j"], err)
		}
	}()
	wg.Wait()

	// Logprobs of a greedy answer: the tokens are the text, each the top
	// alternative.
	lp, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:       "test-model",
		Messages:    []openai.ChatCompletionMessageParamUnion{openai.UserMessage("In the beginning")},
		MaxTokens:   openai.Int(6),
		Temperature: openai.Float(0),
		Logprobs:    openai.Bool(true),
		TopLogprobs: openai.Int(3),
	})
	if err != nil {
		t.Fatal(err)
	}
	var joined strings.Builder
	for _, c := range lp.Choices[0].Logprobs.Content {
		joined.WriteString(c.Token)
		if len(c.TopLogprobs) != 3 || c.TopLogprobs[0].Token != c.Token || c.Logprob > 0 || c.TopLogprobs[1].Logprob > c.Logprob {
			t.Errorf("logprob %+v", c)
		}
	}
	if joined.String() != lp.Choices[0].Message.Content || len(lp.Choices[0].Logprobs.Content) != int(lp.Usage.CompletionTokens) {
		t.Errorf("logprob tokens %q for %q (%d tokens)", joined.String(), lp.Choices[0].Message.Content, lp.Usage.CompletionTokens)
	}

	// Embeddings: the API's vectors are the engine's.
	inputs := []string{"In the beginning God created the heaven and the earth.", "Jesus wept."}
	emb, err := client.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: "test-model",
		Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: inputs}})
	if err != nil {
		t.Fatal(err)
	}
	want, err := ls.eng.Embed(ctx, engine.EmbedRequest{Inputs: []engine.EmbedInput{{Text: inputs[0]}, {Text: inputs[1]}}, Normalize: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := range inputs {
		got := emb.Data[i].Embedding
		if len(got) != len(want.Vectors[i]) {
			t.Fatalf("input %d: %d dimensions, want %d", i, len(got), len(want.Vectors[i]))
		}
		for d := range got {
			if float32(got[d]) != want.Vectors[i][d] {
				t.Fatalf("input %d dimension %d: %v, want %v", i, d, got[d], want.Vectors[i][d])
			}
		}
	}
	over := `{"model":"test-model","input":"` + strings.Repeat("And it came to pass ", 2000) + `"}`
	r, err := http.Post(ls.base+"/v1/embeddings", "application/json", bytes.NewReader([]byte(over)))
	if err != nil {
		t.Fatal(err)
	}
	var e struct {
		Error struct{ Code, Param string } `json:"error"`
	}
	json.NewDecoder(r.Body).Decode(&e)
	r.Body.Close()
	if r.StatusCode != 400 || e.Error.Code != "context_length_exceeded" || e.Error.Param != "input" {
		t.Errorf("input over the context: %d %+v", r.StatusCode, e)
	}
}
