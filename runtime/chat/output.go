package chat

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode"
)

// What a template says of its model's output, and a parser that splits
// the output as it streams into reasoning (<think>…</think>), text and
// tool calls in the template family's format.

// ToolFormat is how a template family's model writes a tool call.
type ToolFormat string

const (
	// NoTools: the template renders no tools.
	NoTools ToolFormat = ""
	// Hermes: <tool_call>{"name": …, "arguments": {…}}</tool_call>, one
	// block a call (Qwen 2.5 and 3, Hermes, and models trained like them).
	Hermes ToolFormat = "hermes"
	// Llama3: the whole answer is {"name": …, "parameters": {…}},
	// optionally after <|python_tag|>; several calls separated by ";".
	Llama3 ToolFormat = "llama3"
	// Mistral: [TOOL_CALLS] then a JSON array of {"name", "arguments"}
	// (v3), or name[ARGS]{…} per call (v11 and later).
	Mistral ToolFormat = "mistral"
	// Harmony: gpt-oss's channels, reasoning, answer and calls alike
	// (harmony.go): <|channel|>commentary to=functions.NAME
	// <|constrain|>json<|message|>{…}<|call|>.
	Harmony ToolFormat = "harmony"
)

// Format is what a template tells of the output of its model.
type Format struct {
	Tools ToolFormat
	// Thinking: the model may write its reasoning in <think>…</think>
	// before the answer (the template mentions the tags).
	Thinking bool
}

// Format recognises the template's family from markers in its source.
func (t *Template) Format() Format { return DetectFormat(t.source) }

// DetectFormat is Format for a template source.
func DetectFormat(source string) Format {
	var f Format
	if strings.Contains(source, harmonyChannel) {
		return Format{Tools: Harmony, Thinking: true}
	}
	switch {
	case strings.Contains(source, "<tool_call>"):
		f.Tools = Hermes
	case strings.Contains(source, "[TOOL_CALLS]"):
		f.Tools = Mistral
	case strings.Contains(source, `"parameters"`) && (strings.Contains(source, "<|python_tag|>") || strings.Contains(source, "ipython")):
		f.Tools = Llama3
	}
	f.Thinking = strings.Contains(source, "<think>") || strings.Contains(source, "</think>")
	return f
}

// OpensThinking reports whether prompt, rendered in format f, ends
// inside <think> (the template opened it): the output then starts with
// reasoning (NewOutputParser's inThink).
func (f Format) OpensThinking(prompt string) bool {
	return f.Thinking && strings.HasSuffix(strings.TrimRightFunc(prompt, unicode.IsSpace), thinkOpen)
}

// Part is a piece of parsed output: reasoning, text or one complete call.
type Part struct {
	Reasoning string
	Content   string
	Call      *ToolCall // Arguments is compact JSON of an object
}

// Markers of the formats.
const (
	thinkOpen       = "<think>"
	thinkClose      = "</think>"
	hermesOpen      = "<tool_call>"
	hermesClose     = "</tool_call>"
	mistralMarker   = "[TOOL_CALLS]"
	mistralArgs     = "[ARGS]"
	llamaPythonTag  = "<|python_tag|>"
	maxHeldCallText = 1 << 20 // an unclosed call longer than this is text
)

type parseState int

const (
	stateStart   parseState = iota // nothing seen: maybe <think>
	stateThink                     // inside <think>
	stateAnswer                    // after any reasoning, nothing of the answer yet
	stateContent                   // text of the answer
	stateCall                      // inside a Hermes <tool_call>
	stateRest                      // everything left is calls (Mistral, Llama 3)
)

// OutputParser splits a generation as it streams. It is not safe for
// concurrent use.
type OutputParser struct {
	format   Format
	tools    bool // the request offered tools: look for calls
	state    parseState
	buf      string // text not yet handed out
	calls    int
	reasoned bool   // the output had a <think> part
	space    string // the space before a call's marker
	harmony  *harmonyParser
}

// NewOutputParser parses output in format f. With tools, calls are
// recognised (else all of the answer is text). inThink: the prompt ended
// inside <think> (the template opened it), so the output starts with
// reasoning.
func NewOutputParser(f Format, tools, inThink bool) *OutputParser {
	p := &OutputParser{format: f, tools: tools && f.Tools != NoTools, state: stateStart}
	if f.Tools == Harmony {
		p.harmony = &harmonyParser{tools: p.tools}
		return p
	}
	switch {
	case inThink:
		p.state = stateThink
	case !f.Thinking:
		p.state = stateAnswer
	}
	return p
}

// Calls counts the tool calls parsed so far.
func (p *OutputParser) Calls() int {
	if p.harmony != nil {
		return p.harmony.calls
	}
	return p.calls
}

