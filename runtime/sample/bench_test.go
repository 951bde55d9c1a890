package sample

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

func BenchmarkSample(b *testing.B) {
	for _, n := range []int{32000, 151936} {
		rng := rand.New(rand.NewPCG(1, 1))
		l := randomLogits(rng, n, false)
		for name, p := range map[string]Params{
			"default": DefaultParams(),
			"greedy":  Greedy(),
			"top_p":   {Temperature: 0.7, TopP: 0.9, RepeatPenalty: 1},
		} {
			b.Run(fmt.Sprintf("%s/vocab=%d", name, n), func(b *testing.B) {
				s := mustNew(b, p, n)
				for b.Loop() {
					if _, err := s.Sample(l); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
