package serve

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/wgllm/wgllm/runtime/chat"
	"github.com/wgllm/wgllm/runtime/grammar"
)

// accepts runs text through a fresh matcher of g, a byte a token, and
// reports whether g takes all of it and is then complete.
func accepts(t *testing.T, g *grammar.Grammar, text string) bool {
	t.Helper()
	pieces := make([]string, 257)
	for b := range 256 {
		pieces[b] = string([]byte{byte(b)})
	}
	v, err := grammar.NewVocab(pieces, []int32{256})
	if err != nil {
		t.Fatal(err)
	}
	m := grammar.NewMatcher(g, v)
	for i := 0; i < len(text); i++ {
		if m.Accept(int32(text[i])) != nil {
			return false
		}
	}
	return m.Complete()
}

func weatherSpec(t *testing.T, extra string) *toolSpec {
	t.Helper()
	spec, aerr := parseTools(json.RawMessage(`[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"` + extra + `}},"required":["city"]}}},
		{"type":"function","function":{"name":"get_time"}}]`))
	if aerr != nil {
		t.Fatal(aerr)
	}
	return spec
}

// A required or named call is a grammar of the format's call JSON: the
// tool's name and arguments its schema accepts, nothing else.
func TestToolConstraint(t *testing.T) {
	spec := weatherSpec(t, "")
	spec.mode, spec.name = toolsNamed, "get_weather"
	prefill, g := toolConstraint(chat.Hermes, spec)
	if prefill != "<tool_call>\n" || g == nil {
		t.Fatalf("hermes named: prefill %q, grammar %v", prefill, g)
	}
	for text, want := range map[string]bool{
		`{"name":"get_weather","arguments":{"city":"Oslo"}}`:   true,
		`{"name": "get_weather", "arguments": {"city": "O"}}`:  true,
		`{"name":"get_time","arguments":{}}`:                   false,
		`{"name":"get_weather","arguments":{}}`:                false, // city is required
		`{"name":"get_weather","arguments":{"city":7}}`:        false,
		`{"name":"get_weather","arguments":{"city":"Oslo"}} x`: false,
	} {
		if got := accepts(t, g, text); got != want {
			t.Errorf("named grammar on %s: %v, want %v", text, got, want)
		}
	}

	spec.mode = toolsRequired
	prefill, g = toolConstraint(chat.Llama3, spec)
	if prefill != "" || g == nil || !accepts(t, g, `{"name":"get_time","parameters":{"a":1}}`) ||
		!accepts(t, g, `{"name":"get_weather","parameters":{"city":"x"}}`) || accepts(t, g, `{"name":"nope","parameters":{}}`) {
		t.Errorf("llama3 required: prefill %q, grammar %v", prefill, g)
	}
	prefill, g = toolConstraint(chat.Mistral, spec)
	if prefill != "[TOOL_CALLS]" || g == nil || !accepts(t, g, `[{"name":"get_time","arguments":{}},{"name":"get_time","arguments":{}}]`) {
		t.Errorf("mistral required: prefill %q", prefill)
	}

	// A schema the grammar cannot enforce: the name is forced by the
	// prefill, the rest checked afterwards.
	spec = weatherSpec(t, `,"pattern":"^[A-Z]"`)
	spec.mode, spec.name = toolsNamed, "get_weather"
	prefill, g = toolConstraint(chat.Hermes, spec)
	if g != nil || !strings.HasSuffix(prefill, `{"name": "get_weather", "arguments": `) {
		t.Errorf("fallback: prefill %q, grammar %v", prefill, g)
	}
}
