package grammar

import (
	"testing"

	"github.com/wgllm/wgllm/internal/sharedfiles"
	"github.com/wgllm/wgllm/runtime/gguf"
	"github.com/wgllm/wgllm/runtime/tokenizer"
)

// benchSchema is a typical structured-output request.
const benchSchema = `{"type":"object","properties":{
	"name":{"type":"string"},"age":{"type":"integer"},"email":{"type":"string","format":"email"},
	"tags":{"type":"array","items":{"type":"string"},"maxItems":8},
	"address":{"type":"object","properties":{"street":{"type":"string"},"city":{"type":"string"}},"required":["street","city"]},
	"active":{"type":"boolean"}},"required":["name","age","tags","address","active"],"additionalProperties":false}`

const benchText = `{"name": "Abraham son of Terah", "age": 175, ` +
	`"tags": ["patriarch", "shepherd", "father of nations"], ` +
	`"address": {"street": "the plain of Mamre", "city": "Hebron"}, "active": false, "email": "abraham@ur.example"}`

// tokenVocab loads a tokenizer from the shared files and its Vocab.
func tokenVocab(b testing.TB, path string) (*tokenizer.Tokenizer, *Vocab) {
	f, err := gguf.Open(sharedfiles.File(b, path))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	tok, err := tokenizer.FromGGUF(f)
	if err != nil {
		b.Fatal(err)
	}
	pieces := make([]string, tok.VocabSize())
	for id := range pieces {
		pieces[id] = tok.Piece(int32(id))
	}
	v, err := NewVocab(pieces, tok.EOGTokens())
	if err != nil {
		b.Fatal(err)
	}
	return tok, v
}

var benchVocabs = []struct{ name, path string }{
	{"kjv-4096", "models/kjv-30m-q4_k_m.gguf"},
	{"llama-spm-32000", "testdata/tokenizer/ggml-vocab-llama-spm.gguf"},
	{"gpt2-50257", "testdata/tokenizer/ggml-vocab-gpt-2.gguf"},
}

// BenchmarkStep is the grammar's cost per generated token: Mask then
// Accept, replaying a typical output. cold: a newly compiled grammar, so
// the first visit of each state walks the trie, as a new schema's first
// request does; warm: the same grammar again, its masks cached (the next
// requests with that schema). Compare with a decode step (wgllm bench):
// the target is at most 10% of it.
func BenchmarkStep(b *testing.B) {
	for _, bv := range benchVocabs {
		for _, warm := range []bool{false, true} {
			name := bv.name + "/cold"
			if warm {
				name = bv.name + "/warm"
			}
			b.Run(name, func(b *testing.B) {
				tok, v := tokenVocab(b, bv.path)
				ids := longestMatch(v, benchText)
				compile := func() *Grammar {
					g, err := FromJSONSchema([]byte(benchSchema))
					if err != nil {
						b.Fatal(err)
					}
					return g
				}
				allowed := make([]bool, v.Size())
				replay := func(g *Grammar) {
					m := NewMatcher(g, v)
					for n, id := range ids {
						m.SetRemaining(512 - n)
						m.Mask(allowed)
						if !allowed[id] {
							b.Fatalf("token %d (%q) of the text not allowed", n, tok.Piece(id))
						}
						if err := m.Accept(id); err != nil {
							b.Fatal(err)
						}
					}
				}
				g := compile()
				if warm {
					replay(g)
				}
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if !warm {
						b.StopTimer()
						g = compile()
						b.StartTimer()
					}
					replay(g)
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(ids))/1e6, "ms/token")
			})
		}
	}
}

// BenchmarkMaskCold is one trie walk without the cache, in a string body
// (the state that allows the most tokens, so the most nodes).
func BenchmarkMaskCold(b *testing.B) {
	for _, bv := range benchVocabs {
		b.Run(bv.name, func(b *testing.B) {
			_, v := tokenVocab(b, bv.path)
			m := NewMatcher(JSON(), v)
			if err := feedBytes(m, v, `{"text": "In the beginning`); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				m.compute(0)
			}
		})
	}
}

// feedBytes accepts text through single-byte tokens of v.
func feedBytes(m *Matcher, v *Vocab, text string) error {
	byByte := map[byte]int32{}
	for id, p := range v.pieces {
		if len(p) == 1 && !v.eog[id] {
			byByte[p[0]] = int32(id)
		}
	}
	for i := 0; i < len(text); i++ {
		if err := m.Accept(byByte[text[i]]); err != nil {
			return err
		}
	}
	return nil
}

// longestMatch splits text into the vocabulary's longest pieces, left to
// right (a tokenizer's own encoding would add SentencePiece's leading
// space; this keeps the bytes exact and the tokens as long).
func longestMatch(v *Vocab, text string) []int32 {
	var ids []int32
	for len(text) > 0 {
		best, bestLen := int32(-1), 0
		for i := int32(1); i < int32(len(v.nodes)); {
			n := v.nodes[i]
			if int(n.depth) > len(text) || text[n.depth-1] != n.b {
				i = n.end
				continue
			}
			if n.tokStart < n.tokEnd && int(n.depth) > bestLen {
				best, bestLen = v.tokens[n.tokStart], int(n.depth)
			}
			i++
		}
		if best < 0 {
			panic("no token for " + text)
		}
		ids = append(ids, best)
		text = text[bestLen:]
	}
	return ids
}