// Passthrough reports whether the parser hands every piece out as text
// unchanged (no reasoning, no calls to look for): a caller may skip it.
func (p *OutputParser) Passthrough() bool {
	return p.harmony == nil && !p.tools && p.state == stateAnswer
}

// Feed takes the next piece of output and returns what is known of it.
func (p *OutputParser) Feed(text string) []Part {
	if p.harmony != nil {
		p.harmony.buf += text
		return p.harmony.step(false)
	}
	p.buf += text
	return p.step(false)
}

// Finish hands out what is left once the output has ended: a call left
// unclosed is parsed if it is whole JSON, else it is text.
func (p *OutputParser) Finish() []Part {
	if p.harmony != nil {
		return p.harmony.step(true)
	}
	return p.step(true)
}

// step consumes p.buf as far as it can; at the end, all of it.
func (p *OutputParser) step(end bool) []Part {
	var out []Part
	for {
		switch p.state {
		case stateStart:
			trimmed := strings.TrimLeftFunc(p.buf, unicode.IsSpace)
			switch {
			case strings.HasPrefix(trimmed, thinkOpen):
				p.buf = trimmed[len(thinkOpen):]
				p.state = stateThink
			case !end && strings.HasPrefix(thinkOpen, trimmed):
				return out // may still become <think>
			default:
				p.state = stateAnswer
			}
		case stateThink:
			p.reasoned = true
			if i := strings.Index(p.buf, thinkClose); i >= 0 {
				out = appendReasoning(out, p.buf[:i])
				p.buf = p.buf[i+len(thinkClose):]
				p.state = stateAnswer
				continue
			}
			if end {
				out = appendReasoning(out, p.buf)
				p.buf = ""
				return out
			}
			keep := heldPrefix(p.buf, thinkClose)
			out = appendReasoning(out, p.buf[:len(p.buf)-keep])
			p.buf = p.buf[len(p.buf)-keep:]
			return out
		case stateAnswer:
			// Space between the reasoning and the answer, or before a
			// call, is not text.
			if p.reasoned || p.tools {
				p.buf = strings.TrimLeftFunc(p.buf, unicode.IsSpace)
				if p.buf == "" && !end {
					return out
				}
			}
			p.state = stateContent
			if p.tools && p.format.Tools == Llama3 {
				switch {
				case strings.HasPrefix(p.buf, "{"), strings.HasPrefix(p.buf, llamaPythonTag):
					p.state = stateRest
				case !end && strings.HasPrefix(llamaPythonTag, p.buf):
					p.state = stateAnswer
					return out
				}
			}
		case stateContent:
			marker := ""
			if p.tools {
				switch p.format.Tools {
				case Hermes:
					marker = hermesOpen
				case Mistral:
					marker = mistralMarker
				}
			}
			if marker != "" {
				if i := strings.Index(p.buf, marker); i >= 0 {
					text := strings.TrimRightFunc(p.buf[:i], unicode.IsSpace)
					out = p.appendContent(out, text)
					p.space = p.buf[len(text):i] // text again if the call is not one
					p.buf = p.buf[i+len(marker):]
					p.state = stateCall
					if marker == mistralMarker {
						p.state = stateRest
					}
					continue
				}
			}
			if end {
				out = p.appendContent(out, p.buf)
				p.buf = ""
				return out
			}
			keep := 0
			if marker != "" {
				keep = heldPrefix(p.buf, marker)
			}
			emit := p.buf[:len(p.buf)-keep]
			if p.tools {
				// Space may only separate calls: hold it until text follows.
				trimmed := strings.TrimRightFunc(emit, unicode.IsSpace)
				keep += len(emit) - len(trimmed)
				emit = trimmed
			}
			out = p.appendContent(out, emit)
			p.buf = p.buf[len(emit):]
			return out
		case stateCall:
			i := strings.Index(p.buf, hermesClose)
			if i < 0 && !end && len(p.buf) < maxHeldCallText {
				return out
			}
			body, rest := p.buf, ""
			if i >= 0 {
				body, rest = p.buf[:i], p.buf[i+len(hermesClose):]
			}
			if call, err := parseCallObject(body, "arguments"); err == nil {
				out = append(out, Part{Call: call})
				p.calls++
			} else {
				text := p.space + hermesOpen + body
				if i >= 0 {
					text += hermesClose
				}
				out = p.appendContent(out, text)
			}
			p.space = ""
			p.buf = rest
			p.state = stateContent
			if end && p.buf == "" {
				return out
			}
		case stateRest:
			if !end {
				return out
			}
			calls, err := p.parseRest(p.buf)
			if err != nil {
				text := p.buf
				if p.format.Tools == Mistral {
					text = p.space + mistralMarker + text
				}
				out = p.appendContent(out, text)
			}
			for _, c := range calls {
				out = append(out, Part{Call: c})
				p.calls++
			}
			p.buf = ""
			return out
		}
	}
}

