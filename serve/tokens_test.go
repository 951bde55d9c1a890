package serve_test

import (
	"encoding/json"
	"testing"

	"github.com/wgllm/wgllm/serve"
	"github.com/wgllm/wgllm/serve/servetest"
)

// /tokenize and /detokenize in llama.cpp's shapes, on the fake's
// byte-per-token tokenizer; /props tells the limits.
func TestTokenizeDetokenizeProps(t *testing.T) {
	ts := start(t, serve.Config{MaxTokensLimit: 4096, DefaultMaxTokens: 100}, &servetest.Options{ContextLength: 512})
	var ids struct{ Tokens []int32 }
	decode(t, ts.do("POST", "/tokenize", `{"content":"Hi!","add_special":true}`, nil), &ids)
	if len(ids.Tokens) != 4 || ids.Tokens[0] != 256 || ids.Tokens[1] != 'H' || ids.Tokens[3] != '!' {
		t.Errorf("tokenize: %v", ids.Tokens)
	}
	var pieces struct {
		Tokens []struct {
			ID    int32
			Piece string
		}
	}
	decode(t, ts.do("POST", "/tokenize", `{"content":"ab","with_pieces":true}`, nil), &pieces)
	if len(pieces.Tokens) != 2 || pieces.Tokens[1].ID != 'b' || pieces.Tokens[1].Piece != "b" {
		t.Errorf("with_pieces: %+v", pieces)
	}
	var empty map[string]json.RawMessage
	decode(t, ts.do("POST", "/tokenize", `{"content":""}`, nil), &empty)
	if string(empty["tokens"]) != "[]" {
		t.Errorf("empty content: %s", empty["tokens"])
	}
	var text struct{ Content string }
	decode(t, ts.do("POST", "/detokenize", `{"tokens":[256,72,105]}`, nil), &text)
	if text.Content != "Hi" {
		t.Errorf("detokenize: %q", text.Content)
	}
	expectError(t, ts.do("POST", "/detokenize", `{"tokens":[72,99999]}`, nil), 400, "invalid_request", "tokens")
	expectError(t, ts.do("POST", "/detokenize", `{"tokens":"x"}`, nil), 400, "invalid_parameter", "tokens")
	expectError(t, ts.do("GET", "/tokenize", nil, nil), 405, "method_not_allowed", "")

	var p struct {
		Model          string
		NCtx           int `json:"n_ctx"`
		MaxTokensLimit int `json:"max_tokens_limit"`
		DefaultMax     int `json:"default_max_tokens"`
		Settings       struct {
			Params struct {
				NPredict int `json:"n_predict"`
			}
		} `json:"default_generation_settings"`
	}
	decode(t, ts.do("GET", "/props", nil, nil), &p)
	if p.Model != "fake-model" || p.NCtx != 512 || p.MaxTokensLimit != 512 || p.DefaultMax != 100 || p.Settings.Params.NPredict != 100 {
		t.Errorf("props: %+v", p)
	}
}
