package tests

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wgllm/wgllm/internal/ggufedit"
	"github.com/wgllm/wgllm/internal/sharedfiles"
	"github.com/wgllm/wgllm/runtime/chat"
	"github.com/wgllm/wgllm/runtime/gguf"
	"github.com/wgllm/wgllm/runtime/tokenizer"
	"github.com/wgllm/wgllm/serve"
	"github.com/wgllm/wgllm/web"
)

// harmonyTokens are gpt-oss's special tokens, given the last ids of the
// zoo's 4096-token vocabulary.
var harmonyTokens = []string{"<|start|>", "<|channel|>", "<|message|>", "<|end|>", "<|return|>", "<|call|>", "<|constrain|>"}

// writeGPTOSSChat copies the zoo's gpt-oss model (random weights, the kjv
// vocabulary) into dir with what a real gpt-oss GGUF has for chat: its
// template as tokenizer.chat_template and the harmony special tokens
// (control tokens in place of the vocabulary's last pieces, so the
// weights keep their shapes). It returns the file and the tokens' ids.
func writeGPTOSSChat(t *testing.T, dir string) (string, map[string]int32) {
	t.Helper()
	src, err := os.ReadFile("../runtime/chat/testdata/templates/openai-gpt-oss-120b.jinja")
	if err != nil {
		t.Fatal(err)
	}
	var ids map[string]int32
	path := filepath.Join(dir, "gpt-oss-chat.gguf")
	ggufedit.CopyWithTemplate(t, sharedfiles.File(t, "models/zoo/models/gpt-oss-f32.gguf"), path, string(src), func(f *gguf.File) map[string]gguf.Value {
		tokens := append([]string(nil), f.Metadata["tokenizer.ggml.tokens"].V.([]string)...)
		types := append([]int32(nil), f.Metadata["tokenizer.ggml.token_type"].V.([]int32)...)
		ids = map[string]int32{}
		for i, s := range harmonyTokens {
			id := len(tokens) - len(harmonyTokens) + i
			tokens[id], types[id], ids[s] = s, 3, int32(id) // 3: control
		}
		return map[string]gguf.Value{"tokenizer.ggml.tokens": gguf.Val(tokens), "tokenizer.ggml.token_type": gguf.Val(types)}
	})
	return path, ids
}

// chatReply is what the test reads of a chat completion.
type chatReply struct {
	Choices []struct {
		FinishReason string `json:"finish_reason"`
		Message      struct {
			Content          string `json:"content"`
			ReasoningContent string `json:"reasoning_content"`
		} `json:"message"`
	} `json:"choices"`
	Usage struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
	} `json:"usage"`
}