// appendContent hands out text of the answer. Where calls are looked
// for, space alone is dropped: it only separates calls (or ends the text
// before one).
func (p *OutputParser) appendContent(out []Part, text string) []Part {
	if text == "" || (p.tools && strings.TrimSpace(text) == "") {
		return out
	}
	return append(out, Part{Content: text})
}

func appendReasoning(out []Part, text string) []Part {
	if text == "" {
		return out
	}
	return append(out, Part{Reasoning: text})
}

// heldPrefix is the length of the longest suffix of s that is a proper
// prefix of marker: text that may be the start of the marker.
func heldPrefix(s, marker string) int {
	for n := min(len(s), len(marker)-1); n > 0; n-- {
		if strings.HasSuffix(s, marker[:n]) {
			return n
		}
	}
	return 0
}

// parseRest parses the calls that make up the rest of the output.
func (p *OutputParser) parseRest(text string) ([]*ToolCall, error) {
	text = strings.TrimSpace(text)
	switch p.format.Tools {
	case Mistral:
		if strings.HasPrefix(text, "[") {
			var list []json.RawMessage
			if err := json.Unmarshal([]byte(text), &list); err != nil {
				return nil, err
			}
			calls := make([]*ToolCall, 0, len(list))
			for _, raw := range list {
				c, err := parseCallObject(string(raw), "arguments")
				if err != nil {
					return nil, err
				}
				calls = append(calls, c)
			}
			return nonEmpty(calls)
		}
		// v11: name[ARGS]{…}, repeated after further [TOOL_CALLS].
		var calls []*ToolCall
		for _, one := range strings.Split(text, mistralMarker) {
			name, args, ok := strings.Cut(strings.TrimSpace(one), mistralArgs)
			if !ok {
				return nil, errors.New("no [ARGS] after the function name")
			}
			c, err := newCall(strings.TrimSpace(name), json.RawMessage(args))
			if err != nil {
				return nil, err
			}
			calls = append(calls, c)
		}
		return nonEmpty(calls)
	case Llama3:
		text = strings.TrimSpace(strings.TrimPrefix(text, llamaPythonTag))
		var calls []*ToolCall
		for _, one := range splitJSONObjects(text) {
			c, err := parseCallObject(one, "parameters", "arguments")
			if err != nil {
				return nil, err
			}
			calls = append(calls, c)
		}
		return nonEmpty(calls)
	}
	return nil, errors.New("no calls in this format")
}

func nonEmpty(calls []*ToolCall) ([]*ToolCall, error) {
	if len(calls) == 0 {
		return nil, errors.New("no calls")
	}
	return calls, nil
}

// splitJSONObjects splits "{…}; {…}" (or objects on their own lines) into
// the objects' texts; text that is not such a sequence comes back whole,
// for the parse to reject.
func splitJSONObjects(text string) []string {
	dec := json.NewDecoder(strings.NewReader(text))
	var out []string
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			if len(out) == 0 || strings.TrimSpace(text[dec.InputOffset():]) != "" {
				return []string{text}
			}
			return out
		}
		out = append(out, string(raw))
		rest := strings.TrimLeft(text[dec.InputOffset():], " \t\r\n;")
		if rest == "" {
			return out
		}
		text = rest
		dec = json.NewDecoder(strings.NewReader(text))
	}
}

// parseCallObject parses {"name": …, ARGS: {…}} with the first of
// argKeys present (arguments given as a JSON string are decoded too).
func parseCallObject(text string, argKeys ...string) (*ToolCall, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal([]byte(strings.TrimSpace(text)), &obj); err != nil {
		return nil, err
	}
	var name string
	if err := json.Unmarshal(obj["name"], &name); err != nil {
		return nil, errors.New(`the call has no string "name"`)
	}
	args := json.RawMessage("{}")
	for _, k := range argKeys {
		if raw, ok := obj[k]; ok {
			args = raw
			break
		}
	}
	var s string
	if json.Unmarshal(args, &s) == nil {
		args = json.RawMessage(s)
	}
	return newCall(name, args)
}

// newCall checks a call: a name and arguments that are a JSON object.
func newCall(name string, args json.RawMessage) (*ToolCall, error) {
	if name == "" {
		return nil, errors.New("the call has no function name")
	}
	args = bytes.TrimSpace(args)
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(args, &obj); err != nil || obj == nil {
		return nil, fmt.Errorf("the arguments of %s are not a JSON object", name)
	}
	var compact bytes.Buffer
	_ = json.Compact(&compact, args)
	return &ToolCall{Name: name, Arguments: compact.Bytes()}, nil
}
