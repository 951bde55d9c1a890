package tokenizer

import "strings"

// EncodeOptions controls Encode.
type EncodeOptions struct {
	AddBOS bool // prepend the BOS token (if the vocabulary has one)
	AddEOS bool // append the EOS token (if the vocabulary has one)
	// ParseSpecial matches control and unknown tokens written in the text
	// (e.g. "<|im_start|>") as single tokens. User-defined tokens are always
	// matched, as in llama.cpp.
	ParseSpecial bool
}

// Encode tokenizes text with special-token parsing on; addBOS prepends the
// BOS token (pass t.AddBOS() for the model's preference). It is llama.cpp's
// llama_tokenize(text, add_special = addBOS, parse_special = true) for a
// model without add_eos.
func (t *Tokenizer) Encode(text string, addBOS bool) []int32 {
	return t.EncodeWith(text, EncodeOptions{AddBOS: addBOS, ParseSpecial: true})
}

// EncodeWith tokenizes text. Invalid UTF-8 never fails: SentencePiece
// vocabularies encode stray bytes through byte tokens, BPE vocabularies see
// each malformed byte as U+FFFD (as llama.cpp does).
func (t *Tokenizer) EncodeWith(text string, opt EncodeOptions) []int32 {
	var out []int32
	if opt.AddBOS && t.bos != NoToken {
		out = append(out, t.bos)
	}
	frags := t.partition(text, opt.ParseSpecial)
	switch t.kind {
	case KindSPM:
		var s spmScratch
		prevSpecial := true // the text gets a space prefix, as after a special token
		for _, fr := range frags {
			if fr.token != NoToken {
				out = append(out, fr.token)
				prevSpecial = true
				continue
			}
			s.escaped = s.escaped[:0]
			if t.addSpacePrefix && prevSpecial {
				s.escaped = append(s.escaped, "▁"...)
			}
			s.escaped = appendEscaped(s.escaped, fr.text)
			out = t.spmEncode(&s, out)
			prevSpecial = false
		}
	case KindBPE:
		var s bpeScratch
		for _, fr := range frags {
			if fr.token != NoToken {
				out = append(out, fr.token)
				continue
			}
			out = t.bpeEncode(&s, fr.text, out)
		}
	}
	if opt.AddEOS && t.eos != NoToken {
		out = append(out, t.eos)
	}
	return out
}

// fragment is raw text or a special token.
type fragment struct {
	text  string
	token int32 // NoToken for text
}

func isCSpace(b byte) bool {
	return b == ' ' || (b >= '\t' && b <= '\r')
}

// partition splits text around special tokens as llama.cpp's
// tokenizer_st_partition: tokens are tried longest first, each one is cut out
// of every remaining text fragment at all of its (left to right,
// non-overlapping) occurrences, and LSTRIP/RSTRIP tokens swallow adjacent
// ASCII whitespace.
func (t *Tokenizer) partition(text string, parseSpecial bool) []fragment {
	if text == "" {
		return nil
	}
	frags := []fragment{{text: text, token: NoToken}}
	var next []fragment
	for _, id := range t.special {
		a := t.attrs[id]
		if !parseSpecial && a&(attrControl|attrUnknown) != 0 {
			continue
		}
		tok := t.texts[id]
		found := false
		for _, fr := range frags {
			if fr.token == NoToken && strings.Contains(fr.text, tok) {
				found = true
				break
			}
		}
		if !found {
			continue
		}
		next = next[:0]
		for _, fr := range frags {
			if fr.token != NoToken {
				next = append(next, fr)
				continue
			}
			s := fr.text
			pos := 0
			for {
				i := strings.Index(s[pos:], tok)
				if i < 0 {
					break
				}
				m := pos + i
				left := s[pos:m]
				if a&attrLStrip != 0 {
					for len(left) > 0 && isCSpace(left[len(left)-1]) {
						left = left[:len(left)-1]
					}
				}
				if left != "" {
					next = append(next, fragment{text: left, token: NoToken})
				}
				next = append(next, fragment{token: id})
				pos = m + len(tok)
				if a&attrRStrip != 0 {
					for pos < len(s) && isCSpace(s[pos]) {
						pos++
					}
				}
			}
			if pos < len(s) {
				next = append(next, fragment{text: s[pos:], token: NoToken})
			}
		}
		frags, next = next, frags
	}
	return frags
}

