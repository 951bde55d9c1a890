package tokenizer

import (
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

var roundTripStrings = []string{
	"Hello world",
	"In the beginning God created the heaven and the earth.",
	"emoji 🦙🚀😁 and a family 👨‍👩‍👧 and a flag 🇫🇷 and 😶‍🌫️",
	"CJK: 我想在apple工作1314151天～ 東京 한국어 日本語のテキスト",
	"combining: e\u0301 a\u0308 n\u0303 क\u093f (e + U+0301 stays decomposed)",
	" leading space",
	"   three leading spaces",
	"trailing space ",
	"trailing spaces   ",
	"multiple   inner    spaces",
	"\n\nnewlines\n\n\nand\r\nCRLF\n",
	"\ttabs\t\tand\t mixed \t whitespace\t",
	"non-breaking\u00a0space, ideographic\u3000space, line\u2028separator",
	"Cyrillic нещо на Български, Greek ώΐ Ω, Khmer កាន់តែពិសេស",
	"punctuation ,.;:!?¿¡ “quotes” ‘single’ — dashes – and … ellipsis",
	"code: for (i = 0; i < n; i++) { x += a[i] * 3.14; } // done",
	"numbers 3 33 333 3333 33333 1,234,567.89 ١٢٣ ²³ ½",
	"contractions I've, you're, we'll, he's, 'RE 'M",
	"control chars \x01\x02\x7f and replacement \ufffd",
	" ",
	"  ",
	"\n",
	"a",
}

func TestRoundTrip(t *testing.T) {
	for _, name := range []string{"ggml-vocab-llama-spm.gguf", "ggml-vocab-gpt-2.gguf"} {
		t.Run(name, func(t *testing.T) {
			tok := loadTokenizer(t, filepath.Join("testdata", "tokenizer", name))
			for _, s := range roundTripStrings {
				ids := tok.EncodeWith(s, EncodeOptions{})
				if got := tok.Decode(ids); got != s {
					t.Errorf("Decode(Encode(%q)) = %q (ids %v)", s, got, ids)
				}
				// With BOS, llama.cpp's detokenize strips the space only from
				// the first id (the BOS): the text keeps its space prefix.
				withBOS := tok.EncodeWith(s, EncodeOptions{AddBOS: true})
				if withBOS[0] != tok.BOS() || !equalIDs(withBOS[1:], ids) {
					t.Errorf("%q: BOS encoding %v is not BOS + %v", s, withBOS, ids)
				}
				want := s
				if tok.Kind() == KindSPM {
					want = " " + s
				}
				if got := tok.Decode(withBOS); got != want {
					t.Errorf("Decode(BOS + Encode(%q)) = %q, want %q", s, got, want)
				}
				if got := tok.DecodeWith(withBOS, DecodeOptions{RemoveSpecial: tok.AddBOS()}); got != want {
					t.Errorf("DecodeWith(BOS + Encode(%q), RemoveSpecial) = %q, want %q", s, got, want)
				}
			}
		})
	}
}

func TestEmptyInput(t *testing.T) {
	for _, name := range []string{"ggml-vocab-llama-spm.gguf", "ggml-vocab-gpt-2.gguf"} {
		tok := loadTokenizer(t, filepath.Join("testdata", "tokenizer", name))
		if ids := tok.EncodeWith("", EncodeOptions{}); len(ids) != 0 {
			t.Errorf("%s: Encode(\"\") = %v, want none", name, ids)
		}
		if ids := tok.EncodeWith("", EncodeOptions{AddBOS: true}); !equalIDs(ids, []int32{tok.BOS()}) {
			t.Errorf("%s: Encode(\"\", BOS) = %v, want [%d]", name, ids, tok.BOS())
		}
		if s := tok.Decode(nil); s != "" {
			t.Errorf("%s: Decode(nil) = %q", name, s)
		}
	}
}

func TestSpecialTokensInText(t *testing.T) {
	spm := loadTokenizer(t, filepath.Join("testdata", "tokenizer", "ggml-vocab-llama-spm.gguf"))
	hello := spm.EncodeWith("Hello world", EncodeOptions{}) // ▁Hello ▁world
	// A special token is one id, and the text after it gets a space prefix
	// again (llama.cpp's is_prev_special rule).
	got := spm.Encode("Hello<s>Hello world", false)
	want := append([]int32{hello[0], spm.BOS()}, hello...)
	if !equalIDs(got, want) {
		t.Errorf("SPM Encode(Hello<s>Hello world) = %v, want %v", got, want)
	}
	if plain := spm.EncodeWith("Hello<s>Hello world", EncodeOptions{}); equalIDs(plain, want) {
		t.Errorf("without ParseSpecial <s> must not become the BOS token: %v", plain)
	}
	if got := spm.DecodeWith(want, DecodeOptions{RenderSpecial: true}); got != "Hello<s> Hello world" {
		t.Errorf("DecodeWith(RenderSpecial) = %q", got)
	}
	if got := spm.Decode(want); got != "Hello Hello world" {
		t.Errorf("Decode hides control tokens: got %q", got)
	}

	gpt := loadTokenizer(t, filepath.Join("testdata", "tokenizer", "ggml-vocab-gpt-2.gguf"))
	eot, ok := gpt.TokenID("<|endoftext|>")
	if !ok {
		t.Fatal("gpt-2 vocabulary has no <|endoftext|>")
	}
	a := gpt.EncodeWith("Hi", EncodeOptions{})
	b := gpt.EncodeWith(" there", EncodeOptions{})
	got = gpt.Encode("Hi<|endoftext|> there", false)
	want = append(append(append([]int32{}, a...), eot), b...)
	if !equalIDs(got, want) {
		t.Errorf("gpt-2 Encode with <|endoftext|> = %v, want %v", got, want)
	}
	plain := gpt.EncodeWith("Hi<|endoftext|> there", EncodeOptions{})
	for _, id := range plain {
		if id == eot {
			t.Errorf("ParseSpecial=false produced the control token: %v", plain)
		}
	}
	if s := gpt.Decode(plain); s != "Hi<|endoftext|> there" {
		t.Errorf("plain text round trip: %q", s)
	}
	if !gpt.IsEOG(eot) || gpt.IsEOG(a[0]) {
		t.Errorf("IsEOG: <|endoftext|> must end generation, %d must not", a[0])
	}
	if gpt.EOT() != eot {
		t.Errorf("EOT() = %d, want the auto-detected <|endoftext|> %d", gpt.EOT(), eot)
	}
	if !spm.IsEOG(spm.EOS()) || spm.IsEOG(spm.BOS()) || spm.IsEOG(NoToken) {
		t.Errorf("SPM IsEOG: EOS %d must end generation, BOS and NoToken must not", spm.EOS())
	}
}

func TestCleanSpacesOption(t *testing.T) {
	gpt := loadTokenizer(t, filepath.Join("testdata", "tokenizer", "ggml-vocab-gpt-2.gguf"))
	if !gpt.CleanSpaces() {
		t.Fatal("gpt-2 vocabularies clean spaces in llama.cpp")
	}
	for in, want := range map[string]string{
		"Hello , world !":            "Hello, world!",
		"a ' b":                      "a'b",
		"it 's I 'm we 're they 've": "it's I'm we're they've",
		"don 't you 'll 'd":          "don 't you 'll 'd",
		" . ?":                       ".?",
	} {
		ids := gpt.EncodeWith(in, EncodeOptions{})
		if got := gpt.DecodeWith(ids, DecodeOptions{CleanSpaces: true}); got != want {
			t.Errorf("clean %q = %q, want %q", in, got, want)
		}
		if got := gpt.Decode(ids); got != in {
			t.Errorf("Decode without clean-up changed %q to %q", in, got)
		}
	}
}

func TestDecoderStreaming(t *testing.T) {
	s := "Grüße 🦙 aus 東京 — naïve café 😶‍🌫️ ok 😁"
	for _, name := range []string{"ggml-vocab-llama-spm.gguf", "ggml-vocab-gpt-2.gguf"} {
		t.Run(name, func(t *testing.T) {
			tok := loadTokenizer(t, filepath.Join("testdata", "tokenizer", name))
			ids := tok.EncodeWith(s, EncodeOptions{})
			dec := tok.NewDecoder()
			var sb strings.Builder
			heldBack := 0
			for i, id := range ids {
				out := dec.Push(id)
				if !utf8.ValidString(out) {
					t.Fatalf("Push #%d (id %d) returned invalid UTF-8 %q", i, id, out)
				}
				if strings.ContainsRune(out, utf8.RuneError) {
					t.Fatalf("Push #%d (id %d) returned a replacement character: %q", i, id, out)
				}
				if out == "" {
					heldBack++
				}
				sb.WriteString(out)
			}
			if rest := dec.Flush(); rest != "" {
				t.Errorf("Flush returned %q after complete text", rest)
			}
			want := s
			if tok.Kind() == KindSPM {
				want = " " + s // the stream keeps the encoding's space prefix
			}
			if sb.String() != want {
				t.Errorf("stream = %q, want %q", sb.String(), want)
			}
			if heldBack == 0 {
				t.Errorf("no token was held back: the test string no longer splits characters across tokens (%v)", ids)
			}
		})
	}
}

func TestDecoderIncompleteBytes(t *testing.T) {
	tok := loadTokenizer(t, filepath.Join("testdata", "tokenizer", "ggml-vocab-llama-spm.gguf"))
	byteID := func(b byte) int32 { return tok.byteTokens[b] }
	dec := tok.NewDecoder()
	var outs []string
	for _, b := range []byte("🦙") {
		outs = append(outs, dec.Push(byteID(b)))
	}
	if strings.Join(outs[:3], "") != "" || outs[3] != "🦙" {
		t.Errorf("byte tokens of 🦙 gave %q", outs)
	}
	// A lead byte followed by something else can never complete.
	if out := dec.Push(byteID(0xE2)); out != "" {
		t.Errorf("lone lead byte emitted %q", out)
	}
	if out := dec.Push(byteID('a')); out != "\uFFFDa" {
		t.Errorf("broken sequence gave %q, want U+FFFD then a", out)
	}
	dec.Push(byteID(0xF0))
	dec.Push(byteID(0x9F))
	if out := dec.Flush(); out != "\uFFFD" {
		t.Errorf("Flush of an incomplete character = %q, want U+FFFD", out)
	}
	if out := dec.Push(byteID(0xFF)); out != "\uFFFD" {
		t.Errorf("byte 0xFF gave %q", out)
	}
	if out := dec.Push(-5); out != "" {
		t.Errorf("out-of-range id gave %q", out)
	}
}
