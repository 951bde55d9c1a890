package serve

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"

	"github.com/wgllm/wgllm/runtime/chat"
	"github.com/wgllm/wgllm/runtime/engine"
	"github.com/wgllm/wgllm/runtime/grammar"
)

// Tool calling: the tools a request offers and how the model may use them
// (OpenAI's tools, tool_choice and parallel_tool_calls; Ollama's tools),
// validated here; rendered by the model's template (buildJob); the calls
// read back from the output by chat.OutputParser (accumulator).

// toolMode is tool_choice.
type toolMode int

const (
	toolsAuto     toolMode = iota // the model decides
	toolsNone                     // no calls: the tools are not shown
	toolsRequired                 // at least one call
	toolsNamed                    // a call of one function
)

// toolSpec is a request's tools.
type toolSpec struct {
	defs     []json.RawMessage // as sent (validated), for the template
	names    map[string]bool
	order    []string                   // the names as defined
	params   map[string]json.RawMessage // name → parameters schema ("" for none)
	mode     toolMode
	name     string // toolsNamed: the function
	parallel bool   // more than one call allowed
}

// offered reports whether the model is shown tools and may call them.
func (t *toolSpec) offered() bool { return t != nil && len(t.defs) > 0 && t.mode != toolsNone }

var toolNameRE = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,64}$`)

// toolDef is OpenAI's (and Ollama's) function tool definition.
type toolDef struct {
	Type     string `json:"type"`
	Function *struct {
		Name        string          `json:"name"`
		Description json.RawMessage `json:"description"`
		Parameters  json.RawMessage `json:"parameters"`
		Strict      json.RawMessage `json:"strict"`
	} `json:"function"`
}

// parseTools validates "tools": function definitions with a name and a
// JSON schema (an object schema, or none) for parameters.
func parseTools(raw json.RawMessage) (*toolSpec, *apiError) {
	spec := &toolSpec{names: map[string]bool{}, params: map[string]json.RawMessage{}, parallel: true}
	if isNull(raw) {
		return spec, nil
	}
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, invalidParam("tools", "tools must be an array of function definitions")
	}
	for i, one := range list {
		param := fmt.Sprintf("tools[%d]", i)
		var d toolDef
		if err := json.Unmarshal(one, &d); err != nil {
			return nil, invalidParam(param, "%s: want {\"type\": \"function\", \"function\": {\"name\": …, \"parameters\": {…}}}: %v", param, err)
		}
		switch {
		case d.Type != "function" && d.Type != "":
			return nil, invalidParam(param+".type", "%s.type %q: only function tools are supported", param, d.Type)
		case d.Function == nil:
			return nil, invalidParam(param+".function", "%s.function is required", param)
		case !toolNameRE.MatchString(d.Function.Name):
			return nil, invalidParam(param+".function.name", "%s.function.name %q: want 1 to 64 letters, digits, _ . : or -", param, d.Function.Name)
		case spec.names[d.Function.Name]:
			return nil, invalidParam(param+".function.name", "%s.function.name %q is defined twice", param, d.Function.Name)
		}
		if !isNull(d.Function.Parameters) {
			if err := checkSchema(d.Function.Parameters, 0); err != nil {
				return nil, invalidParam(param+".function.parameters", "%s.function.parameters is not a valid JSON schema: %v", param, err)
			}
			var top map[string]json.RawMessage
			if json.Unmarshal(d.Function.Parameters, &top) != nil {
				return nil, invalidParam(param+".function.parameters", "%s.function.parameters must be a JSON schema object", param)
			}
		}
		spec.names[d.Function.Name] = true
		spec.order = append(spec.order, d.Function.Name)
		spec.params[d.Function.Name] = d.Function.Parameters
		spec.defs = append(spec.defs, canonicalTool(one))
	}
	return spec, nil
}

// canonicalTool adds "type": "function" where a definition leaves it out
// (some Ollama clients do); the function's JSON stays as the client
// wrote it, for the template.
func canonicalTool(raw json.RawMessage) json.RawMessage {
	var probe map[string]json.RawMessage
	_ = json.Unmarshal(raw, &probe)
	if _, ok := probe["type"]; ok {
		return raw
	}
	return json.RawMessage(`{"type": "function", "function": ` + string(probe["function"]) + `}`)
}

// JSON schema keywords and the JSON types their values must have, for
// checkSchema: enough to catch a definition that is not a schema at all.
var (
	schemaKeywordsOfSchemas = map[string]bool{"items": true, "additionalProperties": true, "not": true,
		"additionalItems": true, "contains": true, "propertyNames": true, "if": true, "then": true, "else": true}
	schemaKeywordsOfSchemaLists = map[string]bool{"anyOf": true, "oneOf": true, "allOf": true, "prefixItems": true}
	schemaKeywordsOfSchemaMaps  = map[string]bool{"properties": true, "$defs": true, "definitions": true, "patternProperties": true}
	schemaTypes                 = map[string]bool{"string": true, "number": true, "integer": true, "boolean": true,
		"object": true, "array": true, "null": true}
)

const maxSchemaDepth = 32

// checkSchema checks that raw is a JSON schema: a boolean or an object
// whose keywords hold values of the right kinds (type names, schemas,
// lists and maps of schemas, required as a list of strings).
func checkSchema(raw json.RawMessage, depth int) error {
	if depth > maxSchemaDepth {
		return fmt.Errorf("nested more than %d deep", maxSchemaDepth)
	}
	var b bool
	if json.Unmarshal(raw, &b) == nil {
		return nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return fmt.Errorf("a schema is an object or a boolean, not %s", abbreviate(raw))
	}
	for k, v := range obj {
		switch {
		case k == "type":
			var one string
			var many []string
			if json.Unmarshal(v, &one) == nil {
				many = []string{one}
			} else if json.Unmarshal(v, &many) != nil {
				return fmt.Errorf("type must be a type name or a list of them, not %s", abbreviate(v))
			}
			for _, t := range many {
				if !schemaTypes[t] {
					return fmt.Errorf("unknown type %q", t)
				}
			}
		case k == "required":
			var names []string
			if json.Unmarshal(v, &names) != nil {
				return fmt.Errorf("required must be a list of property names, not %s", abbreviate(v))
			}
		case k == "enum":
			var values []json.RawMessage
			if json.Unmarshal(v, &values) != nil {
				return fmt.Errorf("enum must be a list, not %s", abbreviate(v))
			}
		case schemaKeywordsOfSchemas[k]:
			if k == "items" && bytes.HasPrefix(bytes.TrimSpace(v), []byte("[")) {
				if err := checkSchemaList(k, v, depth); err != nil {
					return err
				}
				continue
			}
			if err := checkSchema(v, depth+1); err != nil {
				return fmt.Errorf("%s: %w", k, err)
			}
		case schemaKeywordsOfSchemaLists[k]:
			if err := checkSchemaList(k, v, depth); err != nil {
				return err
			}
		case schemaKeywordsOfSchemaMaps[k]:
			var m map[string]json.RawMessage
			if json.Unmarshal(v, &m) != nil || m == nil {
				return fmt.Errorf("%s must be an object of schemas, not %s", k, abbreviate(v))
			}
			for name, s := range m {
				if err := checkSchema(s, depth+1); err != nil {
					return fmt.Errorf("%s.%s: %w", k, name, err)
				}
			}
		}
	}
	return nil
}

func checkSchemaList(k string, v json.RawMessage, depth int) error {
	var list []json.RawMessage
	if json.Unmarshal(v, &list) != nil {
		return fmt.Errorf("%s must be a list of schemas, not %s", k, abbreviate(v))
	}
	for i, s := range list {
		if err := checkSchema(s, depth+1); err != nil {
			return fmt.Errorf("%s[%d]: %w", k, i, err)
		}
	}
	return nil
}

// parseToolChoice reads tool_choice: "auto", "none", "required", or
// {"type": "function", "function": {"name": …}} naming one of the tools.
func (t *toolSpec) parseToolChoice(raw json.RawMessage) *apiError {
	if isNull(raw) {
		return nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		switch s {
		case "auto":
			t.mode = toolsAuto
		case "none":
			t.mode = toolsNone
		case "required":
			t.mode = toolsRequired
		default:
			return invalidParam("tool_choice", "tool_choice %q: want auto, none, required or {\"type\": \"function\", \"function\": {\"name\": …}}", s)
		}
		if t.mode == toolsRequired && len(t.defs) == 0 {
			return invalidParam("tool_choice", "tool_choice required needs tools")
		}
		return nil
	}
	var named struct {
		Type     string `json:"type"`
		Function struct {
			Name string `json:"name"`
		} `json:"function"`
	}
	if err := json.Unmarshal(raw, &named); err != nil || named.Type != "function" {
		return invalidParam("tool_choice", "tool_choice: want auto, none, required or {\"type\": \"function\", \"function\": {\"name\": …}}")
	}
	if !t.names[named.Function.Name] {
		return invalidParam("tool_choice.function.name", "tool_choice names %q, which is not among the tools", named.Function.Name)
	}
	t.mode, t.name = toolsNamed, named.Function.Name
	return nil
}

func isNull(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) == 0 || bytes.Equal(raw, []byte("null"))
}

// openAIToolCallIn is a tool call of an assistant message in a request.
type openAIToolCallIn struct {
	ID       string `json:"id"`
	Type     string `json:"type"`
	Function struct {
		Name      string          `json:"name"`
		Arguments json.RawMessage `json:"arguments"` // a string of JSON (OpenAI); an object is taken too
	} `json:"function"`
}

// historyCall validates one tool call of the conversation's history.
func historyCall(param, id, name string, args json.RawMessage) (engine.ToolCall, *apiError) {
	if name == "" {
		return engine.ToolCall{}, invalidParam(param+".function.name", "%s.function.name is required", param)
	}
	var s string
	if json.Unmarshal(args, &s) == nil {
		args = json.RawMessage(s)
	}
	if isNull(args) {
		args = json.RawMessage("{}")
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(args, &obj); err != nil || obj == nil {
		return engine.ToolCall{}, invalidParam(param+".function.arguments", "%s.function.arguments must be a JSON object (as a string)", param)
	}
	return engine.ToolCall{ID: id, Name: name, Arguments: args}, nil
}

// checkToolAnswers checks that every tool message answers a call made
// before it (by id, where the protocol has ids).
func checkToolAnswers(msgs []engine.ChatMessage) *apiError {
	calls := map[string]bool{}
	for i, m := range msgs {
		for _, c := range m.ToolCalls {
			calls[c.ID] = true
		}
		if m.Role != "tool" {
			continue
		}
		param := fmt.Sprintf("messages[%d].tool_call_id", i)
		if m.ToolCallID == "" {
			return invalidParam(param, "%s is required in a tool message", param)
		}
		if !calls[m.ToolCallID] {
			return invalidParam(param, "%s %q answers no tool call of an earlier assistant message", param, m.ToolCallID)
		}
	}
	return nil
}

// toolConstraint is how a required (or named) call is made sure of: the
// format's opening of a call as the start of the answer, then a grammar
// of the call's JSON (its name one of the tools, its arguments what the
// tool's parameters schema accepts), so the output is always a call. When
// a schema cannot be compiled (a keyword the grammar cannot enforce), the
// prefill carries the opening and the name, and the output is checked
// after the fact (accumulator.finish).
func toolConstraint(f chat.ToolFormat, t *toolSpec) (string, *grammar.Grammar) {
	if f == chat.Harmony {
		return harmonyConstraint(t)
	}
	argKey := "arguments"
	if f == chat.Llama3 {
		argKey = "parameters"
	}
	names := t.order
	if t.mode == toolsNamed {
		names = []string{t.name}
	}
	calls := make([]any, len(names))
	for i, name := range names {
		params := t.params[name]
		if isNull(params) {
			params = json.RawMessage(`{"type": "object"}`)
		}
		calls[i] = map[string]any{"type": "object", "additionalProperties": false, "required": []string{"name", argKey},
			"properties": orderedProps{{"name", map[string]any{"const": name}}, {argKey, params}}}
	}
	var schema any = map[string]any{"anyOf": calls}
	if len(calls) == 1 {
		schema = calls[0]
	}
	prefill := ""
	switch f {
	case chat.Hermes:
		prefill = hermesCallOpen
	case chat.Mistral:
		prefill = "[TOOL_CALLS]"
		list := map[string]any{"type": "array", "items": schema, "minItems": 1}
		if !t.parallel {
			list["maxItems"] = 1
		}
		schema = list
	}
	raw, err := json.Marshal(schema)
	if err == nil {
		if g, aerr := compileSchema("tools", raw); aerr == nil {
			return prefill, g
		}
	}
	return toolPrefill(f, t), nil
}

const hermesCallOpen = "<tool_call>\n"

// orderedProps is a JSON object whose members keep their order: the
// grammar generates properties in the order written, and the call's name
// comes first.
type orderedProps []struct {
	key   string
	value any
}

func (o orderedProps) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, kv := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(kv.key)
		v, err := json.Marshal(kv.value)
		if err != nil {
			return nil, err
		}
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// harmonyConstraint is toolConstraint for gpt-oss: a call's header names
// the function, so with one function to call (a named call, or a required
// call of the only tool) the prefill is the whole header and the grammar
// the function's parameters; with several, the prefill stops before the
// name and the output is checked after the fact.
func harmonyConstraint(t *toolSpec) (string, *grammar.Grammar) {
	names := t.order
	if t.mode == toolsNamed {
		names = []string{t.name}
	}
	if len(names) != 1 {
		return harmonyCallOpen, nil
	}
	prefill := harmonyCallOpen + names[0] + " <|constrain|>json<|message|>"
	params := t.params[names[0]]
	if isNull(params) {
		params = json.RawMessage(`{"type": "object"}`)
	}
	g, aerr := compileSchema("tools", params)
	if aerr != nil {
		return prefill, nil
	}
	return prefill, g
}

// harmonyCallOpen opens a gpt-oss call's header, before the function's
// name.
const harmonyCallOpen = "<|channel|>commentary to=functions."

// toolPrefill is how the assistant's turn starts when the request
// requires a call: the format's opening of a call (with the function's
// name for a named one), so that the model writes the rest of one.
func toolPrefill(f chat.ToolFormat, t *toolSpec) string {
	name := ""
	if t.mode == toolsNamed {
		name = t.name
	}
	switch f {
	case chat.Hermes:
		if name != "" {
			return hermesCallOpen + `{"name": "` + name + `", "arguments": `
		}
		return hermesCallOpen + `{"name": "`
	case chat.Llama3:
		if name != "" {
			return `{"name": "` + name + `", "parameters": `
		}
		return `{"name": "`
	case chat.Mistral:
		return "[TOOL_CALLS]"
	case chat.Harmony:
		prefill, _ := harmonyConstraint(t)
		return prefill
	}
	return ""
}