// appendEscaped replaces every space by ▁ (U+2581), as llama_escape_whitespace.
func appendEscaped(dst []byte, s string) []byte {
	for {
		i := strings.IndexByte(s, ' ')
		if i < 0 {
			return append(dst, s...)
		}
		dst = append(dst, s[:i]...)
		dst = append(dst, "▁"...)
		s = s[i+1:]
	}
}

// symbol is a run of text in the merge loops; merges only ever join a
// symbol with its right neighbour, so a symbol is always a contiguous span.
type symbol struct {
	start, n   int32
	prev, next int32
}

// spmBigram orders by score (higher first), then by left position.
type spmBigram struct {
	left, right int32
	score       float32
	size        int32
}

func spmBefore(a, b spmBigram) bool {
	return a.score > b.score || (a.score == b.score && a.left < b.left)
}

type spmScratch struct {
	escaped []byte
	symbols []symbol
	heap    []spmBigram
}

// spmEncode is llm_tokenizer_spm_session::tokenize on s.escaped.
func (t *Tokenizer) spmEncode(s *spmScratch, out []int32) []int32 {
	text := string(s.escaped)
	s.symbols = s.symbols[:0]
	for off := 0; off < len(text); {
		n := min(utf8SeqLen(text[off]), len(text)-off)
		idx := int32(len(s.symbols))
		next := idx + 1
		if off+n == len(text) {
			next = -1
		}
		s.symbols = append(s.symbols, symbol{start: int32(off), n: int32(n), prev: idx - 1, next: next})
		off += n
	}
	syms := s.symbols
	s.heap = s.heap[:0]
	tryAdd := func(left, right int32) {
		if left < 0 || right < 0 {
			return
		}
		l, r := syms[left], syms[right]
		piece := text[l.start : r.start+r.n]
		id, ok := t.toID[piece]
		if !ok {
			return
		}
		s.heap = heapPush(s.heap, spmBigram{left: left, right: right, score: t.scores[id], size: int32(len(piece))}, spmBefore)
	}
	for i := int32(1); i < int32(len(syms)); i++ {
		tryAdd(i-1, i)
	}
	for len(s.heap) > 0 {
		var b spmBigram
		b, s.heap = heapPop(s.heap, spmBefore)
		l, r := &syms[b.left], &syms[b.right]
		if l.n == 0 || r.n == 0 || l.n+r.n != b.size {
			continue // outdated
		}
		l.n += r.n
		r.n = 0
		l.next = r.next
		if r.next >= 0 {
			syms[r.next].prev = b.left
		}
		tryAdd(l.prev, b.left)
		tryAdd(b.left, l.next)
	}
	// A final symbol is a token unless it is a single character the
	// vocabulary lacks (merges only form tokens), which goes out as bytes.
	// (llama.cpp's resegment also consults its rev_merge map, but that can
	// only ever hold token texts, so the branch never fires.)
	if len(syms) == 0 {
		return out
	}
	for i := int32(0); i != -1; i = syms[i].next {
		sym := syms[i]
		piece := text[sym.start : sym.start+sym.n]
		if id, ok := t.toID[piece]; ok {
			out = append(out, id)
			continue
		}
		for j := 0; j < len(piece); j++ {
			id := t.byteTokens[piece[j]]
			if id == NoToken {
				id = t.unk // llama.cpp aborts here; a vocabulary without byte tokens gets <unk>
			}
			if id != NoToken {
				out = append(out, id)
			}
		}
	}
	return out
}

// bpeBigram orders by merge rank (lower first), then by left position.
type bpeBigram struct {
	left, right int32
	rank        int32
	size        int32
}

func bpeBefore(a, b bpeBigram) bool {
	return a.rank < b.rank || (a.rank == b.rank && a.left < b.left)
}

