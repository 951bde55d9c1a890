package chat

import (
	"strings"
	"testing"
)

// parsed is a parse's parts joined: reasoning, text, and the calls as
// name+arguments.
type parsed struct {
	reasoning, content string
	calls              []string
}

func parseAll(f Format, tools, inThink bool, pieces []string) parsed {
	p := NewOutputParser(f, tools, inThink)
	var out parsed
	add := func(parts []Part) {
		for _, pt := range parts {
			out.reasoning += pt.Reasoning
			out.content += pt.Content
			if pt.Call != nil {
				out.calls = append(out.calls, pt.Call.Name+string(pt.Call.Arguments))
			}
		}
	}
	for _, s := range pieces {
		add(p.Feed(s))
	}
	add(p.Finish())
	return out
}

// chunkings splits text whole, byte by byte and in threes, so a marker
// split across pieces is covered.
func chunkings(text string) map[string][]string {
	bytes := make([]string, len(text))
	for i := range text {
		bytes[i] = text[i : i+1]
	}
	var threes []string
	for i := 0; i < len(text); i += 3 {
		threes = append(threes, text[i:min(i+3, len(text))])
	}
	return map[string][]string{"whole": {text}, "bytes": bytes, "threes": threes}
}

func TestOutputParser(t *testing.T) {
	hermes := Format{Tools: Hermes, Thinking: true}
	for _, c := range []struct {
		name    string
		f       Format
		tools   bool
		inThink bool
		text    string
		want    parsed
	}{
		{"plain", hermes, true, false, "Hello there.", parsed{content: "Hello there."}},
		{"one call", hermes, true, false, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
			parsed{calls: []string{`get_weather{"city":"Paris"}`}}},
		{"text then two calls", hermes, true, false,
			"Checking.\n<tool_call>\n{\"name\": \"a\", \"arguments\": {}}\n</tool_call>\n<tool_call>\n{\"name\": \"b\", \"arguments\": \"{\\\"x\\\": 1}\"}\n</tool_call>",
			parsed{content: "Checking.", calls: []string{"a{}", `b{"x":1}`}}},
		{"unclosed call at the end", hermes, true, false, "<tool_call>{\"name\": \"a\", \"arguments\": {\"k\": [1, 2]}}",
			parsed{calls: []string{`a{"k":[1,2]}`}}},
		{"bad call is text", hermes, true, false, "<tool_call>{not json}</tool_call> ok",
			parsed{content: "<tool_call>{not json}</tool_call> ok"}},
		{"no tools offered: markers are text", hermes, false, false, "<tool_call>{\"name\": \"a\"}</tool_call>",
			parsed{content: "<tool_call>{\"name\": \"a\"}</tool_call>"}},
		{"reasoning then answer", hermes, false, false, "<think>\nLet me see.\n</think>\n\nFour.",
			parsed{reasoning: "\nLet me see.\n", content: "Four."}},
		{"reasoning then a call", hermes, true, false, "<think>why</think><tool_call>{\"name\": \"a\", \"arguments\": {}}</tool_call>",
			parsed{reasoning: "why", calls: []string{"a{}"}}},
		{"prompt opened the reasoning", hermes, false, true, "hmm</think>Yes.", parsed{reasoning: "hmm", content: "Yes."}},
		{"unclosed reasoning", hermes, false, false, "<think>still going", parsed{reasoning: "still going"}},
		{"lookalike of think is text", hermes, false, false, "<thin air", parsed{content: "<thin air"}},
		{"llama3 call", Format{Tools: Llama3}, true, false, `{"name": "get_weather", "parameters": {"city": "Oslo"}}`,
			parsed{calls: []string{`get_weather{"city":"Oslo"}`}}},
		{"llama3 python tag and two calls", Format{Tools: Llama3}, true, false, `<|python_tag|>{"name": "a", "parameters": {}}; {"name": "b", "parameters": {"n": 1}}`,
			parsed{calls: []string{"a{}", `b{"n":1}`}}},
		{"llama3 text", Format{Tools: Llama3}, true, false, "It is sunny.", parsed{content: "It is sunny."}},
		{"llama3 braces that are no call", Format{Tools: Llama3}, true, false, "{oops}", parsed{content: "{oops}"}},
		{"mistral v3", Format{Tools: Mistral}, true, false, `[TOOL_CALLS] [{"name": "a", "arguments": {"x": "y"}}, {"name": "b", "arguments": {}}]`,
			parsed{calls: []string{`a{"x":"y"}`, "b{}"}}},
		{"mistral v11", Format{Tools: Mistral}, true, false, `[TOOL_CALLS]a[ARGS]{"x": 1}[TOOL_CALLS]b[ARGS]{}`,
			parsed{calls: []string{`a{"x":1}`, "b{}"}}},
		{"mistral text then bad calls", Format{Tools: Mistral}, true, false, `Sure. [TOOL_CALLS] nope`,
			parsed{content: "Sure. [TOOL_CALLS] nope"}},
	} {
		for how, pieces := range chunkings(c.text) {
			got := parseAll(c.f, c.tools, c.inThink, pieces)
			if got.reasoning != c.want.reasoning || got.content != c.want.content || strings.Join(got.calls, "|") != strings.Join(c.want.calls, "|") {
				t.Errorf("%s (%s): got %+v, want %+v", c.name, how, got, c.want)
			}
		}
	}
}

