package chat

import (
	"fmt"
	"regexp"
	"strings"
)

// prepass rewrites template source where gonja's lexer departs from
// Jinja2's, so the lexer sees what Jinja2 would make of it:
//
//   - lstrip_blocks: gonja strips the spaces before every block tag, also
//     those after another tag on the same line ("{% endif %} {% if %}"
//     loses its space), which changes prompts. Jinja2 removes the spaces
//     and tabs before a {% or {# tag only when nothing else precedes the tag
//     on its line, and not for {%+ / {#+. So gonja's option stays off and
//     this pass removes exactly those runs.
//   - gonja fails to lex a string literal ending in an escaped backslash
//     ('a\\'); "\\" in string literals becomes the equivalent "\x5c".
//
// The scan skips expressions and tags (whose string literals may hold
// "{%"), comments and raw blocks; inside a raw block only its {% endraw %}
// is stripped, as in Jinja2.
//
// It also refuses sources the parser could not take safely: gonja parses
// nested brackets and blocks by recursion (a Go stack overflow is fatal),
// and takes time quadratic in the depth of unclosed blocks.
func prepass(src string) (string, error) {
	if len(src) > maxSourceBytes {
		return "", fmt.Errorf("template is %d bytes, more than %d", len(src), maxSourceBytes)
	}
	depthErr := error(nil)
	blocks := 0 // open {% if %}, {% for %}... blocks
	type edit struct {
		start, end int
		repl       string
	}
	var edits []edit
	lineStart := 0 // index just after the last line break seen outside tags
	// strip drops the blank run before the tag at i when it starts its line.
	strip := func(i int) {
		if i+2 < len(src) && src[i+2] == '+' {
			return
		}
		if i > lineStart && strings.Trim(src[lineStart:i], " \t") == "" {
			edits = append(edits, edit{lineStart, i, ""})
		}
	}
	// skipTag returns the index just past the close delimiter of the tag
	// whose content starts at i, outside string literals and brackets, or
	// len(src).
	skipTag := func(i int, close string) int {
		depth := 0
		for i < len(src) {
			c := src[i]
			if c != '\'' && c != '"' {
				// Like Jinja2's lexer, a bracket left open hides the delimiter:
				// "{{ {'a': {'b': 1}} }}".
				if depth <= 0 && strings.HasPrefix(src[i:], close) {
					return i + len(close)
				}
				switch c {
				case '(', '[', '{':
					if depth++; depth > maxBracketDepth && depthErr == nil {
						depthErr = fmt.Errorf("brackets nested deeper than %d at byte %d", maxBracketDepth, i)
					}
				case ')', ']', '}':
					depth--
				}
				i++
				continue
			}
			for i++; i < len(src) && src[i] != c; i++ {
				if src[i] == '\\' && i+1 < len(src) {
					if src[i+1] == '\\' {
						edits = append(edits, edit{i, i + 2, `\x5c`})
					}
					i++
				}
			}
			i++
		}
		return len(src)
	}
	for i := 0; i < len(src); {
		c := src[i]
		if c == '\n' || c == '\r' {
			i++
			lineStart = i
			continue
		}
		if c != '{' || i+1 >= len(src) {
			i++
			continue
		}
		switch src[i+1] {
		case '{':
			i = skipTag(i+2, "}}")
		case '#':
			strip(i)
			if end := strings.Index(src[i+2:], "#}"); end >= 0 {
				i += 2 + end + 2
			} else {
				i = len(src)
			}
		case '%':
			strip(i)
			isRaw := rawTag.MatchString(src[i:])
			start := i
			i = skipTag(i+2, "%}")
			if blocks += blockDelta(src[start:i]); blocks > maxBlockDepth && depthErr == nil {
				depthErr = fmt.Errorf("blocks nested deeper than %d at byte %d", maxBlockDepth, start)
			}
			if !isRaw {
				break
			}
			loc := endRawTag.FindStringIndex(src[i:])
			if loc == nil {
				i = len(src)
				break
			}
			tag := i + loc[0]
			// Line breaks inside the raw text still start lines.
			if nl := strings.LastIndexAny(src[i:tag], "\r\n"); nl >= 0 {
				lineStart = i + nl + 1
			}
			strip(tag)
			i = i + loc[1]
		default:
			i++
		}
	}
	if depthErr != nil {
		return "", depthErr
	}
	if len(edits) == 0 {
		return src, nil
	}
	var b strings.Builder
	b.Grow(len(src))
	last := 0
	for _, e := range edits { // in source order, disjoint
		b.WriteString(src[last:e.start])
		b.WriteString(e.repl)
		last = e.end
	}
	b.WriteString(src[last:])
	return b.String(), nil
}

// Published chat templates are a few KiB with brackets and blocks nested
// a few deep.
const (
	maxSourceBytes  = 512 << 10
	maxBracketDepth = 100
	maxBlockDepth   = 100
)

// blockDelta is +1 for a tag that opens a block ({% if %}, a block
// {% set x %}...), -1 for one that closes it, else 0.
func blockDelta(tag string) int {
	body := strings.TrimSuffix(strings.TrimPrefix(tag, "{%"), "%}")
	body = strings.Trim(body, "-+ \t\r\n")
	word, rest, _ := strings.Cut(body, " ")
	word, _, _ = strings.Cut(word, "\n")
	switch word {
	case "if", "for", "macro", "call", "filter", "with", "autoescape", "block", "trans":
		return 1
	case "set":
		if !strings.Contains(rest, "=") {
			return 1
		}
	}
	if strings.HasPrefix(word, "end") {
		return -1
	}
	return 0
}

var (
	rawTag    = regexp.MustCompile(`^\{%[-+]?\s*raw\s*[-+]?%\}`)
	endRawTag = regexp.MustCompile(`\{%[-+]?\s*endraw\s*[-+]?%\}`)
)