func postJSON(t *testing.T, url string, body any) *http.Response {
	t.Helper()
	b, _ := json.Marshal(body)
	resp, err := http.Post(url, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func chatOnce(t *testing.T, ls *liveServer, body map[string]any) chatReply {
	t.Helper()
	resp := postJSON(t, ls.base+"/v1/chat/completions", body)
	defer resp.Body.Close()
	var r chatReply
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || resp.StatusCode != http.StatusOK || len(r.Choices) != 1 {
		t.Fatalf("status %d, %v: %+v", resp.StatusCode, err, r)
	}
	return r
}

// TestServeGPTOSSChat serves the zoo's gpt-oss model with gpt-oss's chat
// template and special tokens. Its weights are random, so its text is
// gibberish: the test checks the plumbing. The prompt is the template's
// rendering (its token count is that of the rendering with the request's
// reasoning effort); <|return|> and <|call|> end the answer at once and
// leave no text, <|end|> does not; greedy output streamed and whole is the
// same answer, and no harmony marker reaches the client.
func TestServeGPTOSSChat(t *testing.T) {
	needGPU(t)
	path, ids := writeGPTOSSChat(t, t.TempDir())
	ls := startServerWith(t, path, 2, serve.Config{Static: web.FS()}, nil)

	// The prompt the server built is the template's.
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tmpl, err := chat.FromGGUF(f)
	if err != nil {
		t.Fatal(err)
	}
	if tmpl.Format().Tools != chat.Harmony {
		t.Fatalf("the model's template is not recognised as harmony: %+v", tmpl.Format())
	}
	tok, err := tokenizer.FromGGUF(f)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"<|return|>", "<|call|>"} {
		if !tok.IsEOG(ids[s]) {
			t.Errorf("%s is not an end of generation", s)
		}
	}
	if tok.IsEOG(ids["<|end|>"]) {
		t.Error("<|end|> ends generation; in harmony it only ends a message")
	}
	messages := []map[string]any{{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "In the beginning"}}
	conv := chat.Conversation{ReasoningEffort: "low", Messages: []chat.Message{{Role: "system", Content: "Answer briefly."}, {Role: "user", Content: "In the beginning"}}}
	rendered, err := tmpl.RenderConversation(conv, true)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(rendered, "Reasoning: low") || !strings.HasSuffix(rendered, "<|end|><|start|>assistant") {
		t.Fatalf("rendered %q", rendered)
	}
	wantPrompt := len(tok.Encode(rendered, tok.AddBOS()))

	greedy := map[string]any{"messages": messages, "reasoning_effort": "low", "temperature": 0, "max_tokens": 12}
	whole := chatOnce(t, ls, greedy)
	if whole.Usage.PromptTokens != wantPrompt {
		t.Errorf("prompt_tokens %d, want %d (the template's rendering)", whole.Usage.PromptTokens, wantPrompt)
	}
	msg := whole.Choices[0].Message
	for _, s := range append(harmonyTokens, "<|") {
		if strings.Contains(msg.Content, s) || strings.Contains(msg.ReasoningContent, s) {
			t.Errorf("%q reached the client: %+v", s, msg)
		}
	}

	// Streamed: the same greedy answer.
	stream := map[string]any{"messages": messages, "reasoning_effort": "low", "temperature": 0, "max_tokens": 12, "stream": true}
	resp := postJSON(t, ls.base+"/v1/chat/completions", stream)
	var content, reasoning strings.Builder
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok || data == "[DONE]" {
			continue
		}
		var chunk struct {
			Choices []struct {
				Delta struct {
					Content          string `json:"content"`
					ReasoningContent string `json:"reasoning_content"`
				} `json:"delta"`
			} `json:"choices"`
		}
		if err := json.Unmarshal([]byte(data), &chunk); err != nil {
			t.Fatalf("chunk %q: %v", data, err)
		}
		if len(chunk.Choices) > 0 {
			content.WriteString(chunk.Choices[0].Delta.Content)
			reasoning.WriteString(chunk.Choices[0].Delta.ReasoningContent)
		}
	}
	resp.Body.Close()
	if content.String() != msg.Content || reasoning.String() != msg.ReasoningContent {
		t.Errorf("streamed %q / %q, whole %q / %q", content.String(), reasoning.String(), msg.Content, msg.ReasoningContent)
	}

	t.Logf("greedy answer: content %q, reasoning %q", msg.Content, msg.ReasoningContent)

	// Stop tokens: forced as the first token, <|return|> and <|call|> end
	// the answer there, leaving nothing (the end token is not counted as
	// a completion token); forced <|end|> runs on.
	for _, c := range []struct {
		token  string
		finish string
		tokens int
	}{{"<|return|>", "stop", 0}, {"<|call|>", "stop", 0}, {"<|end|>", "length", 6}} {
		body := map[string]any{"messages": messages, "temperature": 0, "max_tokens": 6,
			"logit_bias": map[string]float64{itoa32(ids[c.token]): 100}}
		r := chatOnce(t, ls, body)
		ch := r.Choices[0]
		if ch.FinishReason != c.finish || r.Usage.CompletionTokens != c.tokens {
			t.Errorf("%s forced: finish %q after %d tokens, want %q after %d", c.token, ch.FinishReason, r.Usage.CompletionTokens, c.finish, c.tokens)
		}
		if c.finish == "stop" && (ch.Message.Content != "" || ch.Message.ReasoningContent != "") {
			t.Errorf("%s forced: text %+v", c.token, ch.Message)
		}
	}

	// The harmony markers are text of the output (user-defined tokens, as
	// in llama.cpp), so the chat parser sees them: a plain completion
	// forced to write <|channel|> returns it as written.
	resp = postJSON(t, ls.base+"/v1/completions", map[string]any{"prompt": "x", "max_tokens": 3, "temperature": 0,
		"logit_bias": map[string]float64{itoa32(ids["<|channel|>"]): 100}})
	var completion struct {
		Choices []struct{ Text string } `json:"choices"`
	}
	err = json.NewDecoder(resp.Body).Decode(&completion)
	resp.Body.Close()
	if err != nil || len(completion.Choices) != 1 || completion.Choices[0].Text != strings.Repeat("<|channel|>", 3) {
		t.Errorf("completion forced to <|channel|>: %v %+v", err, completion)
	}

	// Ollama's chat, with a think level: the same plumbing, reasoning apart.
	resp = postJSON(t, ls.base+"/api/chat", map[string]any{"model": "test-model", "messages": messages, "think": "high", "stream": false,
		"options": map[string]any{"temperature": 0, "num_predict": 4}})
	var ollama struct {
		Done            bool `json:"done"`
		PromptEvalCount int  `json:"prompt_eval_count"`
		Message         struct{ Content, Thinking string }
	}
	err = json.NewDecoder(resp.Body).Decode(&ollama)
	resp.Body.Close()
	high, _ := tmpl.RenderConversation(chat.Conversation{ReasoningEffort: "high", Thinking: ptr(true), Messages: conv.Messages}, true)
	if err != nil || !ollama.Done || ollama.PromptEvalCount != len(tok.Encode(high, tok.AddBOS())) {
		t.Errorf("ollama: %v %+v, want %d prompt tokens", err, ollama, len(tok.Encode(high, tok.AddBOS())))
	}
}

func itoa32(i int32) string { b, _ := json.Marshal(i); return string(b) }

func ptr[T any](v T) *T { return &v }
