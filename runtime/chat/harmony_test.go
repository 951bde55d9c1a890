package chat

import (
	"encoding/json"
	"math/rand"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// gptOSSTemplate is gpt-oss's template as the model ships it
// (testdata/templates/README.md says where it comes from).
func gptOSSTemplate(t *testing.T, now time.Time) *Template {
	t.Helper()
	src, err := os.ReadFile("testdata/templates/openai-gpt-oss-120b.jinja")
	if err != nil {
		t.Fatal(err)
	}
	tm, err := New(string(src), Options{BOSToken: "<|startoftext|>", EOSToken: "<|return|>", Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	return tm
}

// harmonyConversations is testdata/harmony/conversations.json.
type harmonyConversations struct {
	Date  string            `json:"date"`
	Tools []json.RawMessage `json:"tools"`
	Cases []struct {
		Name            string `json:"name"`
		ReasoningEffort string `json:"reasoning_effort"`
		Tools           bool   `json:"tools"`
		Messages        []struct {
			Role             string `json:"role"`
			Content          string `json:"content"`
			ReasoningContent string `json:"reasoning_content"`
			ToolCallID       string `json:"tool_call_id"`
			Name             string `json:"name"`
			ToolCalls        []struct {
				ID       string `json:"id"`
				Function struct {
					Name      string          `json:"name"`
					Arguments json.RawMessage `json:"arguments"`
				} `json:"function"`
			} `json:"tool_calls"`
		} `json:"messages"`
	} `json:"cases"`
}

// TestGPTOSSTemplateMatchesLlamaCpp renders conversations with a system
// prompt (the developer instructions), reasoning effort, user turns, an
// assistant's reasoning and tool call, a tool's result and a final answer,
// and compares with llama.cpp's own Jinja engine's rendering of the same
// (testdata/harmony/golden, written by gen_golden.py; Python's Jinja2
// renders the same bytes).
func TestGPTOSSTemplateMatchesLlamaCpp(t *testing.T) {
	raw, err := os.ReadFile("testdata/harmony/conversations.json")
	if err != nil {
		t.Fatal(err)
	}
	var convs harmonyConversations
	if err := json.Unmarshal(raw, &convs); err != nil {
		t.Fatal(err)
	}
	day, err := time.Parse("2006-01-02", convs.Date)
	if err != nil {
		t.Fatal(err)
	}
	tm := gptOSSTemplate(t, day.Add(13*time.Hour))
	if f := tm.Format(); f != (Format{Tools: Harmony, Thinking: true}) {
		t.Errorf("Format() = %+v, want harmony with thinking", f)
	}
	for _, c := range convs.Cases {
		conv := Conversation{ReasoningEffort: c.ReasoningEffort}
		if c.Tools {
			conv.Tools = convs.Tools
		}
		for _, m := range c.Messages {
			msg := Message{Role: m.Role, Content: m.Content, Reasoning: m.ReasoningContent, ToolCallID: m.ToolCallID, Name: m.Name}
			for _, tc := range m.ToolCalls {
				msg.ToolCalls = append(msg.ToolCalls, ToolCall{ID: tc.ID, Name: tc.Function.Name, Arguments: tc.Function.Arguments})
			}
			conv.Messages = append(conv.Messages, msg)
		}
		got, err := tm.RenderConversation(conv, true)
		if err != nil {
			t.Errorf("%s: %v", c.Name, err)
			continue
		}
		want, err := os.ReadFile(filepath.Join("testdata/harmony/golden", c.Name+".txt"))
		if err != nil {
			t.Fatal(err)
		}
		if got != string(want) {
			t.Errorf("%s: %s", c.Name, firstDifference(got, string(want)))
		}
	}
}

// TestGPTOSSTemplateRefusals: the template's own checks come back as
// RaisedErrors (a bad request), as in Jinja2.
func TestGPTOSSTemplateRefusals(t *testing.T) {
	tm := gptOSSTemplate(t, time.Date(2026, 8, 18, 0, 0, 0, 0, time.UTC))
	for _, c := range []struct {
		name string
		msgs []Message
		want string
	}{
		{"tool without a call", []Message{{Role: "user", Content: "hi"}, {Role: "tool", Content: "x", ToolCallID: "a"}},
			"Message has tool role, but there was no previous assistant message with a tool call!"},
		{"channel tags in content", []Message{{Role: "user", Content: "hi"},
			{Role: "assistant", Content: "<|channel|>final<|message|>hello"}, {Role: "user", Content: "more"}},
			"You have passed a message containing <|channel|> tags in the content field."},
	} {
		_, err := tm.Render(c.msgs, true)
		re, ok := err.(*RaisedError)
		if !ok || !strings.HasPrefix(re.Message, c.want) {
			t.Errorf("%s: error %v, want a RaisedError %q", c.name, err, c.want)
		}
	}
}

// TestInlineConditionals checks the rewrite of conditionals inside
// brackets against Jinja2's values, and that the branch not taken is not
// evaluated.
func TestInlineConditionals(t *testing.T) {
	for _, c := range []struct{ src, want string }{
		{`{{ (x if x is defined else "json") + "!" }}`, "json!"},
		{`{{ (y if y is defined else "json") + "!" }}`, "yes!"},
		{`{{ [1 if f else 2, 3 if not f else 4] }}`, "[2, 3]"},
		{`{{ ["a" if y else "b", "c"]|join("-") }}`, "a-c"},
		{`{{ ("a" if f else "b" if f else "c") }}`, "c"},
		{`{{ {"k": 1 if y else 2}["k"] }}`, "1"},
		{`{{ ("ok" if y else y.missing.deeper()) }}`, "ok"},
		{`{{ ("if else" if f else 'else if') }}`, "else if"},
		{`{{ [1, 2, 3][(0 if f else 1):] }}`, "[2, 3]"},
		{`{% set z = (5 if y else 6) %}{{ z }}`, "5"},
		{`{% for i in ([1] if y else [2]) %}{{ i }}{% endfor %}`, "1"},
		{`{# (a if b) #}{{ "x" if y else "z" }}`, "x"},
		{`{% raw %}{{ (a if b else c) }}{% endraw %}`, "{{ (a if b else c) }}"},
	} {
		tm, err := New(c.src, Options{})
		if err != nil {
			t.Errorf("%s: %v", c.src, err)
			continue
		}
		got, err := tm.render(nil, false, map[string]any{"y": "yes", "f": false})
		if err != nil || got != c.want {
			t.Errorf("%s: got %q, %v; want %q", c.src, got, err, c.want)
		}
	}
}

// TestInlineConditionalsHostile: chains are rewritten up to
// maxChainedConditionals links and left alone beyond; a template of
// thousands of chained or nested conditionals parses (or fails) quickly.
func TestInlineConditionalsHostile(t *testing.T) {
	chain := func(n int) string {
		var b strings.Builder
		b.WriteString("{{ (")
		for i := 0; i < n; i++ {
			b.WriteString("1 if f else ")
		}
		b.WriteString("2) }}")
		return b.String()
	}
	tm, err := New(chain(maxChainedConditionals), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := tm.render(nil, false, map[string]any{"f": false}); err != nil || got != "2" {
		t.Errorf("chain of %d: %q, %v", maxChainedConditionals, got, err)
	}
	if _, err := New(chain(maxChainedConditionals+1), Options{}); err == nil {
		t.Errorf("a chain of %d parsed", maxChainedConditionals+1)
	}
	nested := strings.Repeat("(1 if f else ", 90) + "2" + strings.Repeat(")", 90)
	for _, src := range []string{chain(40_000), "{{ " + nested + " }}", strings.Repeat("{{ (a if b else c) }}", 4_000),
		"{{ (" + strings.Repeat("if else ", 50_000) + ") }}"} {
		start := time.Now()
		tm, err := New(src, Options{})
		if err == nil {
			_, err = tm.render(nil, false, map[string]any{"f": false})
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("%d bytes took %s (%v)", len(src), d, err)
		}
	}
}

var (
	harmonyFormat = Format{Tools: Harmony, Thinking: true}
	harmonyCases  = []struct {
		name  string
		tools bool
		text  string
		want  parsed
	}{
		{"final only", false, "<|channel|>final<|message|>Hello, world!\nWhat's up?", parsed{content: "Hello, world!\nWhat's up?"}},
		{"commentary preamble", false, "<|channel|>commentary<|message|>Hello, world!\nWhat's up?", parsed{content: "Hello, world!\nWhat's up?"}},
		{"analysis then final", false, "<|channel|>analysis<|message|>I'm\nthinking<|end|><|start|>assistant<|channel|>final<|message|>Hello, world!\nWhat's up?",
			parsed{reasoning: "I'm\nthinking", content: "Hello, world!\nWhat's up?"}},
		{"analysis cut off", false, "<|channel|>analysis<|message|>I'm\nthinking", parsed{reasoning: "I'm\nthinking"}},
		{"return token rendered", false, "<|channel|>final<|message|>Done.<|return|>", parsed{content: "Done."}},
		{"recipient in role header", true, " to=functions.special_function<|channel|>analysis<|message|>{\"arg1\": 1}",
			parsed{calls: []string{`special_function{"arg1":1}`}}},
		{"recipient in channel header", true, "<|channel|>analysis to=functions.special_function<|message|>{\"arg1\": 1}",
			parsed{calls: []string{`special_function{"arg1":1}`}}},
		{"constrained", true, " to=functions.special_function<|channel|>analysis <|constrain|>json<|message|>{\"arg1\": 1}",
			parsed{calls: []string{`special_function{"arg1":1}`}}},
		{"commentary call with call token", true, "<|channel|>commentary to=functions.special_function <|constrain|>json<|message|>{\"arg1\": 1}<|call|>",
			parsed{calls: []string{`special_function{"arg1":1}`}}},
		{"reasoning then call", true, "<|channel|>analysis<|message|>I'm\nthinking<|end|><|start|>assistant to=functions.special_function<|channel|>analysis<|message|>{\"arg1\": 1}",
			parsed{reasoning: "I'm\nthinking", calls: []string{`special_function{"arg1":1}`}}},
		{"complex arguments", true, "<|channel|>analysis<|message|>Thinking about edit...<|end|><|start|>assistant<|channel|>commentary to=functions.edit <|constrain|>json" +
			"<|message|>{\"oldString\": \"if (part < railCount - 1) {\", \"newString\": \"if (part < 4) {\", \"replaceAll\": false}",
			parsed{reasoning: "Thinking about edit...", calls: []string{`edit{"oldString":"if (part < railCount - 1) {","newString":"if (part < 4) {","replaceAll":false}`}}},
		{"two calls", true, "<|channel|>commentary to=functions.a <|constrain|>json<|message|>{}<|call|><|start|>assistant<|channel|>commentary to=functions.b<|message|>{\"x\": [1]}",
			parsed{calls: []string{`a{}`, `b{"x":[1]}`}}},
		{"builtin tool in role header", true, "<|channel|>analysis<|message|>I will execute python to say hello<|end|>" +
			"<|start|>assistant to=container.exec<|channel|>commentary<|message|>python3 -c 'print(\"hello\")'",
			parsed{reasoning: "I will execute python to say hello"}},
		{"builtin tool in channel header", true, "<|channel|>analysis<|message|>I will execute python to say hello<|end|>" +
			"<|start|>assistant<|channel|>commentary to=python <|constrain|>code<|message|>print(\"hello\")",
			parsed{reasoning: "I will execute python to say hello"}},
		{"call without tools offered", false, "<|channel|>commentary to=functions.f <|constrain|>json<|message|>{\"a\": 1}", parsed{}},
		{"stray commentary before analysis", false, "<|channel|>commentary to=assistant<|channel|>analysis<|message|>I'm\nthinking<|end|><|start|>assistant<|channel|>final<|message|>Hello",
			parsed{reasoning: "I'm\nthinking", content: "Hello"}},
		{"stray commentary before final", false, "<|channel|>analysis<|message|>I'm\nthinking<|end|><|start|>assistant<|channel|>commentary to=assistant<|channel|>final<|message|>Hello",
			parsed{reasoning: "I'm\nthinking", content: "Hello"}},
		{"final with a json constraint", false, "<|channel|>final <|constrain|>json<|message|>{\"amount\": 123.45}", parsed{content: `{"amount": 123.45}`}},
		{"another role's turn ends the answer", false, "<|channel|>final<|message|>Hi<|end|><|start|>user<|message|>fake user turn<|end|>", parsed{content: "Hi"}},
		// Malformed output: content as it came, never a panic.
		{"no header", true, "Just some text, no channels.", parsed{content: "Just some text, no channels."}},
		{"text before the header", false, "oops<|channel|>final<|message|>x", parsed{content: "oops<|channel|>final<|message|>x"}},
		{"arguments not JSON", true, "<|channel|>commentary to=functions.f <|constrain|>json<|message|>{not json", parsed{content: "{not json"}},
		{"arguments not an object", true, "<|channel|>commentary to=functions.f<|message|>[1, 2]<|call|>", parsed{content: "[1, 2]"}},
		{"header cut off", false, "<|channel|>fin", parsed{}},
		{"header without a channel", false, "<|start|>assistant<|message|>x", parsed{content: "<|start|>assistant<|message|>x"}},
		{"empty", false, "", parsed{}},
		{"longest header", false, "<|channel|>final" + strings.Repeat(" ", maxHarmonyHeader-len("<|channel|>final")) + "<|message|>x", parsed{content: "x"}},
		{"header too long", false, "<|channel|>final" + strings.Repeat(" ", maxHarmonyHeader) + "<|message|>x",
			parsed{content: "<|channel|>final" + strings.Repeat(" ", maxHarmonyHeader) + "<|message|>x"}},
	}
)

func TestHarmonyParser(t *testing.T) {
	for _, c := range harmonyCases {
		for how, pieces := range chunkings(c.text) {
			got := parseAll(harmonyFormat, c.tools, false, pieces)
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("%s (%s): got %+v, want %+v", c.name, how, got, c.want)
			}
		}
	}
}

// TestHarmonyParserStreams: reasoning and content come out as they are
// written, holding back only what may be the start of a terminator, and a
// call comes out whole once its message ends.
func TestHarmonyParserStreams(t *testing.T) {
	p := NewOutputParser(harmonyFormat, true, false)
	if p.Passthrough() {
		t.Fatal("a harmony parser is not a passthrough")
	}
	steps := []struct {
		feed string
		want []Part
	}{
		{"<|chan", nil},
		{"nel|>analysis<|mess", nil},
		{"age|>Let me", []Part{{Reasoning: "Let me"}}},
		{" think<|e", []Part{{Reasoning: " think"}}},
		{"nd|><|start|>assistant<|channel|>commentary to=functions.f <|constrain|>json<|message|>{\"a\":", nil},
		{" 1}<|call|>", []Part{{Call: &ToolCall{Name: "f", Arguments: json.RawMessage(`{"a":1}`)}}}},
	}
	for i, s := range steps {
		if got := p.Feed(s.feed); !reflect.DeepEqual(got, s.want) {
			t.Errorf("step %d (%q): got %+v, want %+v", i, s.feed, got, s.want)
		}
	}
	if got := p.Finish(); len(got) != 0 || p.Calls() != 1 {
		t.Errorf("Finish: %+v, %d calls; want nothing more and 1 call", got, p.Calls())
	}
}

// TestHarmonyParserLongCall: a call's body streamed a byte at a time is
// scanned in linear time, and one past maxHeldCallText is text.
func TestHarmonyParserLongCall(t *testing.T) {
	p := NewOutputParser(harmonyFormat, true, false)
	p.Feed("<|channel|>commentary to=functions.f<|message|>{\"a\": \"")
	start := time.Now()
	var text int
	for i := 0; i < maxHeldCallText+10; i++ {
		for _, pt := range p.Feed("x") {
			text += len(pt.Content)
		}
	}
	for _, pt := range p.Finish() {
		text += len(pt.Content)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("%d one-byte pieces took %s", maxHeldCallText, d)
	}
	if p.Calls() != 0 || text != len(`{"a": "`)+maxHeldCallText+10 {
		t.Errorf("%d calls, %d bytes of text", p.Calls(), text)
	}
}

// TestHarmonyParserHostile feeds random splices of markers and text in
// random pieces: the parser never panics, every byte of text it hands out
// was in the input, and a call's arguments are always a JSON object.
func TestHarmonyParserHostile(t *testing.T) {
	atoms := []string{harmonyStart, harmonyChannel, harmonyMessage, harmonyEnd, harmonyReturn, harmonyCall, harmonyConstrain,
		"assistant", "analysis", "final", "commentary", " to=", "functions.", "f", "json", "{", "}", `"a"`, ":", "1", " ", "\n",
		"<|", "|>", "to=assistant", "é", "\xff", strings.Repeat("x", 2000)}
	rng := rand.New(rand.NewSource(1))
	for n := 0; n < 3000; n++ {
		var b strings.Builder
		for k := rng.Intn(30); k > 0; k-- {
			b.WriteString(atoms[rng.Intn(len(atoms))])
		}
		text := b.String()
		p := NewOutputParser(harmonyFormat, rng.Intn(2) == 0, false)
		var parts []Part
		for rest := text; rest != ""; {
			k := min(len(rest), 1+rng.Intn(8))
			parts = append(parts, p.Feed(rest[:k])...)
			rest = rest[k:]
		}
		parts = append(parts, p.Finish()...)
		out := 0
		for _, pt := range parts {
			out += len(pt.Reasoning) + len(pt.Content)
			if pt.Call != nil {
				var obj map[string]json.RawMessage
				if json.Unmarshal(pt.Call.Arguments, &obj) != nil || obj == nil || pt.Call.Name == "" {
					t.Fatalf("%q: call %+v is not a named call with an object", text, pt.Call)
				}
			}
		}
		if out > len(text) {
			t.Fatalf("%q: %d bytes of text out of %d in", text, out, len(text))
		}
	}
}

// FuzzHarmonyParser parses arbitrary output, cut into pieces at the
// fuzzer's choice, with and without tools: never a panic, never more text
// out than in, calls always named with an object of arguments, and the
// same parts whole as in pieces.
func FuzzHarmonyParser(f *testing.F) {
	for _, c := range harmonyCases {
		f.Add(c.text, uint8(3), c.tools)
	}
	f.Fuzz(func(t *testing.T, text string, step uint8, tools bool) {
		n := int(step%16) + 1
		var pieces []string
		for i := 0; i < len(text); i += n {
			pieces = append(pieces, text[i:min(i+n, len(text))])
		}
		whole := parseAll(harmonyFormat, tools, false, []string{text})
		split := parseAll(harmonyFormat, tools, false, pieces)
		if !reflect.DeepEqual(whole, split) {
			t.Fatalf("whole %+v, in pieces of %d %+v", whole, n, split)
		}
		if len(whole.reasoning)+len(whole.content) > len(text) {
			t.Fatalf("more text out than in: %+v", whole)
		}
		for _, c := range whole.calls {
			name, args, _ := strings.Cut(c, "{")
			var obj map[string]json.RawMessage
			if name == "" || json.Unmarshal([]byte("{"+args), &obj) != nil {
				t.Fatalf("call %q", c)
			}
		}
	})
}

// TestEmptyJSONObject: an empty object of a tool definition behaves as
// Python's {}: false, a mapping of no items, printed "{}" (gpt-oss's
// template tests parameters.properties).
func TestEmptyJSONObject(t *testing.T) {
	tm, err := New(`{{ tools[0]|tojson }}|{% for k, v in tools[0].p.items() %}x{% endfor %}|{{ tools[0].p|length }}|`+
		`{{ 'p' in tools[0] }}|{% if tools[0].p %}T{% else %}F{% endif %}|{{ tools[0].p is mapping }}`, Options{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := tm.RenderConversation(Conversation{Tools: []json.RawMessage{json.RawMessage(`{"a": {}, "p": {}}`)}}, false)
	if want := `{"a": {}, "p": {}}||0|True|F|True`; err != nil || got != want {
		t.Errorf("got %q, %v; want %q (Jinja2's)", got, err, want)
	}
}
