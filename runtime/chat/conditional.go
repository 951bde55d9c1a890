package chat

import "strings"

// inlineConditionals rewrites conditional expressions inside brackets,
// which gonja parses only at the top of {{ … }} and {% set %}: gpt-oss's
// template writes
//
//	{{- (tool_call.content_type if tool_call.content_type is defined else "json") + "<|message|>" }}
//
// Each "X if C else Y" that is a whole element of a parenthesised group, a
// list, a call's argument list or a dict value becomes
// "((C) and [X] or [Y])[0]": gonja's and/or return an operand and
// short-circuit as Python's do, and a one-element list is always true, so
// only the branch taken is evaluated, as in Jinja2. The top level of a tag
// is left alone ({% if %}, {% for … if … %} and gonja's own conditional).
// It runs after prepass, which bounds the nesting of brackets.
func inlineConditionals(src string) string {
	if !strings.Contains(src, "if") {
		return src
	}
	var b strings.Builder
	last := 0
	for i := 0; i+1 < len(src); {
		if src[i] != '{' {
			i++
			continue
		}
		switch src[i+1] {
		case '#':
			end := strings.Index(src[i+2:], "#}")
			if end < 0 {
				i = len(src)
				continue
			}
			i += 2 + end + 2
		case '{', '%':
			close := "}}"
			if src[i+1] == '%' {
				close = "%}"
				if mayBeRaw(src[i+2:]) && rawTag.MatchString(src[i:]) {
					loc := endRawTag.FindStringIndex(src[i:])
					if loc == nil {
						i = len(src)
					} else {
						i += loc[1]
					}
					continue
				}
			}
			start := i + 2
			end := tagEnd(src, start, close)
			body := src[start:end]
			if rewritten := rewriteGroups(body); rewritten != body {
				b.WriteString(src[last:start])
				b.WriteString(rewritten)
				last = end
			}
			i = min(end+len(close), len(src))
		default:
			i++
		}
	}
	if last == 0 {
		return src
	}
	b.WriteString(src[last:])
	return b.String()
}

// mayBeRaw is a cheap test before rawTag's: the tag body may start with
// "raw".
func mayBeRaw(body string) bool {
	return strings.HasPrefix(strings.TrimLeft(body[:min(len(body), 16)], "-+ \t\r\n"), "raw")
}

// tagEnd is the index of the close delimiter of the tag whose content
// starts at i (outside string literals and brackets), or len(src).
func tagEnd(src string, i int, close string) int {
	depth := 0
	for i < len(src) {
		switch c := src[i]; c {
		case '\'', '"':
			i = stringEnd(src, i)
			continue
		case '(', '[', '{':
			depth++
		case ')', ']', '}':
			depth--
		}
		if depth <= 0 && strings.HasPrefix(src[i:], close) {
			return i
		}
		i++
	}
	return len(src)
}

// stringEnd is the index just past the string literal opening at i.
func stringEnd(s string, i int) int {
	q := s[i]
	for i++; i < len(s) && s[i] != q; i++ {
		if s[i] == '\\' {
			i++
		}
	}
	return min(i+1, len(s))
}

// closing is the index of the bracket that closes the one at i, or -1.
func closing(s string, i int) int {
	depth := 0
	for i < len(s) {
		switch s[i] {
		case '\'', '"':
			i = stringEnd(s, i)
			continue
		case '(', '[', '{':
			depth++
		case ')', ']', '}':
			if depth--; depth == 0 {
				return i
			}
		}
		i++
	}
	return -1
}

// rewriteGroups rewrites the conditionals inside every bracket group of
// the expression text s (but not at its own top level).
func rewriteGroups(s string) string {
	var b strings.Builder
	last := 0
	for i := 0; i < len(s); {
		switch s[i] {
		case '\'', '"':
			i = stringEnd(s, i)
			continue
		case '(', '[', '{':
			end := closing(s, i)
			if end < 0 {
				i = len(s)
				continue
			}
			b.WriteString(s[last : i+1])
			b.WriteString(rewriteElements(rewriteGroups(s[i+1:end]), s[i]))
			last, i = end, end+1
			continue
		}
		i++
	}
	if last == 0 {
		return s
	}
	b.WriteString(s[last:])
	return b.String()
}

