package tokenizer

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// readVectors parses llama.cpp's test-tokenizer-0 files: inputs separated
// by "\n__ggml_vocab_test__\n", one line of expected ids per input.
func readVectors(t *testing.T, base string) (inputs []string, want [][]int32) {
	t.Helper()
	inp, err := os.ReadFile(base + ".inp")
	if err != nil {
		t.Fatal(err)
	}
	out, err := os.ReadFile(base + ".out")
	if err != nil {
		t.Fatal(err)
	}
	const sep = "\n__ggml_vocab_test__\n"
	raw := string(inp)
	for pos := 0; pos < len(raw); {
		i := strings.Index(raw[pos:], sep)
		if i < 0 {
			inputs = append(inputs, raw[pos:])
			break
		}
		inputs = append(inputs, raw[pos:pos+i])
		pos += i + len(sep)
	}
	lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	for _, line := range lines {
		var ids []int32
		for _, f := range strings.Fields(line) {
			v, err := strconv.ParseInt(f, 10, 32)
			if err != nil {
				t.Fatalf("%s.out: bad id %q", base, f)
			}
			ids = append(ids, int32(v))
		}
		want = append(want, ids)
	}
	if len(inputs) != len(want) {
		t.Fatalf("%s: %d inputs but %d expected lines", base, len(inputs), len(want))
	}
	return inputs, want
}

func TestVocabVectors(t *testing.T) {
	for _, name := range []string{"ggml-vocab-llama-spm.gguf", "ggml-vocab-gpt-2.gguf"} {
		t.Run(name, func(t *testing.T) {
			rel := filepath.Join("testdata", "tokenizer", name)
			tok := loadTokenizer(t, rel)
			inputs, want := readVectors(t, filepath.Join(sharedDir(t), rel))
			pass := 0
			for i, in := range inputs {
				// llama.cpp's test: add_special = false, parse_special = false.
				got := tok.EncodeWith(in, EncodeOptions{})
				if !equalIDs(got, want[i]) {
					t.Errorf("case %d %q:\n got  %v\n want %v", i, in, got, want[i])
					continue
				}
				pass++
				t.Logf("case %2d ok: %q -> %d tokens", i, in, len(got))
			}
			t.Logf("%s: %d/%d cases match", name, pass, len(inputs))
		})
	}
}

func equalIDs(a, b []int32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestKJVPrompt(t *testing.T) {
	tok := loadTokenizer(t, filepath.Join("models", "kjv-30m-f16.gguf"))
	if !tok.AddBOS() {
		t.Errorf("kjv-30m: AddBOS() = false, metadata says add_bos_token = true")
	}
	got := tok.Encode("In the beginning God created", tok.AddBOS())
	want := []int32{1, 1050, 261, 2051, 391, 3372}
	if !equalIDs(got, want) {
		t.Fatalf("Encode(In the beginning God created) = %v, want %v (MODELS.md)", got, want)
	}
	if s := tok.Decode(got[1:]); s != "In the beginning God created" {
		t.Errorf("Decode(ids after BOS) = %q", s)
	}
}