type bpeScratch struct {
	cps     []rune
	chunkA  []int
	chunkB  []int
	word    []byte
	symbols []symbol
	heap    []bpeBigram
}

// bpeEncode is llm_tokenizer_bpe_session::tokenize for byte-encoded vocabularies.
func (t *Tokenizer) bpeEncode(s *bpeScratch, text string, out []int32) []int32 {
	s.cps = decodeLenient(text, s.cps[:0])
	chunks := pretokenize(t.preTok.steps, s.cps, s.chunkA, s.chunkB)
	s.chunkA = chunks // keep the larger buffer for the next call
	start := 0
	for _, n := range chunks {
		s.word = s.word[:0]
		var tmp [4]byte
		for _, r := range s.cps[start : start+n] {
			for _, b := range appendCodepoint(tmp[:0], r) {
				s.word = append(s.word, byteToUTF8[b]...)
			}
		}
		start += n
		out = t.bpeWord(s, string(s.word), out)
	}
	return out
}

func (t *Tokenizer) bpeWord(s *bpeScratch, word string, out []int32) []int32 {
	if t.ignoreMerges {
		if id, ok := t.toID[word]; ok {
			return append(out, id)
		}
	}
	s.symbols = s.symbols[:0]
	for off := 0; off < len(word); {
		n := min(utf8SeqLen(word[off]), len(word)-off)
		idx := int32(len(s.symbols))
		next := idx + 1
		if off+n == len(word) {
			next = -1
		}
		s.symbols = append(s.symbols, symbol{start: int32(off), n: int32(n), prev: idx - 1, next: next})
		off += n
	}
	syms := s.symbols
	s.heap = s.heap[:0]
	tryAdd := func(left, right int32) {
		if left < 0 || right < 0 {
			return
		}
		l, r := syms[left], syms[right]
		rank, ok := t.ranks[mergeKey{word[l.start : l.start+l.n], word[r.start : r.start+r.n]}]
		if !ok {
			return
		}
		s.heap = heapPush(s.heap, bpeBigram{left: left, right: right, rank: rank, size: l.n + r.n}, bpeBefore)
	}
	for i := int32(1); i < int32(len(syms)); i++ {
		tryAdd(i-1, i)
	}
	for len(s.heap) > 0 {
		var b bpeBigram
		b, s.heap = heapPop(s.heap, bpeBefore)
		l, r := &syms[b.left], &syms[b.right]
		// llama.cpp compares the texts; since symbols only grow by absorbing
		// their right neighbour, comparing the sizes is equivalent.
		if l.n == 0 || r.n == 0 || l.n+r.n != b.size || l.next != b.right {
			continue // outdated
		}
		l.n += r.n
		r.n = 0
		l.next = r.next
		if r.next >= 0 {
			syms[r.next].prev = b.left
		}
		tryAdd(l.prev, b.left)
		tryAdd(b.left, l.next)
	}
	if len(syms) == 0 {
		return out
	}
	for i := int32(0); i != -1; i = syms[i].next {
		sym := syms[i]
		piece := word[sym.start : sym.start+sym.n]
		if id, ok := t.toID[piece]; ok {
			out = append(out, id)
			continue
		}
		// As llama.cpp: try each byte of the symbol as a token and drop
		// those that are not.
		for j := 0; j < len(piece); j++ {
			if id, ok := t.toID[piece[j:j+1]]; ok {
				out = append(out, id)
			}
		}
	}
	return out
}

// heapPush and heapPop implement a binary heap ordered by before.
func heapPush[T any](h []T, x T, before func(a, b T) bool) []T {
	h = append(h, x)
	i := len(h) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !before(h[i], h[p]) {
			break
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
	return h
}

func heapPop[T any](h []T, before func(a, b T) bool) (T, []T) {
	top := h[0]
	last := len(h) - 1
	h[0] = h[last]
	h = h[:last]
	i := 0
	for {
		l := 2*i + 1
		if l >= len(h) {
			break
		}
		m := l
		if r := l + 1; r < len(h) && before(h[r], h[l]) {
			m = r
		}
		if !before(h[m], h[i]) {
			break
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
	return top, h
}
