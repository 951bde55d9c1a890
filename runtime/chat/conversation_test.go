package chat

import (
	"encoding/json"
	"testing"
)

// TestToolFixtures renders the conversations with tools and tool calls on
// every template and compares byte for byte with Jinja2's output (tools,
// arguments and their key order as the client sent them, tojson's
// spacing, indent=4 in Llama 3.2).
func TestToolFixtures(t *testing.T) {
	f := loadFixtures(t)
	if len(f.ToolCases) == 0 {
		t.Fatal("fixtures hold no tool cases")
	}
	templates := newFixtureTemplates(t, &f)
	rendered := 0
	for _, c := range f.ToolCases {
		conv, ok := f.ToolConversations[c.Conversation]
		if !ok {
			t.Fatalf("unknown tool conversation %q", c.Conversation)
		}
		got, err := templates.get(c.Template).RenderConversation(Conversation{Messages: conv.Messages, Tools: conv.Tools}, c.AddGenerationPrompt)
		c.check(t, got, err)
		if c.Output != nil {
			rendered++
		}
	}
	if rendered < len(f.ToolCases)/2 {
		t.Errorf("only %d of %d tool cases render", rendered, len(f.ToolCases))
	}
}

// The fixtures' tool calls carry arguments as JSON objects, as Message's
// Arguments holds them.
func (tc *ToolCall) UnmarshalJSON(b []byte) error {
	var wire struct {
		ID       string
		Function struct {
			Name      string
			Arguments json.RawMessage
		}
	}
	if err := json.Unmarshal(b, &wire); err != nil {
		return err
	}
	*tc = ToolCall{ID: wire.ID, Name: wire.Function.Name, Arguments: wire.Function.Arguments}
	return nil
}

func TestJSONValueBadInput(t *testing.T) {
	for _, in := range []string{`{"a":`, `[1,]`, `{} {}`, `"x`, ``} {
		if _, err := jsonValue(json.RawMessage(in)); err == nil {
			t.Errorf("jsonValue(%q): no error", in)
		}
	}
	deep := ""
	for range maxToolJSONDepth + 2 {
		deep += "["
	}
	if _, err := jsonValue(json.RawMessage(deep)); err == nil {
		t.Error("no error on JSON nested too deeply")
	}
}
