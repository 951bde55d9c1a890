package tokenizer

import (
	"fmt"
	"strings"
	"testing"

	"github.com/wgllm/wgllm/runtime/gguf"
)

// fakeGGUF builds an in-memory GGUF header from Go values.
func fakeGGUF(meta map[string]any) *gguf.File {
	md := map[string]gguf.Value{}
	for k, v := range meta {
		val := gguf.Value{V: v}
		switch x := v.(type) {
		case string:
			val.Type = gguf.TypeString
		case bool:
			val.Type = gguf.TypeBool
		case uint32:
			val.Type = gguf.TypeUint32
		case []string:
			val.Type, val.ElemType = gguf.TypeArray, gguf.TypeString
		case []float32:
			val.Type, val.ElemType = gguf.TypeArray, gguf.TypeFloat32
		case []int32:
			val.Type, val.ElemType = gguf.TypeArray, gguf.TypeInt32
		default:
			panic(fmt.Sprintf("fakeGGUF: unsupported %T", x))
		}
		md[k] = val
	}
	return &gguf.File{Metadata: md}
}

type synthToken struct {
	text  string
	score float32
	typ   TokenType
}

// synthSPM is a small SentencePiece vocabulary: <unk> <s> </s>, the 256
// byte tokens, then the given tokens.
func synthSPM(extra []synthToken, meta map[string]any) map[string]any {
	toks := []synthToken{{"<unk>", 0, TypeUnknown}, {"<s>", 0, TypeControl}, {"</s>", 0, TypeControl}}
	for b := 0; b < 256; b++ {
		toks = append(toks, synthToken{fmt.Sprintf("<0x%02X>", b), 0, TypeByte})
	}
	toks = append(toks, extra...)
	var texts []string
	var scores []float32
	var types []int32
	for _, tk := range toks {
		texts = append(texts, tk.text)
		scores = append(scores, tk.score)
		types = append(types, int32(tk.typ))
	}
	m := map[string]any{
		keyModel: "llama", keyTokens: texts, keyScores: scores, keyTypes: types,
	}
	for k, v := range meta {
		m[k] = v
	}
	return m
}

func mustTokenizer(t *testing.T, meta map[string]any) *Tokenizer {
	t.Helper()
	tok, err := FromGGUF(fakeGGUF(meta))
	if err != nil {
		t.Fatalf("FromGGUF: %v", err)
	}
	return tok
}

func ids(t *testing.T, tok *Tokenizer, texts ...string) []int32 {
	t.Helper()
	var out []int32
	for _, s := range texts {
		id, ok := tok.TokenID(s)
		if !ok {
			t.Fatalf("no token %q", s)
		}
		out = append(out, id)
	}
	return out
}

var synthExtra = []synthToken{
	{"▁", -5, TypeNormal}, {"a", -3, TypeNormal}, {"b", -3, TypeNormal}, {"c", -3, TypeNormal},
	{"▁a", -1, TypeNormal}, {"ab", -2, TypeNormal}, {"bc", -2, TypeNormal}, {"▁ab", -1.5, TypeNormal},
	{"▁abc", -0.5, TypeNormal}, {"▁b", -4, TypeNormal},
	{"<tool>", 0, TypeUserDefined}, {"<|im_start|>", 0, TypeControl}, {"<|im_end|>", 0, TypeControl},
	{"<|im_start|>x", 0, TypeControl}, {"<unused7>", 0, TypeControl},
}

func TestSPMMergeOrder(t *testing.T) {
	tok := mustTokenizer(t, synthSPM(synthExtra, nil))
	// ▁a (-1) merges first, then ▁ab (-1.5) beats bc (-2), then ▁abc.
	if got, want := tok.EncodeWith("abc", EncodeOptions{}), ids(t, tok, "▁abc"); !equalIDs(got, want) {
		t.Errorf("abc: %v, want %v", got, want)
	}
	// "bcbc": bc (-2) beats ▁b (-4) at both places.
	if got, want := tok.EncodeWith("bcbc", EncodeOptions{}), ids(t, tok, "▁", "bc", "bc"); !equalIDs(got, want) {
		t.Errorf("bcbc: %v, want %v", got, want)
	}
	// Equal scores (ab, bc: -2) resolve to the leftmost pair.
	if got, want := tok.EncodeWith("cabc", EncodeOptions{}), ids(t, tok, "▁", "c", "ab", "c"); !equalIDs(got, want) {
		t.Errorf("cabc: %v, want %v", got, want)
	}
	// Characters outside the vocabulary fall back to bytes.
	got := tok.EncodeWith("aé", EncodeOptions{})
	want := append(ids(t, tok, "▁a"), tok.byteTokens[0xC3], tok.byteTokens[0xA9])
	if !equalIDs(got, want) {
		t.Errorf("aé: %v, want %v", got, want)
	}
	if s := tok.Decode(got); s != "aé" {
		t.Errorf("Decode(%v) = %q", got, s)
	}
}

