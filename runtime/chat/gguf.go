package chat

import (
	"fmt"

	"github.com/wgllm/wgllm/runtime/gguf"
)

// GGUF metadata keys.
const (
	KeyChatTemplate = "tokenizer.chat_template"
	keyTokens       = "tokenizer.ggml.tokens"
	keyBOS          = "tokenizer.ggml.bos_token_id"
	keyEOS          = "tokenizer.ggml.eos_token_id"
)

// FromGGUF builds the chat template of a model: tokenizer.chat_template,
// with bos_token and eos_token the texts of the model's BOS and EOS tokens
// (empty when the model declares none). A model without a template gets
// Fallback (ChatML, see IsFallback); a template that does not parse is an
// error, not a silent fallback, since the model would then be prompted in a
// format it was not trained on.
func FromGGUF(f *gguf.File) (*Template, error) { return FromGGUFOptions(f, Options{}) }

// FromGGUFOptions is FromGGUF with a clock and limits; opts' token texts are
// replaced by the model's.
func FromGGUFOptions(f *gguf.File, opts Options) (*Template, error) {
	return FromGGUFSource(f, "", opts)
}

// FromGGUFSource is FromGGUFOptions with src in place of the file's chat
// template (a created model's own); "" keeps the file's.
func FromGGUFSource(f *gguf.File, src string, opts Options) (*Template, error) {
	bos, err := specialToken(f, keyBOS)
	if err != nil {
		return nil, err
	}
	eos, err := specialToken(f, keyEOS)
	if err != nil {
		return nil, err
	}
	opts.BOSToken, opts.EOSToken = bos, eos
	if src != "" {
		return New(src, opts)
	}
	if _, present := f.Metadata[KeyChatTemplate]; !present {
		return Fallback(opts)
	}
	src, ok := f.String(KeyChatTemplate)
	if !ok {
		return nil, fmt.Errorf("chat: %s is a %s, not a string", KeyChatTemplate, f.Metadata[KeyChatTemplate].Type)
	}
	t, err := New(src, opts)
	if err != nil {
		return nil, fmt.Errorf("chat: the model's %s: %w", KeyChatTemplate, err)
	}
	return t, nil
}

// specialToken returns the text of the token whose id is at key, "" when
// the key is absent.
func specialToken(f *gguf.File, key string) (string, error) {
	if _, present := f.Metadata[key]; !present {
		return "", nil
	}
	id, ok := f.Uint32(key)
	if !ok {
		return "", fmt.Errorf("chat: %s is not a token id (%s)", key, f.Metadata[key].Describe())
	}
	tokens, ok := f.Strings(keyTokens)
	if !ok {
		return "", fmt.Errorf("chat: %s is set but %s is missing or not a string array", key, keyTokens)
	}
	if int64(id) >= int64(len(tokens)) {
		return "", fmt.Errorf("chat: %s %d is out of range (vocabulary of %d tokens)", key, id, len(tokens))
	}
	return tokens[id], nil
}
