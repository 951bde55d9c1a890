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
// BOS token (pass t.AddBOS() for the model's preference). With addBOS ==
// t.AddBOS() and a model that does not add EOS, it equals llama.cpp's
// llama_tokenize(text, add_special = true, parse_special = true).
func (t *Tokenizer) Encode(text string, addBOS bool) []int32 {
	return t.EncodeWith(text, EncodeOptions{AddBOS: addBOS, ParseSpecial: true})
}

// EncodeWith tokenizes text. Invalid UTF-8 never fails: SentencePiece
// vocabularies encode stray bytes through byte tokens, BPE vocabularies see
// each malformed byte as U+FFFD (as llama.cpp does).
func (t *Tokenizer) EncodeWith(text string, opt EncodeOptions) []int32 {
	out := make([]int32, 0, len(text)/4+2)
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

func (a spmBigram) before(b spmBigram) bool {
	return a.score > b.score || (a.score == b.score && a.left < b.left)
}

type spmScratch struct {
	escaped []byte
	symbols []symbol
	heap    []spmBigram
}

// spmEncode is llm_tokenizer_spm_session::tokenize on s.escaped: repeatedly
// merge the adjacent pair whose concatenation is the best-scoring token
// (ties: leftmost), then emit each symbol as its token or as byte tokens.
//
// llama.cpp keeps one priority queue for the whole text. Here the text is
// first cut wherever two adjacent characters never occur next to each
// other inside any token: no merge can ever cross such a cut, so merges on
// either side never interact and each piece can run with its own small
// queue, giving the same result much faster.
func (t *Tokenizer) spmEncode(s *spmScratch, out []int32) []int32 {
	text := string(s.escaped)
	syms := s.symbols[:0]
	if cap(syms) < len(text) {
		syms = make([]symbol, 0, len(text))
	}
	for off := 0; off < len(text); {
		n := min(utf8SeqLen(text[off]), len(text)-off)
		idx := int32(len(syms))
		syms = append(syms, symbol{start: int32(off), n: int32(n), prev: idx - 1, next: idx + 1})
		off += n
	}
	s.symbols = syms
	for seg := 0; seg < len(syms); {
		end := seg + 1
		for end < len(syms) && t.spmPairs.has(text, syms[end-1], syms[end]) {
			end++
		}
		syms[seg].prev = -1
		syms[end-1].next = -1
		out = t.spmSegment(s, text, syms, int32(seg), int32(end), out)
		seg = end
	}
	return out
}

func (t *Tokenizer) spmSegment(s *spmScratch, text string, syms []symbol, first, end int32, out []int32) []int32 {
	h := s.heap[:0]
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
		h = spmPush(h, spmBigram{left: left, right: right, score: t.scores[id], size: int32(len(piece))})
	}
	for i := first + 1; i < end; i++ {
		tryAdd(i-1, i)
	}
	for len(h) > 0 {
		var b spmBigram
		b, h = spmPop(h)
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
	s.heap = h
	// A final symbol is a token unless it is a single character the
	// vocabulary lacks (merges only form tokens), which goes out as bytes.
	// (llama.cpp's resegment also consults its rev_merge map, but that only
	// ever holds token texts, so that branch never fires.)
	for i := first; i != -1; i = syms[i].next {
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

// symbolKey packs a symbol of 1 to 4 bytes into 32 bits: the length in the
// top 4 bits and the bytes below. A 4-byte symbol always starts with a byte
// 0xF0..0xFF (utf8SeqLen), so dropping that byte's high nibble loses nothing.
func symbolKey(s string) uint32 {
	var v uint32
	for i := 0; i < len(s); i++ {
		v = v<<8 | uint32(s[i])
	}
	return uint32(len(s))<<28 | v&0x0FFFFFFF
}

// pairSet holds every pair of adjacent symbols found inside a token, with
// symbols split as the encoder splits text (utf8SeqLen, clamped).
type pairSet map[uint64]struct{}

func buildPairSet(texts []string) pairSet {
	set := pairSet{}
	for _, tok := range texts {
		var prev uint32
		for off := 0; off < len(tok); {
			n := min(utf8SeqLen(tok[off]), len(tok)-off)
			cur := symbolKey(tok[off : off+n])
			if off > 0 {
				set[uint64(prev)<<32|uint64(cur)] = struct{}{}
			}
			prev = cur
			off += n
		}
	}
	return set
}

func (p pairSet) has(text string, a, b symbol) bool {
	_, ok := p[uint64(symbolKey(text[a.start:a.start+a.n]))<<32|uint64(symbolKey(text[b.start:b.start+b.n]))]
	return ok
}

// bpeBigram orders by merge rank (lower first), then by left position.
type bpeBigram struct {
	left, right int32
	rank        int32
	size        int32
}

func (a bpeBigram) before(b bpeBigram) bool {
	return a.rank < b.rank || (a.rank == b.rank && a.left < b.left)
}

// bpeSymbol is a symbol of a byte-encoded word with its token id (NoToken
// if its text is not in the vocabulary).
type bpeSymbol struct {
	symbol
	id int32
}

type bpeScratch struct {
	cps     []rune
	chunkA  []int
	chunkB  []int
	word    []byte
	symbols []bpeSymbol
	heap    []bpeBigram
}

// bpeEncode is llm_tokenizer_bpe_session::tokenize for byte-encoded vocabularies.
func (t *Tokenizer) bpeEncode(s *bpeScratch, text string, out []int32) []int32 {
	s.cps = decodeLenient(text, s.cps[:0])
	chunks := pretokenize(t.preTok.steps, s.cps, s.chunkA, s.chunkB)
	s.chunkA = chunks // keep the larger buffer for the next call
	start := 0
	for _, n := range chunks {
		// The word as UTF-8 bytes; each byte is one initial symbol, the
		// GPT-2 character standing for it.
		s.word = s.word[:0]
		for _, r := range s.cps[start : start+n] {
			s.word = appendCodepoint(s.word, r)
		}
		start += n
		out = t.bpeWord(s, s.word, out)
	}
	return out
}

// mergeInfo is a merge of two tokens: its rank and the resulting token.
type mergeInfo struct {
	rank   int32
	result int32 // NoToken if the merged text is not in the vocabulary
}

func pairID(a, b int32) uint64 { return uint64(uint32(a))<<32 | uint64(uint32(b)) }

// encodedText is the byte-encoded text of symbol sym of word.
func encodedText(word []byte, sym symbol) string {
	var b []byte
	for _, c := range word[sym.start : sym.start+sym.n] {
		b = append(b, byteToUTF8[c]...)
	}
	return string(b)
}

func (t *Tokenizer) bpeWord(s *bpeScratch, word []byte, out []int32) []int32 {
	if t.ignoreMerges {
		if id, ok := t.toID[encodedText(word, symbol{n: int32(len(word))})]; ok {
			return append(out, id)
		}
	}
	syms := s.symbols[:0]
	for i, c := range word {
		syms = append(syms, bpeSymbol{symbol{start: int32(i), n: 1, prev: int32(i) - 1, next: int32(i) + 1}, t.byteSymbol[c]})
	}
	if len(syms) == 0 {
		return out
	}
	syms[len(syms)-1].next = -1
	s.symbols = syms
	h := s.heap[:0]
	tryAdd := func(left, right int32) {
		if left < 0 || right < 0 {
			return
		}
		l, r := &syms[left], &syms[right]
		var rank int32
		if l.id != NoToken && r.id != NoToken {
			m, ok := t.merges[pairID(l.id, r.id)]
			if !ok {
				return
			}
			rank = m.rank
		} else {
			// A symbol outside the vocabulary (only in unusual vocabularies):
			// look the pair up by text, as llama.cpp always does.
			m, ok := t.ranks[mergeKey{encodedText(word, l.symbol), encodedText(word, r.symbol)}]
			if !ok {
				return
			}
			rank = m
		}
		h = bpePush(h, bpeBigram{left: left, right: right, rank: rank, size: l.n + r.n})
	}
	for i := int32(1); i < int32(len(syms)); i++ {
		tryAdd(i-1, i)
	}
	for len(h) > 0 {
		var b bpeBigram
		b, h = bpePop(h)
		l, r := &syms[b.left], &syms[b.right]
		// llama.cpp compares texts; symbols only grow by absorbing their
		// right neighbour, so comparing sizes is equivalent.
		if l.n == 0 || r.n == 0 || l.n+r.n != b.size {
			continue // outdated
		}
		if l.id != NoToken && r.id != NoToken {
			l.id = t.merges[pairID(l.id, r.id)].result
		} else {
			l.id = NoToken
		}
		l.n += r.n
		r.n = 0
		if l.id == NoToken {
			if id, ok := t.toID[encodedText(word, l.symbol)]; ok {
				l.id = id
			}
		}
		l.next = r.next
		if r.next >= 0 {
			syms[r.next].prev = b.left
		}
		tryAdd(l.prev, b.left)
		tryAdd(b.left, l.next)
	}
	s.heap = h
	for i := int32(0); i != -1; i = syms[i].next {
		sym := syms[i]
		if sym.id != NoToken {
			out = append(out, sym.id)
			continue
		}
		// As llama.cpp: try each byte of the symbol's encoded text as a
		// token and drop those that are not.
		piece := encodedText(word, sym.symbol)
		for j := 0; j < len(piece); j++ {
			if id, ok := t.toID[piece[j:j+1]]; ok {
				out = append(out, id)
			}
		}
	}
	return out
}

// Binary heaps, written out per type so the comparison inlines.

func spmPush(h []spmBigram, x spmBigram) []spmBigram {
	h = append(h, x)
	for i := len(h) - 1; i > 0; {
		p := (i - 1) / 2
		if !h[i].before(h[p]) {
			break
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
	return h
}

func spmPop(h []spmBigram) (spmBigram, []spmBigram) {
	top := h[0]
	last := len(h) - 1
	h[0] = h[last]
	h = h[:last]
	for i := 0; ; {
		m := 2*i + 1
		if m >= len(h) {
			break
		}
		if r := m + 1; r < len(h) && h[r].before(h[m]) {
			m = r
		}
		if !h[m].before(h[i]) {
			break
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
	return top, h
}

func bpePush(h []bpeBigram, x bpeBigram) []bpeBigram {
	h = append(h, x)
	for i := len(h) - 1; i > 0; {
		p := (i - 1) / 2
		if !h[i].before(h[p]) {
			break
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
	return h
}

func bpePop(h []bpeBigram) (bpeBigram, []bpeBigram) {
	top := h[0]
	last := len(h) - 1
	h[0] = h[last]
	h = h[:last]
	for i := 0; ; {
		m := 2*i + 1
		if m >= len(h) {
			break
		}
		if r := m + 1; r < len(h) && h[r].before(h[m]) {
			m = r
		}
		if !h[m].before(h[i]) {
			break
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
	return top, h
}