func TestSpecialTokenMatching(t *testing.T) {
	tok := mustTokenizer(t, synthSPM(synthExtra, nil))
	// User-defined tokens are matched even without ParseSpecial, and the
	// text after any special token gets the space prefix again.
	got := tok.EncodeWith("a<tool>b", EncodeOptions{})
	want := ids(t, tok, "▁a", "<tool>", "▁b")
	if !equalIDs(got, want) {
		t.Errorf("a<tool>b: %v, want %v", got, want)
	}
	if s := tok.Decode(got); s != "a<tool> b" {
		t.Errorf("Decode = %q (user-defined tokens always render)", s)
	}
	// Control tokens only with ParseSpecial; the longest token wins.
	got = tok.EncodeWith("<|im_start|>xa<|im_end|>", EncodeOptions{ParseSpecial: true})
	want = ids(t, tok, "<|im_start|>x", "▁a", "<|im_end|>")
	if !equalIDs(got, want) {
		t.Errorf("control tokens: %v, want %v", got, want)
	}
	got = tok.EncodeWith("<|im_end|>", EncodeOptions{})
	for _, id := range got {
		if tok.TokenType(id) == TypeControl {
			t.Errorf("ParseSpecial=false matched a control token: %v", got)
		}
	}
	// EOG by text, and control tokens mentioning "unused" stay matchable.
	imEnd := ids(t, tok, "<|im_end|>")[0]
	if !tok.IsEOG(imEnd) || tok.EOT() != imEnd {
		t.Errorf("<|im_end|> must be EOG and the EOT (EOT=%d)", tok.EOT())
	}
	if eog := tok.EOGTokens(); !equalIDs(eog, []int32{2, imEnd}) {
		t.Errorf("EOGTokens = %v, want [2 %d]", eog, imEnd)
	}
}

func TestStripAttributes(t *testing.T) {
	tok := mustTokenizer(t, synthSPM(synthExtra, map[string]any{keyName: "Phi-3-mini-4k-instruct"}))
	// Phi-3 special tokens swallow the whitespace after them.
	got := tok.EncodeWith("<|im_end|> \n a", EncodeOptions{ParseSpecial: true})
	want := ids(t, tok, "<|im_end|>", "▁a")
	if !equalIDs(got, want) {
		t.Errorf("RSTRIP: %v, want %v", got, want)
	}
	// <s> keeps its right side.
	got = tok.EncodeWith("<s> a", EncodeOptions{ParseSpecial: true})
	want = ids(t, tok, "<s>", "▁", "▁a")
	if !equalIDs(got, want) {
		t.Errorf("<s> must not strip: %v, want %v", got, want)
	}
}

func TestMetadataErrors(t *testing.T) {
	base := func() map[string]any { return synthSPM(synthExtra, nil) }
	cases := []struct {
		name string
		edit func(m map[string]any)
		want string
	}{
		{"no model", func(m map[string]any) { delete(m, keyModel) }, keyModel},
		{"unknown model", func(m map[string]any) { m[keyModel] = "bert" }, `"bert"`},
		{"no tokens", func(m map[string]any) { delete(m, keyTokens) }, keyTokens},
		{"tokens wrong type", func(m map[string]any) { m[keyTokens] = []int32{1} }, "not a string array"},
		{"short scores", func(m map[string]any) { m[keyScores] = []float32{1} }, keyScores},
		{"short types", func(m map[string]any) { m[keyTypes] = []int32{1} }, keyTypes},
		{"duplicate token", func(m map[string]any) {
			texts := append([]string(nil), m[keyTokens].([]string)...)
			texts[len(texts)-1] = "a"
			m[keyTokens] = texts
		}, "duplicate token"},
		{"gpt2 without merges", func(m map[string]any) { m[keyModel] = "gpt2"; m[keyPre] = "gpt-2" }, keyMerges},
		{"unknown pre", func(m map[string]any) { m[keyModel] = "gpt2"; m[keyPre] = "zzz"; m[keyMerges] = []string{} }, `"zzz"`},
		{"add_bos without bos", func(m map[string]any) {
			m[keyModel] = "gpt2"
			m[keyPre] = "glm4"
			m[keyMerges] = []string{}
			m[keyAddBOS] = true
		}, keyAddBOS},
	}
	for _, c := range cases {
		m := base()
		c.edit(m)
		_, err := FromGGUF(fakeGGUF(m))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one mentioning %s", c.name, err, c.want)
		}
	}
	if _, err := FromGGUF(nil); err == nil {
		t.Error("FromGGUF(nil) must fail")
	}
}

