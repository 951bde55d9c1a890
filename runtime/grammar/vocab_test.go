package grammar

import (
	"math/rand/v2"
	"testing"
)

// Random walks with a real tokenizer's vocabulary (SentencePiece, 4096
// tokens) under budgets from barely enough up: every mask leaves a token,
// and the output validates.
func TestRealVocabularyWalks(t *testing.T) {
	_, v := tokenVocab(t, "models/kjv-30m-q4_k_m.gguf")
	rng := rand.New(rand.NewPCG(11, 12))
	for _, tc := range schemaCases {
		t.Run(tc.name, func(t *testing.T) {
			g, err := FromJSONSchema([]byte(tc.schema))
			if err != nil {
				t.Fatal(err)
			}
			validator := compileValidator(t, tc.schema)
			for i := 0; i < 20; i++ {
				text := generate(t, NewMatcher(g, v), v, rng, g.MinLength()+i)
				assertValid(t, validator, text)
			}
		})
	}
}
