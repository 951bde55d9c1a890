package tokenizer

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// buildPieces precomputes llama_token_to_piece(id, special = true) for every
// token: control, unknown and user-defined tokens are their text; normal
// tokens have ▁ turned into spaces (SPM) or the GPT-2 byte map undone (BPE);
// byte tokens are their byte; unused and undefined tokens are empty.
func (t *Tokenizer) buildPieces() {
	t.pieces = make([]string, len(t.texts))
	for id, text := range t.texts {
		a := t.attrs[id]
		switch {
		case a&(attrUnknown|attrControl|attrUserDefined) != 0:
			t.pieces[id] = text
		case a&attrNormal != 0:
			if t.kind == KindSPM {
				t.pieces[id] = strings.ReplaceAll(text, "▁", " ")
			} else {
				t.pieces[id] = decodeByteLevel(text)
			}
		case a&attrByte != 0:
			if b, ok := parseByteToken(text); ok {
				t.pieces[id] = string([]byte{b})
			} else {
				t.warnf("byte token %d has malformed text %q: it decodes to nothing", id, text)
			}
		}
	}
}

// parseByteToken reads "<0xNN>".
func parseByteToken(s string) (byte, bool) {
	if len(s) != 6 || s[:3] != "<0x" || s[5] != '>' {
		return 0, false
	}
	var v byte
	for _, c := range []byte(s[3:5]) {
		switch {
		case c >= '0' && c <= '9':
			v = v<<4 | (c - '0')
		case c >= 'A' && c <= 'F':
			v = v<<4 | (c - 'A' + 10)
		case c >= 'a' && c <= 'f':
			v = v<<4 | (c - 'a' + 10)
		default:
			return 0, false
		}
	}
	return v, true
}

// decodeByteLevel undoes the GPT-2 byte map (llama_decode_text); a code
// point outside the map is kept visible as llama.cpp writes it.
func decodeByteLevel(text string) string {
	var b []byte
	var tmp [4]byte
	for _, r := range decodeLenient(text, nil) {
		if x, ok := runeToByte[r]; ok {
			b = append(b, x)
			continue
		}
		b = append(b, "[UNK_BYTE_0x"...)
		for _, c := range appendCodepoint(tmp[:0], r) {
			b = fmt.Appendf(b, "%02x", c)
		}
		b = append(b, text...)
		b = append(b, ']')
	}
	return string(b)
}

// Piece returns the text of one token as llama_token_to_piece(id, special =
// false) gives it: spaces included, control and unknown tokens empty. A
// byte token yields its single byte, which may be part of a UTF-8
// character; use a Decoder to print tokens one by one. Out-of-range ids
// give "".
func (t *Tokenizer) Piece(id int32) string { return t.piece(id, false) }

func (t *Tokenizer) piece(id int32, renderSpecial bool) string {
	if id < 0 || int(id) >= len(t.pieces) {
		return ""
	}
	if !renderSpecial && t.attrs[id]&(attrUnknown|attrControl) != 0 {
		return ""
	}
	return t.pieces[id]
}

// DecodeOptions controls DecodeWith; the zero value is what Decode uses.
type DecodeOptions struct {
	// RemoveSpecial drops a leading BOS and a trailing EOS when the model
	// adds them (llama.cpp's remove_special).
	RemoveSpecial bool
	// RenderSpecial writes control and unknown tokens as their text
	// (llama.cpp's unparse_special); otherwise they produce nothing.
	RenderSpecial bool
	// CleanSpaces applies llama.cpp's clean_up_tokenization_spaces passes
	// (" ." → ".", " 's" → "'s", ...) when the vocabulary asks for them
	// (Tokenizer.CleanSpaces). It changes the text, so it is off by default.
	CleanSpaces bool
}

// Decode turns ids into text. It is llama_detokenize(remove_special = false,
// unparse_special = false) without the clean-up of spaces, so that
// Decode(EncodeWith(s, {ParseSpecial: false})) == s for valid UTF-8 s:
//
//   - pieces are concatenated as Piece gives them;
//   - for SPM vocabularies (which prefix a space when encoding) one leading
//     space is removed from the piece of ids[0] only. As in llama.cpp this
//     applies to the first id even when it is BOS, whose piece is empty, so
//     the text after a BOS keeps its leading space: Decode(Encode(s, true))
//     == " " + s, and Decode of the ids after the BOS gives s.
//
// Bytes that do not form valid UTF-8 (an incomplete byte-fallback sequence)
// are passed through; out-of-range ids produce nothing.
func (t *Tokenizer) Decode(ids []int32) string { return t.DecodeWith(ids, DecodeOptions{}) }

