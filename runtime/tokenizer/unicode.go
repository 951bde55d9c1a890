package tokenizer

import (
	"sync"
	"unicode"
)

// Code point classes as llama.cpp's unicode tables define them: the Unicode
// general category collapsed to one class, plus the White_Space property.
type cpClass uint8

const (
	classUndefined cpClass = iota // Cn: unassigned (and anything out of range)
	classNumber                   // N*
	classLetter                   // L*
	classSeparator                // Z*
	classMark                     // M*
	classPunct                    // P*
	classSymbol                   // S*
	classControl                  // Cc, Cf, Co, Cs
)

// maxCodepoint bounds what the decoder produces; larger values become U+FFFD.
const maxCodepoint = 0x10FFFF

var (
	bmpClassOnce sync.Once
	bmpClass     []cpClass // classes of U+0000..U+FFFF, built on first use
)

func classOfSlow(r rune) cpClass {
	switch {
	case unicode.Is(unicode.L, r):
		return classLetter
	case unicode.Is(unicode.N, r):
		return classNumber
	case unicode.Is(unicode.M, r):
		return classMark
	case unicode.Is(unicode.P, r):
		return classPunct
	case unicode.Is(unicode.S, r):
		return classSymbol
	case unicode.Is(unicode.Z, r):
		return classSeparator
	case unicode.Is(unicode.C, r): // Go's C is Cc|Cf|Co|Cs, without Cn
		return classControl
	}
	return classUndefined
}

// classOf returns the class of a code point; the BMP is served from a table
// because the pre-tokenizers look at every code point of the input.
func classOf(r rune) cpClass {
	if r < 0x10000 {
		if r < 0 {
			return classUndefined
		}
		bmpClassOnce.Do(func() {
			t := make([]cpClass, 0x10000)
			for c := range t {
				t[c] = classOfSlow(rune(c))
			}
			bmpClass = t
		})
		return bmpClass[r]
	}
	if r > maxCodepoint {
		return classUndefined
	}
	return classOfSlow(r)
}

// isWhitespace is the Unicode White_Space property (the set llama.cpp uses for \s).
func isWhitespace(r rune) bool {
	switch {
	case r >= 0x09 && r <= 0x0D, r == 0x20, r == 0x85, r == 0xA0, r == 0x1680,
		r >= 0x2000 && r <= 0x200A, r == 0x2028, r == 0x2029, r == 0x202F, r == 0x205F, r == 0x3000:
		return true
	}
	return false
}

// decodeLenient splits bytes into code points the way llama.cpp's
// unicode_cpts_from_utf8 does: a malformed sequence yields U+FFFD and skips
// one byte; overlong forms and surrogates are accepted as decoded. Values
// above U+10FFFF (which llama.cpp cannot re-encode and aborts on) become
// U+FFFD here.
func decodeLenient(s string, out []rune) []rune {
	n := len(s)
	for i := 0; i < n; {
		b0 := s[i]
		switch {
		case b0 < 0x80:
			out = append(out, rune(b0))
			i++
			continue
		case b0&0x40 == 0: // stray continuation byte
		case b0&0x20 == 0:
			if i+1 < n && s[i+1]&0xC0 == 0x80 {
				out = append(out, rune(b0&0x1F)<<6|rune(s[i+1]&0x3F))
				i += 2
				continue
			}
		case b0&0x10 == 0:
			if i+2 < n && s[i+1]&0xC0 == 0x80 && s[i+2]&0xC0 == 0x80 {
				out = append(out, rune(b0&0x0F)<<12|rune(s[i+1]&0x3F)<<6|rune(s[i+2]&0x3F))
				i += 3
				continue
			}
		case b0&0x08 == 0:
			if i+3 < n && s[i+1]&0xC0 == 0x80 && s[i+2]&0xC0 == 0x80 && s[i+3]&0xC0 == 0x80 {
				r := rune(b0&0x07)<<18 | rune(s[i+1]&0x3F)<<12 | rune(s[i+2]&0x3F)<<6 | rune(s[i+3]&0x3F)
				if r > maxCodepoint {
					r = 0xFFFD
				}
				out = append(out, r)
				i += 4
				continue
			}
		}
		out = append(out, 0xFFFD)
		i++
	}
	return out
}

// appendCodepoint encodes like llama.cpp's unicode_cpt_to_utf8, which (unlike
// utf8.EncodeRune) writes surrogates as plain 3-byte sequences.
func appendCodepoint(b []byte, r rune) []byte {
	switch {
	case r < 0x80:
		return append(b, byte(r))
	case r < 0x800:
		return append(b, 0xC0|byte(r>>6), 0x80|byte(r&0x3F))
	case r < 0x10000:
		return append(b, 0xE0|byte(r>>12), 0x80|byte(r>>6&0x3F), 0x80|byte(r&0x3F))
	default:
		return append(b, 0xF0|byte(r>>18), 0x80|byte(r>>12&0x3F), 0x80|byte(r>>6&0x3F), 0x80|byte(r&0x3F))
	}
}

// utf8SeqLen is llama.cpp's unicode_len_utf8: the sequence length a lead byte
// announces (1 for continuation bytes and ASCII).
func utf8SeqLen(b byte) int {
	return [16]int{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4}[b>>4]
}

// GPT-2's reversible byte↔unicode map: printable Latin-1 bytes stand for
// themselves, the other 68 bytes are moved to U+0100.. in byte order.
var (
	byteToRune [256]rune
	runeToByte map[rune]byte
	// byteToUTF8 holds the UTF-8 encoding of byteToRune, to build words fast.
	byteToUTF8 [256]string
)

func init() {
	runeToByte = make(map[rune]byte, 256)
	next := rune(256)
	for b := 0; b < 256; b++ {
		if (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF) {
			byteToRune[b] = rune(b)
		} else {
			byteToRune[b] = next
			next++
		}
		runeToByte[byteToRune[b]] = byte(b)
		byteToUTF8[b] = string(byteToRune[b])
	}
}
