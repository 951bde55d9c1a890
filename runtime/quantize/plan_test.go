package quantize

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/wgllm/wgllm/runtime/gguf"
)

// llamaTensors is a llama-shaped tensor list (in GGUF order, not
// llama.cpp's) with nLayer blocks; cols is the embedding width.
func llamaTensors(nLayer int, cols uint64, untied bool) []gguf.TensorInfo {
	ts := []gguf.TensorInfo{
		{Name: "token_embd.weight", Dims: []uint64{cols, 1000}, Type: gguf.F16},
		{Name: "output_norm.weight", Dims: []uint64{cols}, Type: gguf.F32},
	}
	if untied {
		ts = append(ts, gguf.TensorInfo{Name: "output.weight", Dims: []uint64{cols, 1000}, Type: gguf.F16})
	}
	for l := range nLayer {
		p := fmt.Sprintf("blk.%d.", l)
		ts = append(ts,
			gguf.TensorInfo{Name: p + "attn_norm.weight", Dims: []uint64{cols}, Type: gguf.F32},
			gguf.TensorInfo{Name: p + "attn_q.weight", Dims: []uint64{cols, cols}, Type: gguf.F16},
			gguf.TensorInfo{Name: p + "attn_k.weight", Dims: []uint64{cols, cols / 4}, Type: gguf.F16},
			gguf.TensorInfo{Name: p + "attn_v.weight", Dims: []uint64{cols, cols / 4}, Type: gguf.F16},
			gguf.TensorInfo{Name: p + "attn_output.weight", Dims: []uint64{cols, cols}, Type: gguf.F16},
			gguf.TensorInfo{Name: p + "ffn_norm.weight", Dims: []uint64{cols}, Type: gguf.F32},
			gguf.TensorInfo{Name: p + "ffn_gate.weight", Dims: []uint64{cols, 3 * cols}, Type: gguf.F16},
			gguf.TensorInfo{Name: p + "ffn_up.weight", Dims: []uint64{cols, 3 * cols}, Type: gguf.F16},
			gguf.TensorInfo{Name: p + "ffn_down.weight", Dims: []uint64{3 * cols, cols}, Type: gguf.F16},
		)
	}
	return ts
}

func planTypes(t *testing.T, h hparams, ts []gguf.TensorInfo, ft FileType) map[string]gguf.GGMLType {
	t.Helper()
	plans, err := plan(h, ts, ft)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]gguf.GGMLType{}
	for _, p := range plans {
		got[p.Tensor.Name] = p.Type
	}
	return got
}

// layersOf lists the layers whose tensor named suffix has type typ.
func layersOf(got map[string]gguf.GGMLType, nLayer int, suffix string, typ gguf.GGMLType) []int {
	var ls []int
	for l := range nLayer {
		if got[fmt.Sprintf("blk.%d.%s", l, suffix)] == typ {
			ls = append(ls, l)
		}
	}
	return ls
}

// The layers llama.cpp's use_more_bits picks for 32 layers: the first and
// last eighth, and every third in between starting at 6.
var moreBits32 = []int{0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31}

