package chat

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Python's string semantics for the str methods and filters whose gonja
// versions differ from Jinja2's (wrong defaults, Go's whitespace set).

// isPySpace reports whether r is whitespace for Python's str.isspace, which
// str.strip/split (and Jinja's trim) use. Unlike Go's unicode.IsSpace it
// includes the information separators U+001C..U+001F.
func isPySpace(r rune) bool {
	switch r {
	case '\t', '\n', '\v', '\f', '\r', 0x1c, 0x1d, 0x1e, 0x1f, ' ', 0x85, 0xa0,
		0x1680, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000:
		return true
	}
	return r >= 0x2000 && r <= 0x200a
}

// pyStrip implements str.strip/lstrip/rstrip: chars == nil strips Python
// whitespace, otherwise any rune of *chars.
func pyStrip(s string, chars *string, left, right bool) string {
	cut := isPySpace
	if chars != nil {
		set := *chars
		cut = func(r rune) bool { return strings.ContainsRune(set, r) }
	}
	if left {
		s = strings.TrimLeftFunc(s, cut)
	}
	if right {
		s = strings.TrimRightFunc(s, cut)
	}
	return s
}

// pySplit implements str.split (fromRight false) and str.rsplit (true).
// sep == nil splits on runs of whitespace and drops empty fields.
func pySplit(s string, sep *string, maxsplit int, fromRight bool) ([]string, error) {
	if sep != nil {
		if *sep == "" {
			return nil, errors.New("empty separator")
		}
		if maxsplit < 0 {
			return strings.Split(s, *sep), nil
		}
		if !fromRight {
			return strings.SplitN(s, *sep, maxsplit+1), nil
		}
		var out []string
		for ; maxsplit > 0; maxsplit-- {
			i := strings.LastIndex(s, *sep)
			if i < 0 {
				break
			}
			out = append(out, s[i+len(*sep):])
			s = s[:i]
		}
		out = append(out, s)
		reverse(out)
		return out, nil
	}
	fields := []string{}
	if !fromRight {
		for {
			s = strings.TrimLeftFunc(s, isPySpace)
			if s == "" {
				return fields, nil
			}
			if maxsplit >= 0 && len(fields) == maxsplit {
				return append(fields, s), nil
			}
			end := strings.IndexFunc(s, isPySpace)
			if end < 0 {
				return append(fields, s), nil
			}
			fields = append(fields, s[:end])
			s = s[end:]
		}
	}
	for {
		s = strings.TrimRightFunc(s, isPySpace)
		if s == "" {
			break
		}
		if maxsplit >= 0 && len(fields) == maxsplit {
			fields = append(fields, s)
			break
		}
		start := strings.LastIndexFunc(s, isPySpace)
		if start < 0 {
			fields = append(fields, s)
			break
		}
		_, size := utf8.DecodeRuneInString(s[start:])
		fields = append(fields, s[start+size:])
		s = s[:start]
	}
	reverse(fields)
	return fields, nil
}

func reverse(s []string) {
	for i, j := 0, len(s)-1; i < j; i, j = i+1, j-1 {
		s[i], s[j] = s[j], s[i]
	}
}

// pyReplace implements str.replace(old, new, count=-1), refusing results
// larger than limit bytes.
func pyReplace(s, old, new string, count, limit int) (string, error) {
	n := strings.Count(s, old)
	if count >= 0 && count < n {
		n = count
	}
	if size := len(s) + n*(len(new)-len(old)); size > limit {
		return "", limitError("value size", limit)
	}
	return strings.Replace(s, old, new, n), nil
}

