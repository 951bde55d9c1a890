package chat

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/nikolalohinski/gonja/v2/exec"
)

// Conversations with tools: the variables transformers' apply_chat_template
// gives a template for tool use (tools; messages with tool_calls,
// tool_call_id and name; enable_thinking), and what a template says of the
// output format it trained its model on (Format).

// ToolCall is a function call an assistant message made.
type ToolCall struct {
	ID        string          `json:"id,omitempty"`
	Name      string          `json:"name"`
	Arguments json.RawMessage `json:"arguments"` // a JSON object
}

// Conversation is what a template renders: the messages, the tools the
// model may call (OpenAI function tool definitions,
// {"type":"function","function":{"name",…}}, as the client sent them) and
// whether a reasoning model should think (nil: the template's default),
// and how hard ("": the template's default).
type Conversation struct {
	Messages []Message
	Tools    []json.RawMessage
	Thinking *bool
	// ReasoningEffort is the template's reasoning_effort (gpt-oss: low,
	// medium or high).
	ReasoningEffort string
}

// RenderConversation is Render with tools and thinking: the template
// also sees tools (when there are some), enable_thinking (when set), and
// each message's tool_calls ({"id","type":"function","function":{"name",
// "arguments": {…}}}, arguments a mapping as transformers passes them),
// tool_call_id, name, and reasoning as both reasoning_content and thinking.
// Content is always a string, "" for an assistant turn of tool calls only
// (OpenAI clients send null): several templates concatenate it unchecked.
// reasoning_effort is set when given.
//
// For gpt-oss, as llama.cpp does, an assistant turn with reasoning and
// tool calls has its content dropped: its template refuses both, and
// renders the reasoning as the analysis before the call.
func (t *Template) RenderConversation(c Conversation, addGenerationPrompt bool) (string, error) {
	vars := map[string]any{}
	if len(c.Tools) > 0 {
		tools := make([]any, len(c.Tools))
		for i, raw := range c.Tools {
			v, err := jsonValue(raw)
			if err != nil {
				return "", fmt.Errorf("chat: tools[%d]: %w", i, err)
			}
			tools[i] = v
		}
		vars["tools"] = tools
	}
	if c.Thinking != nil {
		vars["enable_thinking"] = *c.Thinking
	}
	if c.ReasoningEffort != "" {
		vars["reasoning_effort"] = c.ReasoningEffort
	}
	harmony := t.Format().Tools == Harmony
	msgs := make(messageList, len(c.Messages))
	for i, m := range c.Messages {
		if harmony && m.Reasoning != "" && len(m.ToolCalls) > 0 {
			m.Content = ""
		}
		d, err := messageDict(m)
		if err != nil {
			return "", fmt.Errorf("chat: messages[%d]: %w", i, err)
		}
		msgs[i] = d
	}
	return t.render(msgs, addGenerationPrompt, vars)
}

func messageDict(m Message) (*exec.Dict, error) {
	d := exec.NewDict()
	add := func(k string, v any) {
		d.Pairs = append(d.Pairs, &exec.Pair{Key: exec.AsValue(k), Value: exec.AsValue(v)})
	}
	add("role", m.Role)
	add("content", m.Content)
	if len(m.ToolCalls) > 0 {
		calls := make([]any, len(m.ToolCalls))
		for j, tc := range m.ToolCalls {
			args, err := jsonValue(tc.Arguments)
			if err != nil {
				return nil, fmt.Errorf("tool_calls[%d].arguments: %w", j, err)
			}
			fn := exec.NewDict()
			fn.Pairs = append(fn.Pairs,
				&exec.Pair{Key: exec.AsValue("name"), Value: exec.AsValue(tc.Name)},
				&exec.Pair{Key: exec.AsValue("arguments"), Value: exec.AsValue(args)})
			call := exec.NewDict()
			call.Pairs = append(call.Pairs,
				&exec.Pair{Key: exec.AsValue("id"), Value: exec.AsValue(tc.ID)},
				&exec.Pair{Key: exec.AsValue("type"), Value: exec.AsValue("function")},
				&exec.Pair{Key: exec.AsValue("function"), Value: exec.AsValue(fn)})
			calls[j] = call
		}
		add("tool_calls", calls)
	}
	if m.ToolCallID != "" {
		add("tool_call_id", m.ToolCallID)
	}
	if m.Name != "" {
		add("name", m.Name)
	}
	if m.Reasoning != "" {
		add("reasoning_content", m.Reasoning)
		add("thinking", m.Reasoning)
	}
	return d, nil
}

// maxToolJSONDepth bounds the nesting of tool definitions and arguments.
const maxToolJSONDepth = 64

// jsonValue decodes JSON into template values that keep the order of
// object keys (a Dict), as Python's json.loads does, so that tojson
// prints a tool's schema as the client wrote it. Integers stay integers.
func jsonValue(raw json.RawMessage) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	v, err := decodeOrdered(dec, 0)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("data after the JSON value")
	}
	return v, nil
}

func decodeOrdered(dec *json.Decoder, depth int) (any, error) {
	if depth > maxToolJSONDepth {
		return nil, errors.New("JSON nested too deeply")
	}
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	switch x := tok.(type) {
	case json.Delim:
		switch x {
		case '{':
			d := exec.NewDict()
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, fmt.Errorf("invalid JSON: %w", err)
				}
				key, _ := kt.(string)
				v, err := decodeOrdered(dec, depth+1)
				if err != nil {
					return nil, err
				}
				d.Pairs = append(d.Pairs, &exec.Pair{Key: exec.AsValue(key), Value: exec.AsValue(v)})
			}
			_, err := dec.Token() // }
			if len(d.Pairs) == 0 {
				// gonja holds every Dict true; Python holds {} false
				// (gpt-oss's template tests "parameters.properties").
				return map[string]any{}, err
			}
			return d, err
		case '[':
			list := []any{}
			for dec.More() {
				v, err := decodeOrdered(dec, depth+1)
				if err != nil {
					return nil, err
				}
				list = append(list, v)
			}
			_, err := dec.Token() // ]
			return list, err
		}
		return nil, fmt.Errorf("invalid JSON: unexpected %v", x)
	case json.Number:
		if i, err := x.Int64(); err == nil && !strings.ContainsAny(x.String(), ".eE") {
			return int(i), nil
		}
		f, err := x.Float64()
		if err != nil {
			return nil, fmt.Errorf("invalid JSON number %s", x)
		}
		return f, nil
	default: // string, bool, nil
		return x, nil
	}
}