func TestMixRules(t *testing.T) {
	llama32 := hparams{arch: "llama", nLayer: 32, nGQA: 4}
	ts := llamaTensors(32, 4096, true)
	cases := []struct {
		ft                      FileType
		base, more              gguf.GGMLType
		attnV, ffnDown          []int // layers given `more`
		tokenEmbd, output, attn gguf.GGMLType
	}{
		{MostlyQ4_KM, gguf.Q4_K, gguf.Q6_K, moreBits32, moreBits32, gguf.Q4_K, gguf.Q6_K, gguf.Q4_K},
		{MostlyQ5_KM, gguf.Q5_K, gguf.Q6_K, moreBits32, moreBits32, gguf.Q5_K, gguf.Q6_K, gguf.Q5_K},
		{MostlyQ4_KS, gguf.Q4_K, gguf.Q5_K, []int{0, 1, 2, 3}, []int{0, 1, 2, 3}, gguf.Q4_K, gguf.Q6_K, gguf.Q4_K},
		{MostlyQ5_KS, gguf.Q5_K, gguf.Q6_K, nil, nil, gguf.Q5_K, gguf.Q6_K, gguf.Q5_K},
		{MostlyQ6_K, gguf.Q6_K, gguf.Q6_K, nil, nil, gguf.Q6_K, gguf.Q6_K, gguf.Q6_K},
		{MostlyQ8_0, gguf.Q8_0, gguf.Q8_0, nil, nil, gguf.Q8_0, gguf.Q8_0, gguf.Q8_0},
		{MostlyQ4_0, gguf.Q4_0, gguf.Q4_0, nil, nil, gguf.Q4_0, gguf.Q6_K, gguf.Q4_0},
		{MostlyQ5_1, gguf.Q5_1, gguf.Q5_1, nil, nil, gguf.Q5_1, gguf.Q6_K, gguf.Q5_1},
		{MostlyQ3_KL, gguf.Q3_K, gguf.Q5_K, seq(32), seq(32), gguf.Q3_K, gguf.Q6_K, gguf.Q5_K},
		{MostlyQ2_K, gguf.Q2_K, gguf.Q4_K, seq(32), nil, gguf.Q2_K, gguf.Q6_K, gguf.Q3_K}, // GQA 4: attn_v Q4_K
		{MostlyF16, gguf.F16, gguf.F16, nil, nil, gguf.F16, gguf.F16, gguf.F16},
		// IQ4 without an importance matrix: GQA 4 puts attn_v in Q5_K, the
		// first eighth of ffn_down too.
		{MostlyIQ4NL, gguf.IQ4_NL, gguf.Q5_K, seq(32), []int{0, 1, 2, 3}, gguf.IQ4_NL, gguf.Q6_K, gguf.IQ4_NL},
		{MostlyIQ4XS, gguf.IQ4_XS, gguf.Q5_K, seq(32), []int{0, 1, 2, 3}, gguf.IQ4_XS, gguf.Q6_K, gguf.IQ4_XS},
		// No experts: every matrix Q8_0.
		{MostlyMXFP4MoE, gguf.Q8_0, gguf.Q8_0, nil, nil, gguf.Q8_0, gguf.Q8_0, gguf.Q8_0},
	}
	for _, c := range cases {
		t.Run(c.ft.String(), func(t *testing.T) {
			got := planTypes(t, llama32, ts, c.ft)
			if c.more != c.base {
				if ls := layersOf(got, 32, "attn_v.weight", c.more); !slices.Equal(ls, c.attnV) {
					t.Errorf("attn_v in %s at layers %v, want %v", c.more, ls, c.attnV)
				}
				if c.ffnDown != nil {
					if ls := layersOf(got, 32, "ffn_down.weight", c.more); !slices.Equal(ls, c.ffnDown) {
						t.Errorf("ffn_down in %s at layers %v, want %v", c.more, ls, c.ffnDown)
					}
				}
			}
			if got["token_embd.weight"] != c.tokenEmbd || got["output.weight"] != c.output {
				t.Errorf("token_embd %s, output %s; want %s, %s", got["token_embd.weight"], got["output.weight"], c.tokenEmbd, c.output)
			}
			if a := got["blk.5.attn_output.weight"]; a != c.attn {
				t.Errorf("attn_output %s, want %s", a, c.attn)
			}
			for _, name := range []string{"blk.5.attn_q.weight", "blk.5.attn_k.weight", "blk.5.ffn_gate.weight", "blk.5.ffn_up.weight"} {
				if got[name] != c.base {
					t.Errorf("%s: %s, want %s", name, got[name], c.base)
				}
			}
			for name, typ := range got {
				if strings.HasSuffix(name, "_norm.weight") && typ != gguf.F32 {
					t.Errorf("%s: %s, want it left F32", name, typ)
				}
			}
		})
	}

	// Q2_K with little GQA gives attn_v Q3_K; ffn_down and attn_output Q3_K.
	got := planTypes(t, hparams{arch: "llama", nLayer: 32, nGQA: 1}, ts, MostlyQ2_K)
	if got["blk.0.attn_v.weight"] != gguf.Q3_K || got["blk.9.ffn_down.weight"] != gguf.Q3_K {
		t.Errorf("Q2_K, no GQA: attn_v %s, ffn_down %s; want Q3_K", got["blk.0.attn_v.weight"], got["blk.9.ffn_down.weight"])
	}
	// Q3_K_M: attn_v Q5_K for the first two, then Q4_K; ffn_down Q5_K below
	// n/16, Q4_K elsewhere (not falcon); attn_output Q4_K.
	got = planTypes(t, llama32, ts, MostlyQ3_KM)
	if ls := layersOf(got, 32, "attn_v.weight", gguf.Q5_K); !slices.Equal(ls, []int{0, 1}) || got["blk.2.attn_v.weight"] != gguf.Q4_K {
		t.Errorf("Q3_K_M attn_v Q5_K at %v, layer 2 %s", ls, got["blk.2.attn_v.weight"])
	}
	if ls := layersOf(got, 32, "ffn_down.weight", gguf.Q5_K); !slices.Equal(ls, []int{0, 1}) || got["blk.7.ffn_down.weight"] != gguf.Q4_K {
		t.Errorf("Q3_K_M ffn_down Q5_K at %v, layer 7 %s", ls, got["blk.7.ffn_down.weight"])
	}
}