// rewriteElements rewrites each comma-separated element of a group's
// content (a dict entry's value; a slice is left alone).
func rewriteElements(content string, open byte) string {
	parts := splitTop(content, ',')
	for k, part := range parts {
		colon := splitTop(part, ':')
		switch {
		case open == '{' && len(colon) > 1:
			key := strings.Join(colon[:1], "")
			parts[k] = key + ":" + conditional(strings.Join(colon[1:], ":"))
		case len(colon) > 1: // a slice, or a keyword argument
			continue
		default:
			if name, value, ok := keywordArgument(part); ok && open == '(' {
				parts[k] = name + "=" + conditional(value)
				continue
			}
			parts[k] = conditional(part)
		}
	}
	return strings.Join(parts, ",")
}

// keywordArgument splits "name=value" (not ==, <=, >=, !=).
func keywordArgument(part string) (name, value string, ok bool) {
	for _, i := range topLevel(part) {
		if part[i] != '=' {
			continue
		}
		if (i+1 < len(part) && part[i+1] == '=') || (i > 0 && strings.IndexByte("=<>!", part[i-1]) >= 0) {
			return "", "", false
		}
		name = strings.TrimSpace(part[:i])
		if !isName(name) {
			return "", "", false
		}
		return part[:i], part[i+1:], true
	}
	return "", "", false
}

func isName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// maxChainedConditionals bounds "a if b else c if d else …": each link
// nests the rewrite one level deeper, and gonja parses nesting by
// recursion. Longer chains are left as they are (and fail to parse).
const maxChainedConditionals = 16

// conditional rewrites "X if C else Y" (Y may chain further
// conditionals); anything else comes back unchanged. One scan finds the
// top-level keywords, so a long chain costs linear time.
func conditional(e string) string {
	var cuts []int // alternately the starts of "if" and of "else"
	for _, i := range topLevel(e) {
		want := "if"
		if len(cuts)%2 == 1 {
			want = "else"
		}
		if wordAt(e, i, want) {
			cuts = append(cuts, i)
		}
	}
	links := len(cuts) / 2
	if links == 0 || links > maxChainedConditionals || strings.TrimSpace(e[:cuts[0]]) == "" {
		return e
	}
	// X0 if C0 else X1 if C1 else … Y: built from the innermost out.
	// (A last "if" without its "else" stays in Y, which then fails to
	// parse, as it does unrewritten.)
	out := strings.TrimSpace(e[cuts[2*links-1]+len("else"):])
	for k := links - 1; k >= 0; k-- {
		xStart := 0
		if k > 0 {
			xStart = cuts[2*k-1] + len("else")
		}
		x := strings.TrimSpace(e[xStart:cuts[2*k]])
		c := strings.TrimSpace(e[cuts[2*k]+len("if") : cuts[2*k+1]])
		out = "((" + c + ") and [" + x + "] or [" + out + "])[0]"
	}
	return " " + out + " "
}

// wordAt reports whether the keyword w stands alone at s[i:].
func wordAt(s string, i int, w string) bool {
	if !strings.HasPrefix(s[i:], w) {
		return false
	}
	if i > 0 && (isWordByte(s[i-1]) || s[i-1] == '.') {
		return false
	}
	j := i + len(w)
	return j == len(s) || !isWordByte(s[j])
}

func isWordByte(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// topLevel lists the indices of s outside string literals and brackets.
func topLevel(s string) []int {
	var out []int
	depth := 0
	for i := 0; i < len(s); {
		switch s[i] {
		case '\'', '"':
			i = stringEnd(s, i)
			continue
		case '(', '[', '{':
			depth++
		case ')', ']', '}':
			depth--
		default:
			if depth == 0 {
				out = append(out, i)
			}
		}
		i++
	}
	return out
}

// splitTop splits s at the separator where it is outside strings and
// brackets.
func splitTop(s string, sep byte) []string {
	var parts []string
	last := 0
	for _, i := range topLevel(s) {
		if s[i] == sep {
			parts = append(parts, s[last:i])
			last = i + 1
		}
	}
	return append(parts, s[last:])
}
