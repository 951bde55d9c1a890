package tokenizer

import (
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzEncodeDecode checks, for the test vocabularies, that encoding never
// panics, yields in-range ids and the ids of the literal port of llama.cpp's
// algorithm (reference_test.go), that streaming decode only ever returns
// valid UTF-8, and that Decode(Encode(s)) == s for valid UTF-8 (for SPM
// unless s contains ▁, which SentencePiece reads as a space). For invalid
// UTF-8 the BPE round trip yields llama.cpp's reading of the bytes (each
// malformed byte as U+FFFD). The vocabularies are the bundled kjv model's
// (SentencePiece with byte fallback, always present, so CI fuzzes too) and,
// when the shared test data is there, llama.cpp's Llama-2 SPM and GPT-2 BPE.
func FuzzEncodeDecode(f *testing.F) {
	toks := fuzzTokenizers(f)
	for _, s := range roundTripStrings {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, tok := range toks {
			ids := tok.EncodeWith(s, EncodeOptions{})
			if want := refEncode(tok, s); !equalIDs(ids, want) {
				t.Fatalf("%s: Encode(%q) = %v, literal llama.cpp port gives %v", tok.Kind(), s, ids, want)
			}
			withSpecial := tok.EncodeWith(s, EncodeOptions{AddBOS: true, AddEOS: true, ParseSpecial: true})
			for _, seq := range [][]int32{ids, withSpecial} {
				for _, id := range seq {
					if id < 0 || int(id) >= tok.VocabSize() {
						t.Fatalf("%s: id %d out of range for %q", tok.Kind(), id, s)
					}
				}
			}
			dec := tok.NewDecoder()
			dec.RenderSpecial = true
			for _, id := range withSpecial {
				if out := dec.Push(id); !utf8.ValidString(out) {
					t.Fatalf("%s: Push(%d) returned invalid UTF-8 %q for input %q", tok.Kind(), id, out, s)
				}
			}
			if out := dec.Flush(); !utf8.ValidString(out) {
				t.Fatalf("%s: Flush returned invalid UTF-8 %q", tok.Kind(), out)
			}
			got := tok.Decode(ids)
			switch {
			case utf8.ValidString(s):
				if tok.Kind() == KindSPM && strings.Contains(s, "▁") {
					continue
				}
				if got != s {
					t.Fatalf("%s: Decode(Encode(%q)) = %q (ids %v)", tok.Kind(), s, got, ids)
				}
			case tok.Kind() == KindBPE:
				var want []byte
				for _, r := range decodeLenient(s, nil) {
					want = appendCodepoint(want, r)
				}
				if got != string(want) {
					t.Fatalf("BPE: Decode(Encode(%q)) = %q, want %q", s, got, want)
				}
			}
		}
	})
}

// fuzzTokenizers returns the bundled model's tokenizer and the shared
// vocabularies that are present (logging the ones that are not).
func fuzzTokenizers(f *testing.F) []*Tokenizer {
	toks := []*Tokenizer{loadTokenizerFile(f, filepath.Join("..", "..", "models", "kjv-30m-q4_k_m.gguf"))}
	if dir := findSharedDir(); dir != "" {
		for _, name := range []string{"ggml-vocab-llama-spm.gguf", "ggml-vocab-gpt-2.gguf"} {
			toks = append(toks, loadTokenizerFile(f, filepath.Join(dir, "testdata", "tokenizer", name)))
		}
	} else {
		f.Log("shared test data absent: fuzzing the bundled kjv vocabulary only (no GPT-2 BPE, no Llama-2 SPM)")
	}
	return toks
}
