package tokenizer

import (
	"container/heap"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
)

// Literal ports of llama.cpp's SPM and BPE sessions (one priority queue per
// text or word, lookups by text), used to check that the faster encoder in
// encode.go (cut points, merges by token id) gives identical ids.

type refItem struct {
	left, right int
	score       float64 // SPM: score, BPE: -rank
	size        int
	text        string
}

type refQueue []refItem

func (q refQueue) Len() int { return len(q) }
func (q refQueue) Less(i, j int) bool {
	return q[i].score > q[j].score || (q[i].score == q[j].score && q[i].left < q[j].left)
}
func (q refQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *refQueue) Push(x any)   { *q = append(*q, x.(refItem)) }
func (q *refQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}

type refSym struct {
	text       string // the rest of the text from the symbol's start
	n          int
	prev, next int
}

func refSymbols(text string) []refSym {
	var syms []refSym
	for off := 0; off < len(text); {
		n := min(utf8SeqLen(text[off]), len(text)-off)
		next := len(syms) + 1
		if off+n == len(text) {
			next = -1
		}
		syms = append(syms, refSym{text: text[off:], n: n, prev: len(syms) - 1, next: next})
		off += n
	}
	return syms
}

func refSPM(tok *Tokenizer, raw string) []int32 {
	text := strings.ReplaceAll(" "+raw, " ", "▁")
	if raw == "" {
		return nil
	}
	syms := refSymbols(text)
	q := &refQueue{}
	add := func(l, r int) {
		if l == -1 || r == -1 {
			return
		}
		s := syms[l].text[:syms[l].n+syms[r].n]
		if id, ok := tok.toID[s]; ok {
			heap.Push(q, refItem{left: l, right: r, score: float64(tok.scores[id]), size: len(s)})
		}
	}
	for i := 1; i < len(syms); i++ {
		add(i-1, i)
	}
	for q.Len() > 0 {
		b := heap.Pop(q).(refItem)
		l, r := &syms[b.left], &syms[b.right]
		if l.n == 0 || r.n == 0 || l.n+r.n != b.size {
			continue
		}
		l.n += r.n
		r.n = 0
		l.next = r.next
		if r.next >= 0 {
			syms[r.next].prev = b.left
		}
		add(l.prev, b.left)
		add(b.left, l.next)
	}
	var out []int32
	for i := 0; i != -1; i = syms[i].next {
		s := syms[i].text[:syms[i].n]
		if id, ok := tok.toID[s]; ok {
			out = append(out, id)
			continue
		}
		for j := 0; j < len(s); j++ {
			out = append(out, tok.byteTokens[s[j]])
		}
	}
	return out
}

func refBPE(tok *Tokenizer, raw string) []int32 {
	cps := decodeLenient(raw, nil)
	var out []int32
	start := 0
	for _, n := range pretokenize(tok.preTok.steps, cps, nil, nil) {
		var word strings.Builder
		for _, r := range cps[start : start+n] {
			for _, b := range appendCodepoint(nil, r) {
				word.WriteString(byteToUTF8[b])
			}
		}
		start += n
		w := word.String()
		if tok.ignoreMerges {
			if id, ok := tok.toID[w]; ok {
				out = append(out, id)
				continue
			}
		}
		syms := refSymbols(w)
		q := &refQueue{}
		add := func(l, r int) {
			if l == -1 || r == -1 {
				return
			}
			ls, rs := syms[l].text[:syms[l].n], syms[r].text[:syms[r].n]
			if rank, ok := tok.ranks[mergeKey{ls, rs}]; ok {
				heap.Push(q, refItem{left: l, right: r, score: -float64(rank), text: ls + rs})
			}
		}
		for i := 1; i < len(syms); i++ {
			add(i-1, i)
		}
		for q.Len() > 0 {
			b := heap.Pop(q).(refItem)
			l, r := &syms[b.left], &syms[b.right]
			if l.n == 0 || r.n == 0 || l.text[:l.n]+r.text[:r.n] != b.text {
				continue
			}
			l.n += r.n
			r.n = 0
			l.next = r.next
			if r.next >= 0 {
				syms[r.next].prev = b.left
			}
			add(l.prev, b.left)
			add(b.left, l.next)
		}
		for i := 0; len(syms) > 0 && i != -1; i = syms[i].next {
			s := syms[i].text[:syms[i].n]
			if id, ok := tok.toID[s]; ok {
				out = append(out, id)
				continue
			}
			for j := 0; j < len(s); j++ {
				if id, ok := tok.toID[s[j:j+1]]; ok {
					out = append(out, id)
				}
			}
		}
	}
	return out
}

func refEncode(tok *Tokenizer, s string) []int32 {
	if tok.Kind() == KindSPM {
		return refSPM(tok, s)
	}
	return refBPE(tok, s)
}

// randomText mixes words, spaces, digits, punctuation and multi-byte text.
func randomText(rng *rand.Rand, n int) string {
	pieces := []string{"the", " the", "and", " ", "  ", "\n", "\t", "God", "created", "heaven", "earth", ".", ",", "'s",
		"3", "14", "999", "é", "ü", "ß", "我", "想", "東京", "нещо", "🦙", "😁", "\u200d", "e\u0301", "▁", "<s>", "</s>",
		"<|endoftext|>", "(", ")", "--", "==", "\u00a0", "\u3000", "x", "Q", "zz", "\xff", "\xe2\x82"}
	var sb strings.Builder
	for i := 0; i < n; i++ {
		sb.WriteString(pieces[rng.IntN(len(pieces))])
	}
	return sb.String()
}

func TestEncoderMatchesLiteralPort(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var inputs []string
	inputs = append(inputs, roundTripStrings...)
	for i := 0; i < 300; i++ {
		inputs = append(inputs, randomText(rng, 1+rng.IntN(60)))
	}
	for _, name := range []string{"ggml-vocab-llama-spm.gguf", "ggml-vocab-gpt-2.gguf"} {
		tok := loadTokenizer(t, filepath.Join("testdata", "tokenizer", name))
		kjv := loadTokenizer(t, filepath.Join("models", "kjv-30m-f16.gguf"))
		for _, tk := range []*Tokenizer{tok, kjv} {
			if tk == kjv && name != "ggml-vocab-llama-spm.gguf" {
				continue
			}
			for _, s := range inputs {
				got := tk.EncodeWith(s, EncodeOptions{})
				want := refEncode(tk, s)
				if !equalIDs(got, want) {
					t.Fatalf("%s (vocab %d): %q\n got  %v\n want %v", name, tk.VocabSize(), s, got, want)
				}
			}
		}
	}
}
