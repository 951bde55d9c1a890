package tokenizer

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
)

// TestPreTokenizerGolden compares every pre-tokenizer with splits computed
// by testdata/gen_pretokenize.py (Python's regex module running the same
// regex lists the way llama.cpp's unicode_regex_split runs them).
func TestPreTokenizerGolden(t *testing.T) {
	raw, err := os.ReadFile("testdata/pretokenize_golden.json")
	if err != nil {
		t.Fatal(err)
	}
	var golden struct {
		Inputs []string           `json:"inputs"`
		Splits map[string][][]int `json:"splits"`
	}
	if err := json.Unmarshal(raw, &golden); err != nil {
		t.Fatal(err)
	}
	if len(golden.Splits) == 0 {
		t.Fatal("golden file has no splits")
	}
	for name, want := range golden.Splits {
		t.Run(name, func(t *testing.T) {
			p, err := lookupPreTokenizer(name)
			if err != nil {
				t.Fatal(err)
			}
			if len(want) != len(golden.Inputs) {
				t.Fatalf("%d splits for %d inputs", len(want), len(golden.Inputs))
			}
			bad := 0
			for i, in := range golden.Inputs {
				cps := decodeLenient(in, nil)
				got := pretokenize(p.steps, cps, nil, nil)
				if !equalInts(got, want[i]) {
					bad++
					if bad <= 10 {
						t.Errorf("input %d %q:\n got  %q\n want %q", i, in, chunkStrings(cps, got), chunkStrings(cps, want[i]))
					}
				}
			}
			if bad > 0 {
				t.Errorf("%s: %d of %d inputs differ", name, bad, len(golden.Inputs))
			}
		})
	}
}

func equalInts(a, b []int) bool {
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

func chunkStrings(cps []rune, chunks []int) []string {
	var out []string
	start := 0
	for _, n := range chunks {
		if start+n > len(cps) {
			out = append(out, "<out of range>")
			break
		}
		out = append(out, string(cps[start:start+n]))
		start += n
	}
	return out
}

func TestUnknownPreTokenizer(t *testing.T) {
	_, err := lookupPreTokenizer("no-such-pre")
	if err == nil || !strings.Contains(err.Error(), "no-such-pre") || !strings.Contains(err.Error(), "qwen2") {
		t.Fatalf("want an error naming the value and the supported ones, got %v", err)
	}
}
