// Package ggufedit writes test copies of GGUF models with their metadata
// changed (a chat template in place of the file's), for the tests of
// several packages.
package ggufedit

import (
	"os"
	"testing"

	"github.com/wgllm/wgllm/runtime/gguf"
)

// keyChatTemplate is runtime/chat.KeyChatTemplate, spelled out so that the
// tests of every runtime package may use this one.
const keyChatTemplate = "tokenizer.chat_template"

// CopyWithTemplate writes the model src to dst with template as its
// tokenizer.chat_template and the metadata values that replace returns
// (nil: none) in place of the file's.
func CopyWithTemplate(t testing.TB, src, dst, template string, replace func(*gguf.File) map[string]gguf.Value) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	f, err := gguf.ParseBytes(data)
	if err != nil {
		t.Fatal(err)
	}
	var values map[string]gguf.Value
	if replace != nil {
		values = replace(f)
	}
	meta := make([]gguf.KV, 0, len(f.Keys)+1)
	for _, k := range f.Keys {
		v := f.Metadata[k]
		if k == keyChatTemplate {
			continue
		}
		if nv, ok := values[k]; ok {
			v = nv
		}
		meta = append(meta, gguf.KV{Key: k, Value: v})
	}
	meta = append(meta, gguf.KV{Key: keyChatTemplate, Value: gguf.Val(template)})
	tensors := make([]gguf.TensorToWrite, len(f.Tensors))
	for i, ti := range f.Tensors {
		start := f.DataOffset + ti.Offset
		tensors[i] = gguf.TensorToWrite{Name: ti.Name, Dims: ti.Dims, Type: ti.Type, Data: data[start : start+ti.Size]}
	}
	if err := gguf.WriteFile(dst, meta, tensors); err != nil {
		t.Fatal(err)
	}
}

// ThinkTemplate is ChatML whose assistant turn opens <think> (as
// DeepSeek-R1's and Qwen3's do), unless enable_thinking is false.
const ThinkTemplate = `{%- for m in messages %}<|im_start|>{{ m.role }}
{{ m.content }}<|im_end|>
{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant
{% if enable_thinking is defined and not enable_thinking %}<think>

</think>

{% else %}<think>
{% endif %}{% endif %}`