func seq(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}

func TestMixSpecialModels(t *testing.T) {
	ts := llamaTensors(8, 512, true)
	// Tied embeddings: token_embd takes output's treatment.
	got := planTypes(t, hparams{arch: "llama", nLayer: 8}, llamaTensors(8, 512, false), MostlyQ4_KM)
	if got["token_embd.weight"] != gguf.Q6_K {
		t.Errorf("tied token_embd: %s, want Q6_K", got["token_embd.weight"])
	}
	// Falcon: output Q8_0; Q4_K_M ffn_down Q6_K below n/16, Q5_K on
	// use_more_bits layers, else Q4_K.
	f := llamaTensors(32, 4096, true)
	got = planTypes(t, hparams{arch: "falcon", nLayer: 32}, f, MostlyQ4_KM)
	if got["output.weight"] != gguf.Q8_0 {
		t.Errorf("falcon output %s, want Q8_0", got["output.weight"])
	}
	if got["blk.0.ffn_down.weight"] != gguf.Q6_K || got["blk.2.ffn_down.weight"] != gguf.Q5_K || got["blk.4.ffn_down.weight"] != gguf.Q4_K {
		t.Errorf("falcon ffn_down layers 0, 2, 4: %s %s %s; want Q6_K Q5_K Q4_K",
			got["blk.0.ffn_down.weight"], got["blk.2.ffn_down.weight"], got["blk.4.ffn_down.weight"])
	}
	// 70B llama: attn_v that would be Q4_K becomes Q5_K.
	got = planTypes(t, hparams{arch: "llama", nLayer: 80, is70B: true}, llamaTensors(80, 512, true), MostlyQ4_KM)
	if got["blk.10.attn_v.weight"] != gguf.Q5_K || got["blk.0.attn_v.weight"] != gguf.Q6_K {
		t.Errorf("70B attn_v layers 10, 0: %s %s; want Q5_K Q6_K", got["blk.10.attn_v.weight"], got["blk.0.attn_v.weight"])
	}
	// Eight experts: attn_v and attn_k Q8_0, attn_output Q5_K.
	got = planTypes(t, hparams{arch: "llama", nLayer: 8, nExpert: 8}, ts, MostlyQ4_KM)
	if got["blk.3.attn_v.weight"] != gguf.Q8_0 || got["blk.3.attn_k.weight"] != gguf.Q8_0 || got["blk.3.attn_output.weight"] != gguf.Q5_K {
		t.Errorf("8 experts: attn_v %s attn_k %s attn_output %s", got["blk.3.attn_v.weight"], got["blk.3.attn_k.weight"], got["blk.3.attn_output.weight"])
	}
	// IQ4_XS with little GQA keeps attn_v; eight experts give attn_v Q8_0
	// and attn_output Q5_K, as for the K mixes.
	got = planTypes(t, hparams{arch: "llama", nLayer: 8, nGQA: 2}, ts, MostlyIQ4XS)
	if got["blk.3.attn_v.weight"] != gguf.IQ4_XS || got["blk.3.attn_output.weight"] != gguf.IQ4_XS {
		t.Errorf("IQ4_XS, GQA 2: attn_v %s attn_output %s, want IQ4_XS", got["blk.3.attn_v.weight"], got["blk.3.attn_output.weight"])
	}
	got = planTypes(t, hparams{arch: "llama", nLayer: 8, nExpert: 8}, ts, MostlyIQ4NL)
	if got["blk.3.attn_v.weight"] != gguf.Q8_0 || got["blk.3.attn_output.weight"] != gguf.Q5_K {
		t.Errorf("IQ4_NL, 8 experts: attn_v %s attn_output %s", got["blk.3.attn_v.weight"], got["blk.3.attn_output.weight"])
	}
	// MXFP4_MOE: stacked expert matrices MXFP4, every other matrix Q8_0
	// (the shared expert, attention, both embeddings), the router and norms
	// as they are.
	moe := []gguf.TensorInfo{
		{Name: "token_embd.weight", Dims: []uint64{512, 1000}, Type: gguf.F32},
		{Name: "output.weight", Dims: []uint64{512, 1000}, Type: gguf.F32},
		{Name: "blk.0.attn_q.weight", Dims: []uint64{512, 512}, Type: gguf.F32},
		{Name: "blk.0.attn_v.weight", Dims: []uint64{512, 128}, Type: gguf.F32},
		{Name: "blk.0.ffn_gate_inp.weight", Dims: []uint64{512, 8}, Type: gguf.F32},
		{Name: "blk.0.ffn_gate_exps.weight", Dims: []uint64{512, 96, 8}, Type: gguf.F32},
		{Name: "blk.0.ffn_down_exps.weight", Dims: []uint64{96, 512, 8}, Type: gguf.F32},
		{Name: "blk.0.ffn_up_shexp.weight", Dims: []uint64{512, 96}, Type: gguf.F32},
		{Name: "blk.0.ffn_norm.weight", Dims: []uint64{512}, Type: gguf.F32},
		{Name: "blk.0.one_expert.weight", Dims: []uint64{512, 96, 1}, Type: gguf.F32},
	}
	got = planTypes(t, hparams{arch: "qwen2moe", nLayer: 1, nExpert: 8}, moe, MostlyMXFP4MoE)
	for name, want := range map[string]gguf.GGMLType{
		"token_embd.weight": gguf.Q8_0, "output.weight": gguf.Q8_0, "blk.0.attn_q.weight": gguf.Q8_0,
		"blk.0.attn_v.weight": gguf.Q8_0, "blk.0.ffn_gate_inp.weight": gguf.F32,
		"blk.0.ffn_gate_exps.weight": gguf.MXFP4, "blk.0.ffn_down_exps.weight": gguf.MXFP4,
		"blk.0.ffn_up_shexp.weight": gguf.Q8_0, "blk.0.ffn_norm.weight": gguf.F32, "blk.0.one_expert.weight": gguf.Q8_0,
	} {
		if got[name] != want {
			t.Errorf("MXFP4_MOE %s: %s, want %s", name, got[name], want)
		}
	}
	// A fused attn_qkv counts as attention values.
	qkv := []gguf.TensorInfo{
		{Name: "blk.0.attn_qkv.weight", Dims: []uint64{512, 1536}, Type: gguf.F16},
		{Name: "blk.1.attn_qkv.weight", Dims: []uint64{512, 1536}, Type: gguf.F16},
	}
	got = planTypes(t, hparams{arch: "phi3", nLayer: 2}, qkv, MostlyQ4_KM)
	if got["blk.0.attn_qkv.weight"] != gguf.Q4_K || got["blk.1.attn_qkv.weight"] != gguf.Q6_K {
		t.Errorf("attn_qkv layers 0, 1: %s %s, want Q4_K Q6_K", got["blk.0.attn_qkv.weight"], got["blk.1.attn_qkv.weight"])
	}
}