func TestSpecialIDsFromMetadata(t *testing.T) {
	m := synthSPM(synthExtra, map[string]any{
		keyBOS: uint32(2), keyEOS: uint32(1 << 30), keyPAD: uint32(0xFFFFFFFF), keyAddBOS: false,
	})
	tok := mustTokenizer(t, m)
	if tok.BOS() != 2 || tok.EOS() != 2 || tok.Padding() != NoToken || tok.AddBOS() {
		t.Errorf("BOS %d EOS %d PAD %d addBOS %v: want 2, default 2, none, false", tok.BOS(), tok.EOS(), tok.Padding(), tok.AddBOS())
	}
	warned := 0
	for _, w := range tok.Warnings() {
		if strings.Contains(w, keyEOS) || strings.Contains(w, keyPAD) {
			warned++
		}
	}
	if warned != 2 {
		t.Errorf("want warnings for the out-of-range EOS and PAD ids, got %q", tok.Warnings())
	}
	// A BPE vocabulary without tokenizer.ggml.pre uses "default", with a warning.
	bpe := mustTokenizer(t, map[string]any{
		keyModel: "gpt2", keyTokens: []string{"a", "b", "ab", "Ġ"}, keyMerges: []string{"a b"},
	})
	if bpe.Pre() != "default" || len(bpe.Warnings()) == 0 {
		t.Errorf("missing pre: Pre()=%q warnings %q", bpe.Pre(), bpe.Warnings())
	}
	if got := bpe.EncodeWith("ab a", EncodeOptions{}); !equalIDs(got, []int32{2, 3, 0}) {
		t.Errorf("tiny BPE: %v, want [2 3 0]", got)
	}
}

func TestBPEIgnoreMergesAndDefaults(t *testing.T) {
	// Byte-level vocabulary: the 256 GPT-2 characters, then "ab" (merge
	// "a b") and "abc", which no merge produces.
	var texts []string
	for b := 0; b < 256; b++ {
		texts = append(texts, byteToUTF8[b])
	}
	texts = append(texts, "ab", "abc", "<|eot_id|>")
	meta := func(pre string) map[string]any {
		return map[string]any{keyModel: "gpt2", keyPre: pre, keyTokens: texts, keyMerges: []string{"a b"}}
	}
	gpt2 := mustTokenizer(t, meta("gpt-2"))
	llama3 := mustTokenizer(t, meta("llama-bpe"))
	ab, abc := int32(256), int32(257)
	if got, want := gpt2.EncodeWith("abc", EncodeOptions{}), []int32{ab, gpt2.byteSymbol['c']}; !equalIDs(got, want) {
		t.Errorf("gpt-2 pre: %v, want %v (merges only)", got, want)
	}
	if got := llama3.EncodeWith("abc", EncodeOptions{}); !equalIDs(got, []int32{abc}) {
		t.Errorf("llama-bpe: %v, want [%d]: a word that is a token is taken whole", got, abc)
	}
	if gpt2.AddBOS() || !llama3.AddBOS() {
		t.Errorf("add_bos defaults: gpt-2 %v (want false), llama-bpe %v (want true)", gpt2.AddBOS(), llama3.AddBOS())
	}
	if !gpt2.CleanSpaces() || llama3.EOT() != 258 || !llama3.IsEOG(258) {
		t.Errorf("CleanSpaces %v, EOT %d", gpt2.CleanSpaces(), llama3.EOT())
	}
	qwen := mustTokenizer(t, meta("qwen2"))
	if qwen.CleanSpaces() {
		t.Error("qwen2 does not clean spaces in llama.cpp")
	}
}

func TestStories260K(t *testing.T) {
	tok := loadTokenizer(t, "models/stories260K.gguf")
	if tok.Kind() != KindSPM || tok.VocabSize() != 512 || tok.BOS() != 1 || tok.EOS() != 2 || !tok.AddBOS() {
		t.Fatalf("kind %v vocab %d bos %d eos %d addBOS %v", tok.Kind(), tok.VocabSize(), tok.BOS(), tok.EOS(), tok.AddBOS())
	}
	if tok.Padding() != NoToken || tok.Separator() != NoToken {
		t.Errorf("the file's 0xFFFFFFFF padding/separator ids must be ignored, got %d %d", tok.Padding(), tok.Separator())
	}
	s := "Once upon a time, there was a little girl named Lily."
	ids := tok.Encode(s, true)
	if ids[0] != 1 || tok.Decode(ids[1:]) != s {
		t.Errorf("round trip: %v -> %q", ids, tok.Decode(ids[1:]))
	}
}
