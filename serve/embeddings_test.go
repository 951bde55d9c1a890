package serve_test

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/wgllm/wgllm/serve"
	"github.com/wgllm/wgllm/serve/servetest"
)

func sameVector(got []float64, want []float32) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if math.Abs(got[i]-float64(want[i])) > 1e-6 {
			return false
		}
	}
	return true
}

func TestEmbeddingsEndpoints(t *testing.T) {
	ts := start(t, serve.Config{}, &servetest.Options{})
	client := ts.openAI("")
	ctx := context.Background()
	resp, err := client.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: "m",
		Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"in the beginning", "was the word"}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Data) != 2 || resp.Object != "list" || resp.Usage.PromptTokens != 8 || resp.Usage.TotalTokens != 8 {
		t.Fatalf("response %+v", resp)
	}
	for i, text := range []string{"in the beginning", "was the word"} {
		if d := resp.Data[i]; d.Index != int64(i) || !sameVector(d.Embedding, servetest.FakeEmbedding(text, true)) {
			t.Errorf("input %d: %+v", i, d)
		}
	}
	// Token arrays, and base64 (little-endian float32s).
	r := ts.do("POST", "/v1/embeddings", `{"model":"m","input":[[1,2,3]],"encoding_format":"base64"}`, nil)
	var b64 struct {
		Data []struct {
			Embedding string `json:"embedding"`
		} `json:"data"`
	}
	if err := json.NewDecoder(r.Body).Decode(&b64); err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	raw, err := base64.StdEncoding.DecodeString(b64.Data[0].Embedding)
	if err != nil {
		t.Fatal(err)
	}
	want := servetest.FakeEmbedding(fmt.Sprint([]int32{1, 2, 3}), true)
	for d := range want {
		if got := math.Float32frombits(binary.LittleEndian.Uint32(raw[4*d:])); got != want[d] {
			t.Fatalf("base64 dimension %d: %v, want %v", d, got, want[d])
		}
	}
	long := strings.Repeat("word ", servetest.FakeContext)
	expectError(t, ts.do("POST", "/v1/embeddings", `{"input":["ok","`+long+`"]}`, nil), 400, "context_length_exceeded", "input")
	expectError(t, ts.do("POST", "/v1/embeddings", `{"input":[]}`, nil), 400, "invalid_parameter", "input")
	expectError(t, ts.do("POST", "/v1/embeddings", `{"input":[1.5]}`, nil), 400, "invalid_parameter", "input")
	expectError(t, ts.do("POST", "/v1/embeddings", `{"input":"x","encoding_format":"hex"}`, nil), 400, "invalid_parameter", "encoding_format")
	expectError(t, ts.do("POST", "/v1/embeddings", `{"input":"x","dimensions":3}`, nil), 400, "unsupported_parameter", "dimensions")

	// Ollama: /api/embed (normalised; truncates unless told not to) and
	// /api/embeddings (one prompt, as the model gives it).
	r = ts.do("POST", "/api/embed", `{"model":"fake-model","input":["a b","`+long+`"]}`, nil)
	var embed struct {
		Model           string      `json:"model"`
		Embeddings      [][]float64 `json:"embeddings"`
		PromptEvalCount int         `json:"prompt_eval_count"`
	}
	if err := json.NewDecoder(r.Body).Decode(&embed); err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if len(embed.Embeddings) != 2 || !sameVector(embed.Embeddings[0], servetest.FakeEmbedding("a b", true)) ||
		embed.PromptEvalCount != 3+servetest.FakeContext || embed.Model != "fake-model" {
		t.Errorf("/api/embed: %+v", embed)
	}
	expectOllamaError(t, ts.do("POST", "/api/embed", `{"model":"fake-model","input":"`+long+`","truncate":false}`, nil), 400, "input[0]")
	r = ts.do("POST", "/api/embeddings", `{"model":"fake-model","prompt":"a b"}`, nil)
	var legacy struct {
		Embedding []float64 `json:"embedding"`
	}
	if err := json.NewDecoder(r.Body).Decode(&legacy); err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if !sameVector(legacy.Embedding, servetest.FakeEmbedding("a b", false)) {
		t.Errorf("/api/embeddings: %v", legacy.Embedding)
	}
}
