package tokenizer

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// benchText builds ~100 KB of text: the KJV evaluation text (English prose)
// and llama.cpp's tokenizer test inputs (code, numbers, many scripts, emoji).
func benchText(b *testing.B) string {
	dir := sharedDir(b)
	var parts []string
	for _, rel := range []string{"testdata/eval/kjv-eval.txt", "testdata/tokenizer/ggml-vocab-gpt-2.gguf.inp"} {
		data, err := os.ReadFile(filepath.Join(dir, rel))
		if err != nil {
			b.Skipf("benchmark text: %v", err)
		}
		parts = append(parts, strings.ReplaceAll(string(data), "__ggml_vocab_test__\n", ""))
	}
	unit := strings.Join(parts, "\n")
	var sb strings.Builder
	for sb.Len() < 100_000 {
		sb.WriteString(unit)
	}
	return sb.String()
}

func BenchmarkEncode(b *testing.B) {
	text := benchText(b)
	for _, name := range []string{"ggml-vocab-llama-spm.gguf", "ggml-vocab-gpt-2.gguf"} {
		b.Run(strings.TrimSuffix(strings.TrimPrefix(name, "ggml-vocab-"), ".gguf"), func(b *testing.B) {
			tok := loadTokenizer(b, filepath.Join("testdata", "tokenizer", name))
			b.SetBytes(int64(len(text)))
			var n int
			for b.Loop() {
				n = len(tok.EncodeWith(text, EncodeOptions{ParseSpecial: true}))
			}
			b.ReportMetric(float64(n), "tokens")
		})
	}
}

func BenchmarkDecode(b *testing.B) {
	text := benchText(b)
	tok := loadTokenizer(b, filepath.Join("testdata", "tokenizer", "ggml-vocab-llama-spm.gguf"))
	ids := tok.EncodeWith(text, EncodeOptions{})
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		dec := tok.NewDecoder()
		for _, id := range ids {
			dec.Push(id)
		}
	}
}
