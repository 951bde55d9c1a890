package chat

import (
	"encoding/json"
	"strings"
	"unicode"
)

// gpt-oss writes its answer in OpenAI's harmony format: a sequence of
// messages, each a header, <|message|>, a body and a terminator. The
// prompt ends with "<|start|>assistant", so the output opens with the
// first header's rest:
//
//	<|channel|>analysis<|message|>reasoning<|end|>
//	<|start|>assistant<|channel|>commentary to=functions.NAME <|constrain|>json<|message|>{…}<|call|>
//	<|start|>assistant<|channel|>final<|message|>the answer<|return|>
//
// <|return|> and <|call|> end the generation (the tokenizer makes them
// end-of-generation tokens), <|end|> only a message. As llama.cpp's
// gpt-oss parser (common/chat.cpp) reads it: analysis is reasoning; final,
// and commentary without a recipient (a preamble), are content; a message
// to functions.NAME (the recipient in the role header or in the channel
// header) is a call of NAME when tools were offered; a message to any
// other recipient (a built-in tool such as python or browser, which this
// server does not run) is dropped; a stray "<|channel|>commentary
// to=assistant" before the real channel is ignored. Output that does not
// open with a header (a model that ignores the format) is content as it
// stands.

const (
	harmonyStart     = "<|start|>"
	harmonyChannel   = "<|channel|>"
	harmonyMessage   = "<|message|>"
	harmonyEnd       = "<|end|>"
	harmonyReturn    = "<|return|>"
	harmonyCall      = "<|call|>"
	harmonyConstrain = "<|constrain|>"
	// A header is a few dozen bytes; a longer run before <|message|> is
	// not one.
	maxHarmonyHeader = 1024
)

var harmonyTerminators = []string{harmonyEnd, harmonyReturn, harmonyCall}

type harmonyState int

const (
	harmonyInHeader harmonyState = iota // before a message's <|message|>
	harmonyInBody                       // inside a message's body
	harmonyRaw                          // not harmony: the rest is content
	harmonyDone                         // a turn other than the assistant's began: the rest is dropped
)

// harmonyBody is what a message's body becomes.
type harmonyBody int

const (
	bodyReasoning harmonyBody = iota
	bodyContent
	bodyCall
	bodyDropped
)

// harmonyParser is OutputParser's state for the harmony format.
type harmonyParser struct {
	tools bool
	state harmonyState
	buf   string
	body  harmonyBody
	name  string // bodyCall: the function
	// call holds a call's body until it ends (buf keeps only what may be
	// the start of a terminator, so each piece costs its own length).
	call  []byte
	calls int
}

func (h *harmonyParser) step(end bool) []Part {
	var out []Part
	for {
		switch h.state {
		case harmonyInHeader:
			h.buf = strings.TrimLeftFunc(h.buf, unicode.IsSpace)
			i := strings.Index(h.buf, harmonyMessage)
			if i < 0 {
				switch {
				case !couldBeHeader(h.buf) || len(h.buf) >= maxHarmonyHeader+len(harmonyMessage):
					// (A header within the limit and part of <|message|> fit.)
					h.state = harmonyRaw
					continue
				case end:
					h.buf = "" // a header cut off: no message follows
				}
				return out
			}
			header := h.buf[:i]
			if otherTurn(header) {
				h.state = harmonyDone
				continue
			}
			if !couldBeHeader(header) || !strings.Contains(header, harmonyChannel) ||
				strings.Contains(header, harmonyEnd) || len(header) > maxHarmonyHeader {
				h.state = harmonyRaw
				continue
			}
			h.buf = h.buf[i+len(harmonyMessage):]
			h.begin(header)
		case harmonyInBody:
			at, size := -1, 0
			for _, t := range harmonyTerminators {
				if j := strings.Index(h.buf, t); j >= 0 && (at < 0 || j < at) {
					at, size = j, len(t)
				}
			}
			switch {
			case at >= 0:
				out = h.emit(out, h.buf[:at], true)
				h.buf = h.buf[at+size:]
				h.state = harmonyInHeader
			case end:
				out = h.emit(out, h.buf, true)
				h.buf = ""
				return out
			default:
				keep := 0
				for _, t := range harmonyTerminators {
					keep = max(keep, heldPrefix(h.buf, t))
				}
				out = h.emit(out, h.buf[:len(h.buf)-keep], false)
				h.buf = h.buf[len(h.buf)-keep:]
				return out
			}
		case harmonyRaw:
			if h.buf != "" {
				out = append(out, Part{Content: h.buf})
			}
			h.buf = ""
			return out
		case harmonyDone:
			h.buf = ""
			return out
		}
	}
}