// Rows that K-quant blocks do not divide fall back as llama.cpp does;
// vectors, norms and non-weights stay in their type.
func TestFallbackAndUntouched(t *testing.T) {
	ts := []gguf.TensorInfo{
		{Name: "output.weight", Dims: []uint64{96, 100}, Type: gguf.F16},         // output rule: 96 % 256 != 0 gives Q8_0
		{Name: "token_embd.weight", Dims: []uint64{96, 100}, Type: gguf.F16},     // Q4_K -> Q5_0
		{Name: "blk.0.attn_v.weight", Dims: []uint64{96, 96}, Type: gguf.F16},    // Q6_K -> Q8_0
		{Name: "blk.0.attn_q.weight", Dims: []uint64{40, 96}, Type: gguf.F16},    // Q4_K -> Q5_0 does not fit -> F16
		{Name: "blk.0.attn_norm.weight", Dims: []uint64{96}, Type: gguf.F32},     // 1-D
		{Name: "blk.0.attn_k.weight", Dims: []uint64{256, 1, 1}, Type: gguf.F16}, // 1-D after trailing ones
		{Name: "blk.0.ffn_gate_inp.weight", Dims: []uint64{256, 8}, Type: gguf.F32},
		{Name: "rope_freqs", Dims: []uint64{256, 2}, Type: gguf.F32},
	}
	plans, err := plan(hparams{arch: "llama", nLayer: 1}, ts, MostlyQ4_KM)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		typ      gguf.GGMLType
		fallback bool
	}{
		"output.weight":             {gguf.Q8_0, false},
		"token_embd.weight":         {gguf.Q5_0, true},
		"blk.0.attn_v.weight":       {gguf.Q8_0, true},
		"blk.0.attn_q.weight":       {gguf.F16, true},
		"blk.0.attn_norm.weight":    {gguf.F32, false},
		"blk.0.attn_k.weight":       {gguf.F16, false},
		"blk.0.ffn_gate_inp.weight": {gguf.F32, false},
		"rope_freqs":                {gguf.F32, false},
	}
	for _, p := range plans {
		w := want[p.Tensor.Name]
		if p.Type != w.typ || p.Fallback != w.fallback {
			t.Errorf("%s: %s (fallback %v), want %s (fallback %v)", p.Tensor.Name, p.Type, p.Fallback, w.typ, w.fallback)
		}
	}
	// IQ4_XS falls back to IQ4_NL, and to F16 where that does not fit either.
	got := planTypes(t, hparams{arch: "llama", nLayer: 1}, []gguf.TensorInfo{
		{Name: "blk.0.attn_q.weight", Dims: []uint64{96, 8}, Type: gguf.F32},
		{Name: "blk.0.attn_k.weight", Dims: []uint64{40, 8}, Type: gguf.F32},
	}, MostlyIQ4XS)
	if got["blk.0.attn_q.weight"] != gguf.IQ4_NL || got["blk.0.attn_k.weight"] != gguf.F16 {
		t.Errorf("IQ4_XS of 96- and 40-column rows: %s, %s; want IQ4_NL, F16", got["blk.0.attn_q.weight"], got["blk.0.attn_k.weight"])
	}
	// Legacy types, which llama.cpp refuses for such rows, use F16.
	got = planTypes(t, hparams{arch: "llama", nLayer: 1}, []gguf.TensorInfo{{Name: "blk.0.attn_q.weight", Dims: []uint64{40, 8}, Type: gguf.F32}}, MostlyQ8_0)
	if got["blk.0.attn_q.weight"] != gguf.F16 {
		t.Errorf("Q8_0 of 40-column rows: %s, want F16", got["blk.0.attn_q.weight"])
	}
}

