package serve

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"strings"

	"github.com/wgllm/wgllm/runtime/engine"
	"github.com/wgllm/wgllm/runtime/sample"
)

// Logprobs and logit_bias: the request fields, and the response shapes of
// OpenAI's chat (logprobs.content), its legacy completions (tokens,
// token_logprobs, top_logprobs, text_offset) and Ollama (logprobs).

// openAILogprobs reads logprobs and top_logprobs: for a chat, logprobs
// true and top_logprobs 0..20 (which needs logprobs); for a completion,
// logprobs is the number of alternatives, 0..20.
func openAILogprobs(kind requestKind, logprobs, top json.RawMessage, job *engine.Job) *apiError {
	if kind == kindChat {
		if !isNull(logprobs) {
			if err := json.Unmarshal(logprobs, &job.Logprobs); err != nil {
				return invalidParam("logprobs", "logprobs must be true or false")
			}
		}
		if isNull(top) {
			return nil
		}
		if err := json.Unmarshal(top, &job.TopLogprobs); err != nil || job.TopLogprobs < 0 || job.TopLogprobs > sample.MaxTopLogprobs {
			return invalidParam("top_logprobs", "top_logprobs must be an integer in [0, %d]", sample.MaxTopLogprobs)
		}
		if job.TopLogprobs > 0 && !job.Logprobs {
			return invalidParam("top_logprobs", "top_logprobs needs logprobs: true")
		}
		return nil
	}
	if !isNull(top) {
		return invalidParam("top_logprobs", "completions take logprobs (the number of alternatives), not top_logprobs")
	}
	if isNull(logprobs) {
		return nil
	}
	if err := json.Unmarshal(logprobs, &job.TopLogprobs); err != nil || job.TopLogprobs < 0 || job.TopLogprobs > sample.MaxTopLogprobs {
		return invalidParam("logprobs", "logprobs must be an integer in [0, %d] (the alternatives per token)", sample.MaxTopLogprobs)
	}
	job.Logprobs = true
	return nil
}

// logitBias reads OpenAI's logit_bias: token ids (as strings) to a bias in
// [-100, 100].
func logitBias(raw json.RawMessage) (map[int32]float32, *apiError) {
	if isNull(raw) {
		return nil, nil
	}
	var m map[string]float64
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, invalidParam("logit_bias", "logit_bias must map token ids to numbers")
	}
	if len(m) > 1024 {
		return nil, invalidParam("logit_bias", "at most 1024 tokens in logit_bias")
	}
	out := make(map[int32]float32, len(m))
	for k, v := range m {
		id, err := strconv.ParseInt(k, 10, 32)
		if err != nil || id < 0 {
			return nil, invalidParam("logit_bias", "logit_bias key %q is not a token id", k)
		}
		if math.IsNaN(v) || v < -sample.MaxLogitBias || v > sample.MaxLogitBias {
			return nil, invalidParam("logit_bias", "logit_bias for token %s: %v is outside [-100, 100]", k, v)
		}
		out[int32(id)] = float32(v)
	}
	return out, nil
}

// tokenText is a token's bytes as a string for JSON: bytes that are not
// whole UTF-8 characters become U+FFFD (the exact bytes are in "bytes").
func tokenText(b []byte) string { return strings.ToValidUTF8(string(b), "\uFFFD") }

func byteInts(b []byte) []int {
	out := make([]int, len(b))
	for i, x := range b {
		out[i] = int(x)
	}
	return out
}

// tokenLogprobOut is one token in OpenAI's chat and Ollama's shape.
type tokenLogprobOut struct {
	Token   string  `json:"token"`
	Logprob float64 `json:"logprob"`
	Bytes   []int   `json:"bytes"`
}

type logprobOut struct {
	tokenLogprobOut
	TopLogprobs []tokenLogprobOut `json:"top_logprobs"`
}

func logprobsOut(lps []engine.TokenLogprob) []logprobOut {
	out := make([]logprobOut, len(lps))
	for i, lp := range lps {
		out[i] = logprobOut{tokenLogprobOut: tokenLogprobOut{Token: tokenText(lp.Token.Bytes), Logprob: float64(lp.Logprob),
			Bytes: byteInts(lp.Token.Bytes)}, TopLogprobs: []tokenLogprobOut{}}
		for _, t := range lp.Top {
			out[i].TopLogprobs = append(out[i].TopLogprobs, tokenLogprobOut{Token: tokenText(t.Token.Bytes),
				Logprob: float64(t.Logprob), Bytes: byteInts(t.Token.Bytes)})
		}
	}
	return out
}

// chatLogprobsJSON is a chat choice's logprobs: {"content": [...],
// "refusal": null}; null when logprobs were not asked for.
func chatLogprobsJSON(asked bool, lps []engine.TokenLogprob) json.RawMessage {
	if !asked {
		return jsonNull
	}
	body, _ := json.Marshal(struct {
		Content []logprobOut `json:"content"`
		Refusal *struct{}    `json:"refusal"`
	}{Content: logprobsOut(lps)})
	return body
}

// completionLogprobsJSON is a legacy completion choice's logprobs, the
// text offsets counted from offset (the bytes of text before these
// tokens); null when logprobs were not asked for.
func completionLogprobsJSON(asked bool, lps []engine.TokenLogprob, offset int) json.RawMessage {
	if !asked {
		return jsonNull
	}
	out := struct {
		Tokens        []string             `json:"tokens"`
		TokenLogprobs []float64            `json:"token_logprobs"`
		TopLogprobs   []map[string]float64 `json:"top_logprobs"`
		TextOffset    []int                `json:"text_offset"`
	}{Tokens: []string{}, TokenLogprobs: []float64{}, TopLogprobs: []map[string]float64{}, TextOffset: []int{}}
	for _, lp := range lps {
		out.Tokens = append(out.Tokens, tokenText(lp.Token.Bytes))
		out.TokenLogprobs = append(out.TokenLogprobs, float64(lp.Logprob))
		top := map[string]float64{}
		for _, t := range lp.Top {
			if _, dup := top[tokenText(t.Token.Bytes)]; !dup {
				top[tokenText(t.Token.Bytes)] = float64(t.Logprob)
			}
		}
		out.TopLogprobs = append(out.TopLogprobs, top)
		out.TextOffset = append(out.TextOffset, offset)
		offset += len(lp.Token.Bytes)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(out)
	return bytes.TrimSpace(buf.Bytes())
}

// lineLogprobs is the logprobs of an Ollama line or websocket message
// (nil: none, or none asked for).
func lineLogprobs(asked bool, lps []engine.TokenLogprob) []logprobOut {
	if !asked || len(lps) == 0 {
		return nil
	}
	return logprobsOut(lps)
}

// tokensBytes is the length of the tokens' text.
func tokensBytes(lps []engine.TokenLogprob) int {
	n := 0
	for _, lp := range lps {
		n += len(lp.Token.Bytes)
	}
	return n
}
