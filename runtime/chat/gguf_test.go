package chat

import (
	"bytes"
	"strings"
	"testing"

	"github.com/wgllm/wgllm/internal/sharedfiles"
	"github.com/wgllm/wgllm/runtime/gguf"
)

// ggufWith writes and parses a tensorless GGUF holding meta.
func ggufWith(t *testing.T, meta ...gguf.KV) *gguf.File {
	t.Helper()
	var buf bytes.Buffer
	if err := gguf.Write(&buf, meta, nil); err != nil {
		t.Fatal(err)
	}
	f, err := gguf.Parse(bytes.NewReader(buf.Bytes()), uint64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func kv(key string, v any) gguf.KV { return gguf.KV{Key: key, Value: gguf.Val(v)} }

// fixtureOutput returns Jinja2's rendering of a fixture case.
func fixtureOutput(t *testing.T, f fixtures, template, conversation string, gen bool) string {
	t.Helper()
	for _, c := range f.Cases {
		if c.Template == template && c.Conversation == conversation && c.AddGenerationPrompt == gen && c.Output != nil {
			return *c.Output
		}
	}
	t.Fatalf("no fixture output for %s/%s", template, conversation)
	return ""
}

// TestFromGGUF: the template and the BOS/EOS texts come from the file;
// Gemma's template prints bos_token, Phi-3.5's eos_token.
func TestFromGGUF(t *testing.T) {
	f := loadFixtures(t)
	vocab := []string{"<pad>", "<eos>", "<bos>", "<|endoftext|>", "<s>", "hello"}
	for _, c := range []struct {
		template string
		bos, eos uint32
		gen      bool
	}{
		{"google-gemma-2-2b-it.jinja", 2, 1, true},
		{"microsoft-Phi-3.5-mini-instruct.jinja", 4, 3, false},
	} {
		file := ggufWith(t,
			kv("general.architecture", "llama"),
			kv(KeyChatTemplate, mustRead(t, templatePath(c.template))),
			kv("tokenizer.ggml.tokens", vocab),
			kv("tokenizer.ggml.bos_token_id", c.bos),
			kv("tokenizer.ggml.eos_token_id", c.eos),
		)
		tmpl, err := FromGGUF(file)
		if err != nil {
			t.Fatalf("%s: %v", c.template, err)
		}
		if tmpl.IsFallback() {
			t.Errorf("%s: got the fallback", c.template)
		}
		if tmpl.Source() != mustRead(t, templatePath(c.template)) {
			t.Errorf("%s: Source differs from the GGUF's template", c.template)
		}
		got, err := tmpl.Render(f.Conversations["multi_turn"], c.gen)
		if err != nil {
			t.Fatal(err)
		}
		if want := fixtureOutput(t, f, c.template, "multi_turn", c.gen); got != want {
			t.Errorf("%s: %s", c.template, firstDifference(got, want))
		}
	}
}

func TestFromGGUFWithoutTemplate(t *testing.T) {
	f := loadFixtures(t)
	file := ggufWith(t, kv("general.architecture", "llama"),
		kv("tokenizer.ggml.tokens", []string{"<s>", "</s>"}), kv("tokenizer.ggml.bos_token_id", uint32(0)))
	tmpl, err := FromGGUF(file)
	if err != nil {
		t.Fatal(err)
	}
	if !tmpl.IsFallback() || tmpl.Source() != chatMLSource {
		t.Fatal("a GGUF without a template must give the ChatML fallback")
	}
	// ChatML's markers are no tokens of the model: strings end its turn.
	if got := tmpl.StopStrings(); strings.Join(got, " ") != "<|im_end|> <|im_start|>" {
		t.Errorf("fallback StopStrings %q", got)
	}
	if own, err := New(chatMLSource, Options{}); err != nil || own.StopStrings() != nil {
		t.Errorf("a model's own template has stop strings %q (%v): its end-of-turn is a token", own.StopStrings(), err)
	}
	for _, gen := range []bool{false, true} {
		got, err := tmpl.Render(f.Conversations["system_multi_turn"], gen)
		if err != nil {
			t.Fatal(err)
		}
		if want := fixtureOutput(t, f, "chatml.jinja", "system_multi_turn", gen); got != want {
			t.Error(firstDifference(got, want))
		}
	}
}

// TestFromGGUFSharedModel: the project's bundled base model has no chat
// template, so it chats in ChatML.
func TestFromGGUFSharedModel(t *testing.T) {
	file, err := gguf.Open(sharedfiles.File(t, "models/kjv-30m-q4_k_m.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	tmpl, err := FromGGUF(file)
	if err != nil {
		t.Fatal(err)
	}
	if _, has := file.Metadata[KeyChatTemplate]; has == tmpl.IsFallback() {
		t.Errorf("IsFallback() = %v with the template key present = %v", tmpl.IsFallback(), has)
	}
	out, err := tmpl.Render([]Message{{Role: "user", Content: "In the beginning"}}, true)
	if err != nil {
		t.Fatal(err)
	}
	if tmpl.IsFallback() && out != "<|im_start|>user\nIn the beginning<|im_end|>\n<|im_start|>assistant\n" {
		t.Errorf("fallback rendered %q", out)
	}
}

func TestFromGGUFErrors(t *testing.T) {
	tokens := kv("tokenizer.ggml.tokens", []string{"a", "b"})
	cases := map[string][]gguf.KV{
		"bos out of range":       {tokens, kv("tokenizer.ggml.bos_token_id", uint32(2))},
		"eos out of range":       {tokens, kv("tokenizer.ggml.eos_token_id", uint32(1000))},
		"bos id negative":        {tokens, kv("tokenizer.ggml.bos_token_id", int32(-1))},
		"bos id a string":        {tokens, kv("tokenizer.ggml.bos_token_id", "1")},
		"token id without vocab": {kv("tokenizer.ggml.eos_token_id", uint32(0))},
		"vocab not strings":      {kv("tokenizer.ggml.tokens", []uint32{1, 2}), kv("tokenizer.ggml.bos_token_id", uint32(0))},
		"template not a string":  {tokens, kv(KeyChatTemplate, uint32(7))},
		"template malformed":     {tokens, kv(KeyChatTemplate, "{% for m in messages %}{{ m.content }}")},
	}
	for name, meta := range cases {
		t.Run(name, func(t *testing.T) {
			tmpl, err := FromGGUF(ggufWith(t, meta...))
			if err == nil {
				t.Fatalf("FromGGUF succeeded (fallback %v)", tmpl.IsFallback())
			}
			if !strings.HasPrefix(err.Error(), "chat: ") {
				t.Errorf("error %q does not name the package", err)
			}
		})
	}
}

func TestFromGGUFNoSpecialTokens(t *testing.T) {
	file := ggufWith(t, kv(KeyChatTemplate, "[{{ bos_token }}|{{ eos_token }}]{{ messages[0].content }}"))
	tmpl, err := FromGGUF(file)
	if err != nil {
		t.Fatal(err)
	}
	out, err := tmpl.Render([]Message{{Role: "user", Content: "x"}}, false)
	if err != nil || out != "[|]x" {
		t.Errorf("got %q, %v; want \"[|]x\"", out, err)
	}
}