// llama.cpp counts layers in its own tensor order: by block number, then
// name, with blk.10 after blk.9.
func TestLlamaOrder(t *testing.T) {
	var names []string
	for _, ti := range llamaOrder(llamaTensors(12, 256, true)) {
		names = append(names, ti.Name)
	}
	if names[0] != "output.weight" || names[1] != "output_norm.weight" || names[2] != "token_embd.weight" || names[3] != "blk.0.attn_k.weight" {
		t.Errorf("order starts %v", names[:4])
	}
	i9, i10 := slices.Index(names, "blk.9.ffn_up.weight"), slices.Index(names, "blk.10.attn_k.weight")
	if i9 < 0 || i10 != i9+1 {
		t.Errorf("blk.10 does not follow blk.9: positions %d, %d", i9, i10)
	}
}

func TestPlanNeedsBlockCount(t *testing.T) {
	if _, err := plan(hparams{arch: "llama"}, llamaTensors(2, 256, true), MostlyQ4_KM); err == nil || !strings.Contains(err.Error(), "llama.block_count") {
		t.Errorf("no block_count: %v", err)
	}
	if _, err := plan(hparams{arch: "llama"}, llamaTensors(2, 256, true), MostlyF16); err != nil {
		t.Errorf("F16 needs no block_count: %v", err)
	}
}

func TestParseFileType(t *testing.T) {
	for s, want := range map[string]FileType{"q4_k_m": MostlyQ4_KM, "Q8_0": MostlyQ8_0, "f16": MostlyF16, "15": MostlyQ4_KM, " Q6_K ": MostlyQ6_K, "bf16": MostlyBF16,
		"iq4_nl": MostlyIQ4NL, "IQ4_XS": MostlyIQ4XS, "30": MostlyIQ4XS, "mxfp4_moe": MostlyMXFP4MoE, "38": MostlyMXFP4MoE} {
		if got, err := ParseFileType(s); err != nil || got != want {
			t.Errorf("ParseFileType(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	for _, s := range []string{"", "q4", "IQ2_XXS", "19", "Q4_K_X", "4"} {
		if _, err := ParseFileType(s); err == nil || !strings.Contains(err.Error(), "Q4_K_M") {
			t.Errorf("ParseFileType(%q): %v", s, err)
		}
	}
	if s := FileType(19).String(); s != "IQ2_XXS" {
		t.Errorf("file type 19 is %q", s)
	}
}