// Text is handed out as it streams, not held to the end: only what may
// start a marker waits.
func TestOutputParserStreams(t *testing.T) {
	p := NewOutputParser(Format{Tools: Hermes}, true, false)
	if parts := p.Feed("Hello wor"); len(parts) != 1 || parts[0].Content != "Hello wor" {
		t.Fatalf("Feed: %+v", parts)
	}
	if parts := p.Feed("ld <tool_"); len(parts) != 1 || parts[0].Content != "ld" {
		// the space waits: it would end the text if a call follows
		t.Fatalf("Feed before a possible marker: %+v", parts)
	}
	if !NewOutputParser(Format{}, false, false).Passthrough() || NewOutputParser(Format{Thinking: true}, false, false).Passthrough() {
		t.Error("Passthrough is wrong")
	}
}

func TestOpensThinking(t *testing.T) {
	think := Format{Thinking: true}
	for _, c := range []struct {
		f      Format
		prompt string
		want   bool
	}{
		{think, "<|im_start|>assistant\n<think>\n", true},
		{think, "<|im_start|>assistant\n<think>", true},
		{think, "<|im_start|>assistant\n<think>\n\n</think>\n\n", false},
		{think, "<|im_start|>assistant\n", false},
		{Format{}, "<|im_start|>assistant\n<think>\n", false}, // the template knows no reasoning
	} {
		if got := c.f.OpensThinking(c.prompt); got != c.want {
			t.Errorf("%+v.OpensThinking(%q) = %v, want %v", c.f, c.prompt, got, c.want)
		}
	}
}

func TestDetectFormat(t *testing.T) {
	f := loadFixtures(t)
	templates := newFixtureTemplates(t, &f)
	for name, want := range map[string]Format{
		"Qwen-Qwen2.5-7B-Instruct.jinja":         {Tools: Hermes},
		"meta-llama-Llama-3.2-3B-Instruct.jinja": {Tools: Llama3},
		"google-gemma-2-2b-it.jinja":             {},
		"microsoft-Phi-3.5-mini-instruct.jinja":  {},
		"chatml.jinja":                           {},
	} {
		if got := templates.get(name).Format(); got != want {
			t.Errorf("%s: %+v, want %+v", name, got, want)
		}
	}
	if got := DetectFormat("{{ '[TOOL_CALLS]' }}{% if x %}<think>{% endif %}"); got != (Format{Tools: Mistral, Thinking: true}) {
		t.Errorf("mistral with thinking: %+v", got)
	}
}

// FuzzOutputParser: any output, cut anywhere, parses without a panic to
// the same reasoning, text and calls as when it comes whole; without
// tools or thinking, the text is the output unchanged.
func FuzzOutputParser(f *testing.F) {
	f.Add("<think>a</think>b<tool_call>{\"name\": \"x\", \"arguments\": {}}</tool_call>", uint8(3), uint8(1))
	f.Add("[TOOL_CALLS][{\"name\": \"a\", \"arguments\": {}}]", uint8(2), uint8(2))
	f.Add("<|python_tag|>{\"name\": \"a\", \"parameters\": {\"k\": 1}}", uint8(5), uint8(3))
	f.Add("plain <tool_ text <think", uint8(1), uint8(0))
	formats := []Format{{}, {Tools: Hermes, Thinking: true}, {Tools: Mistral}, {Tools: Llama3}}
	f.Fuzz(func(t *testing.T, text string, cut, which uint8) {
		format := formats[int(which)%len(formats)]
		whole := parseAll(format, true, false, []string{text})
		step := int(cut)%7 + 1
		var pieces []string
		for i := 0; i < len(text); i += step {
			pieces = append(pieces, text[i:min(i+step, len(text))])
		}
		cutUp := parseAll(format, true, false, pieces)
		if whole.reasoning != cutUp.reasoning || whole.content != cutUp.content || strings.Join(whole.calls, "|") != strings.Join(cutUp.calls, "|") {
			t.Fatalf("%q in pieces of %d: %+v, whole: %+v", text, step, cutUp, whole)
		}
		if plain := parseAll(Format{}, false, false, pieces); plain.content != text {
			t.Fatalf("passthrough changed %q to %q", text, plain.content)
		}
	})
}