// couldBeHeader reports whether s opens (or may yet open) a header:
// "<|start|>", "<|channel|>" or a recipient " to=".
func couldBeHeader(s string) bool {
	s = strings.TrimLeftFunc(s, unicode.IsSpace)
	for _, open := range []string{harmonyStart, harmonyChannel, "to="} {
		if strings.HasPrefix(s, open) || strings.HasPrefix(open, s) {
			return true
		}
	}
	return false
}

// otherTurn reports whether the header starts a turn of another role than
// the assistant's (the model writing the user's next message).
func otherTurn(header string) bool {
	rest, ok := strings.CutPrefix(strings.TrimSpace(header), harmonyStart)
	return ok && headerWord(rest) != "assistant"
}

// begin reads a message's header and sets what its body becomes.
func (h *harmonyParser) begin(header string) {
	h.state, h.name = harmonyInBody, ""
	channel := ""
	if i := strings.LastIndex(header, harmonyChannel); i >= 0 {
		channel = headerWord(header[i+len(harmonyChannel):])
	}
	recipient := ""
	for rest := header; ; {
		i := strings.Index(rest, "to=")
		if i < 0 {
			break
		}
		if r := headerWord(rest[i+len("to="):]); r != "assistant" && r != "" && (i == 0 || rest[i-1] == ' ') {
			recipient = r
			break
		}
		rest = rest[i+len("to="):]
	}
	switch name, isFunction := strings.CutPrefix(recipient, "functions."); {
	case recipient == "":
		h.body = bodyContent
		if channel == "analysis" {
			h.body = bodyReasoning
		}
	case isFunction && h.tools && validToolName(name):
		h.body, h.name = bodyCall, name
	default:
		h.body = bodyDropped
	}
}

// validToolName: a function name as tool definitions spell them (letters,
// digits, _ - . :), so that a recipient like "functions.{" is no call.
func validToolName(name string) bool {
	if name == "" {
		return false
	}
	for _, r := range name {
		if !(r == '_' || r == '-' || r == '.' || r == ':' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return false
		}
	}
	return true
}

// headerWord is the word at the start of s: up to a space or a marker.
func headerWord(s string) string {
	if i := strings.IndexAny(s, " <\n"); i >= 0 {
		s = s[:i]
	}
	return s
}

// emit hands out a piece of the current body; whole: the body ended.
func (h *harmonyParser) emit(out []Part, text string, whole bool) []Part {
	switch h.body {
	case bodyReasoning:
		return appendReasoning(out, text)
	case bodyContent:
		if text == "" {
			return out
		}
		return append(out, Part{Content: text})
	case bodyCall:
		h.call = append(h.call, text...)
		if !whole {
			if len(h.call) > maxHeldCallText { // too long for a call: text
				h.body = bodyContent
				text, h.call = string(h.call), nil
				return append(out, Part{Content: text})
			}
			return out
		}
		body := string(h.call)
		h.call = nil
		if call, err := newCall(h.name, json.RawMessage(body)); err == nil {
			h.calls++
			return append(out, Part{Call: call})
		}
		// Arguments that are not a JSON object: the text, as it came.
		if body == "" {
			return out
		}
		return append(out, Part{Content: body})
	}
	return out
}