// DecodeWith is llama_detokenize with llama.cpp's options.
func (t *Tokenizer) DecodeWith(ids []int32, opt DecodeOptions) string {
	removeSpace := t.addSpacePrefix
	if opt.RemoveSpecial && t.addBOS && len(ids) > 0 && ids[0] == t.bos {
		removeSpace = false // llama.cpp keeps the space after a removed BOS
		ids = ids[1:]
	}
	if opt.RemoveSpecial && t.addEOS && len(ids) > 0 && ids[len(ids)-1] == t.eos {
		ids = ids[:len(ids)-1]
	}
	var b []byte
	for i, id := range ids {
		p := t.piece(id, opt.RenderSpecial)
		if i == 0 && removeSpace && len(p) > 0 && p[0] == ' ' {
			p = p[1:]
		}
		b = append(b, p...)
	}
	if opt.CleanSpaces && t.cleanSpaces {
		b = cleanSpaces(b)
	}
	return string(b)
}

// cleanSpaces is llama_detokenize's clean_spaces passes, each one reading
// the previous pass's output (including llama.cpp's in-place quirk of the
// second pass, which blanks the space after a removed " ' ").
func cleanSpaces(text []byte) []byte {
	if len(text) == 0 {
		return text
	}
	// " ?", " !", " .", " ," lose the space.
	out := []byte{text[0]}
	for i := 1; i < len(text); i++ {
		x := text[i]
		if text[i-1] == ' ' && (x == '?' || x == '!' || x == '.' || x == ',') {
			out = out[:len(out)-1]
		}
		out = append(out, x)
	}
	// " ' " becomes "'".
	src := out
	out = []byte{src[0]}
	for i := 1; i < len(src); i++ {
		x := src[i]
		if x == '\'' && i+1 < len(src) && src[i-1] == ' ' && src[i+1] == ' ' {
			out = out[:len(out)-1]
			i++
			src[i] = 0
		}
		out = append(out, x)
	}
	// " 's", " 'm", " 're", " 've" lose the space.
	src = out
	out = []byte{src[0]}
	for i := 1; i < len(src); i++ {
		x := src[i]
		if src[i-1] == ' ' && x == '\'' && i+1 < len(src) {
			x1 := src[i+1]
			switch {
			case x1 == 't' || x1 == 'd':
			case x1 == 's' || x1 == 'm':
				out = out[:len(out)-1]
			case i+2 < len(src):
				x2 := src[i+2]
				if (x1 == 'r' && x2 == 'e') || (x1 == 'v' && x2 == 'e') {
					out = out[:len(out)-1]
				}
			}
		}
		out = append(out, x)
	}
	return out
}

// Decoder turns a stream of token ids into text that is always valid UTF-8:
// a character split across tokens (byte-fallback tokens, BPE byte pieces) is
// held back until it is complete. Pieces are those of Piece (as llama.cpp's
// common_token_to_piece, which streaming front ends print), with no leading
// space removed. A Decoder is not safe for concurrent use.
type Decoder struct {
	t *Tokenizer
	// RenderSpecial writes control and unknown tokens as their text.
	RenderSpecial bool
	pending       []byte
}

// NewDecoder returns a streaming decoder.
func (t *Tokenizer) NewDecoder() *Decoder { return &Decoder{t: t} }

// Push adds one token and returns the text that became complete, "" if
// none. Bytes that can never become valid UTF-8 are replaced by U+FFFD.
func (d *Decoder) Push(id int32) string {
	d.pending = append(d.pending, d.t.piece(id, d.RenderSpecial)...)
	n := len(d.pending)
	keep := n
	// The last non-continuation byte among the final three starts the only
	// sequence that may still be incomplete.
	for i := n - 1; i >= 0 && i >= n-utf8.UTFMax+1; i-- {
		if d.pending[i]&0xC0 != 0x80 {
			if !utf8.FullRune(d.pending[i:]) {
				keep = i
			}
			break
		}
	}
	if keep == 0 {
		return ""
	}
	out := validUTF8(d.pending[:keep])
	d.pending = append(d.pending[:0], d.pending[keep:]...)
	return out
}

// Flush returns what is held back, as U+FFFD since it is an incomplete
// character, and resets the decoder.
func (d *Decoder) Flush() string {
	if len(d.pending) == 0 {
		return ""
	}
	out := validUTF8(d.pending)
	d.pending = d.pending[:0]
	return out
}

// Reset discards held-back bytes.
func (d *Decoder) Reset() { d.pending = d.pending[:0] }

func validUTF8(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	return strings.ToValidUTF8(string(b), "\uFFFD")
}
