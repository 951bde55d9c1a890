package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"github.com/wgllm/wgllm/runtime/gguf"
	"github.com/wgllm/wgllm/runtime/model"
)

// writeShape writes the random-weight model of a shape as a GGUF file,
// so the peers (llama.cpp) can run the very file wgllm benchmarks. With a
// vocabulary file its tokenizer is copied in, padded with unused tokens
// to the shape's vocabulary size as the peers' mkmodel.py pads it.
func writeShape(cmd *cobra.Command, path string) error {
	f := cmd.Flags()
	shape, _ := f.GetString("shape")
	typName, _ := f.GetString("type")
	vocabPath, _ := f.GetString("vocab")
	cfg, ok := model.Shapes[shape]
	if !ok {
		return fmt.Errorf("--write needs --shape: one of %s", strings.Join(model.ShapeNames(), ", "))
	}
	typ, err := model.ParseWeightType(typName)
	if err != nil {
		return err
	}
	meta, tensors, err := model.RandomGGUF(cfg, typ, 1)
	if err != nil {
		return err
	}
	meta = append(meta, gguf.KV{Key: "general.name", Value: gguf.Val("random-" + shape)})
	if vocabPath != "" {
		tok, err := vocabKVs(vocabPath, cfg.Vocab)
		if err != nil {
			return err
		}
		meta = append(meta, tok...)
	}
	if err := gguf.WriteFile(path, meta, tensors); err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "wrote %s: %s %s, %d tensors\n", path, shape, strings.ToUpper(typName), len(tensors))
	return nil
}

// vocabKVs reads a vocabulary GGUF's tokenizer keys, padding its token
// list to n entries with unused tokens (score -1e9, type 5: unused).
func vocabKVs(path string, n int) ([]gguf.KV, error) {
	vf, err := gguf.Open(path)
	if err != nil {
		return nil, err
	}
	defer vf.Close()
	toks, ok := vf.Strings("tokenizer.ggml.tokens")
	if !ok || len(toks) > n {
		return nil, fmt.Errorf("%s: no token list of at most %d tokens", path, n)
	}
	scores, _ := vf.Float32s("tokenizer.ggml.scores")
	types, _ := vf.Int32s("tokenizer.ggml.token_type")
	for i := len(toks); i < n; i++ {
		toks = append(toks, fmt.Sprintf("<unused_%d>", i))
		scores = append(scores, -1e9)
		types = append(types, 5)
	}
	kvs := []gguf.KV{
		{Key: "tokenizer.ggml.tokens", Value: gguf.Val(toks)},
		{Key: "tokenizer.ggml.scores", Value: gguf.Val(scores)},
		{Key: "tokenizer.ggml.token_type", Value: gguf.Val(types)},
	}
	for _, k := range vf.Keys {
		if strings.HasPrefix(k, "tokenizer.") && k != "tokenizer.ggml.tokens" && k != "tokenizer.ggml.scores" &&
			k != "tokenizer.ggml.token_type" && k != "tokenizer.ggml.merges" {
			kvs = append(kvs, gguf.KV{Key: k, Value: vf.Metadata[k]})
		}
	}
	return kvs, nil
}