// strftime formats t like C's strftime in the C locale, for the directives
// chat templates use (Llama 3's "%d %b %Y"). Unknown directives are errors
// rather than passed through, so a template relying on one fails visibly.
func strftime(format string, t time.Time) (string, error) {
	var b strings.Builder
	for i := 0; i < len(format); i++ {
		c := format[i]
		if c != '%' {
			b.WriteByte(c)
			continue
		}
		i++
		if i == len(format) {
			return "", errors.New("strftime: format ends with '%'")
		}
		noPad := false
		if format[i] == '-' && i+1 < len(format) { // glibc's "no padding" flag, e.g. %-d
			noPad = true
			i++
		}
		num := func(v, width int) {
			if noPad {
				fmt.Fprintf(&b, "%d", v)
			} else {
				fmt.Fprintf(&b, "%0*d", width, v)
			}
		}
		hour12 := t.Hour() % 12
		if hour12 == 0 {
			hour12 = 12
		}
		switch format[i] {
		case 'a':
			b.WriteString(t.Weekday().String()[:3])
		case 'A':
			b.WriteString(t.Weekday().String())
		case 'b', 'h':
			b.WriteString(t.Month().String()[:3])
		case 'B':
			b.WriteString(t.Month().String())
		case 'd':
			num(t.Day(), 2)
		case 'e':
			if noPad {
				num(t.Day(), 1)
			} else {
				fmt.Fprintf(&b, "%2d", t.Day())
			}
		case 'H':
			num(t.Hour(), 2)
		case 'I':
			num(hour12, 2)
		case 'j':
			num(t.YearDay(), 3)
		case 'm':
			num(int(t.Month()), 2)
		case 'M':
			num(t.Minute(), 2)
		case 'p':
			if t.Hour() < 12 {
				b.WriteString("AM")
			} else {
				b.WriteString("PM")
			}
		case 'S':
			num(t.Second(), 2)
		case 'u':
			wd := int(t.Weekday())
			if wd == 0 {
				wd = 7
			}
			num(wd, 1)
		case 'w':
			num(int(t.Weekday()), 1)
		case 'y':
			num(t.Year()%100, 2)
		case 'Y':
			num(t.Year(), 1)
		case 'F':
			fmt.Fprintf(&b, "%04d-%02d-%02d", t.Year(), t.Month(), t.Day())
		case 'T':
			fmt.Fprintf(&b, "%02d:%02d:%02d", t.Hour(), t.Minute(), t.Second())
		case 'z':
			b.WriteString(t.Format("-0700"))
		case 'Z':
			b.WriteString(t.Format("MST"))
		case '%':
			b.WriteByte('%')
		default:
			return "", fmt.Errorf("strftime: unsupported directive %%%c", format[i])
		}
	}
	return b.String(), nil
}

// pyBounds resolves optional Python slice bounds against length n.
func pyBounds(n int, start, end *int) (int, int) {
	clamp := func(p *int, def int) int {
		if p == nil {
			return def
		}
		v := *p
		if v < 0 {
			v += n
		}
		return min(max(v, 0), n)
	}
	return clamp(start, 0), clamp(end, n)
}

// pyFind implements str.find/rfind with code-point indices.
func pyFind(s, sub string, start, end *int, fromRight bool) int {
	r := []rune(s)
	lo, hi := pyBounds(len(r), start, end)
	if lo > hi {
		return -1
	}
	hay := string(r[lo:hi])
	var i int
	if fromRight {
		i = strings.LastIndex(hay, sub)
	} else {
		i = strings.Index(hay, sub)
	}
	if i < 0 {
		return -1
	}
	return lo + utf8.RuneCountInString(hay[:i])
}

// pyPad implements str.center/ljust/rjust with code-point widths; align is
// 'c', 'l' or 'r'. The split of an odd padding for center is CPython's.
func pyPad(s string, width int, fill rune, align byte) string {
	n := utf8.RuneCountInString(s)
	if width <= n {
		return s
	}
	pad := width - n
	left := 0
	switch align {
	case 'r':
		left = pad
	case 'c':
		left = pad/2 + (pad & width & 1)
	}
	f := string(fill)
	return strings.Repeat(f, left) + s + strings.Repeat(f, pad-left)
}

// pyZfill implements str.zfill.
func pyZfill(s string, width int) string {
	n := utf8.RuneCountInString(s)
	if width <= n {
		return s
	}
	zeros := strings.Repeat("0", width-n)
	if s != "" && (s[0] == '+' || s[0] == '-') {
		return s[:1] + zeros + s[1:]
	}
	return zeros + s
}
