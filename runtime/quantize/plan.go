package quantize

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/wgllm/wgllm/runtime/gguf"
)

// The per-tensor type choice below follows llama.cpp's src/llama-quant.cpp
// (tensor_allows_quantization, llama_tensor_get_type_impl and
// tensor_type_fallback, as of 2026) for the file types this package
// writes, without an importance matrix, --pure or per-tensor overrides:
// the same tensors get the same types, so a mix such as Q4_K_M means what
// it means to llama.cpp users.

// TensorPlan is the type one tensor gets.
type TensorPlan struct {
	Tensor gguf.TensorInfo
	Type   gguf.GGMLType
	// Fallback says the mix's type did not fit the row length and Type is
	// the fallback llama.cpp uses instead.
	Fallback bool
}

// hparams are the model hyper-parameters the rules look at.
type hparams struct {
	arch    string
	nLayer  int
	nExpert int
	nGQA    int  // heads per KV head
	is70B   bool // llama.cpp's LLM_TYPE_70B: bumps attn_v of Q3_K/Q4_K mixes
}

func readHparams(g *gguf.File) hparams {
	h := hparams{arch: g.Architecture()}
	if v, ok := g.ArchUint("block_count"); ok {
		h.nLayer = int(v)
	}
	if v, ok := g.ArchUint("expert_count"); ok {
		h.nExpert = int(v)
	}
	heads, okH := g.ArchUint("attention.head_count")
	kv, okKV := g.ArchUint("attention.head_count_kv")
	if !okKV {
		kv = heads // llama.cpp's default: no GQA
	}
	if okH && kv > 0 {
		h.nGQA = int(heads / kv)
	}
	// llama_quant_model_from_metadata: only llama with 80 layers and GQA is
	// the 70B type as far as quantization is concerned.
	h.is70B = h.arch == "llama" && h.nLayer == 80 && okH && heads != kv
	return h
}

// category is llama.cpp's tensor_category: what a tensor is, by name.
type category int

const (
	catOther category = iota
	catTokenEmbd
	catAttnQ
	catAttnV
	catAttnK
	catAttnQKV
	catAttnKVB
	catAttnOutput
	catFFNUp
	catFFNGate
	catFFNDown
	catOutput
)

// categoryOf checks names in llama.cpp's order (attn_qkv before attn_v
// and so on); ffn_* match anywhere in the name, so experts count too.
func categoryOf(name string) category {
	switch {
	case name == "output.weight":
		return catOutput
	case name == "token_embd.weight" || name == "per_layer_token_embd.weight":
		return catTokenEmbd
	case strings.Contains(name, "attn_qkv.weight"):
		return catAttnQKV
	case strings.Contains(name, "attn_kv_b.weight"):
		return catAttnKVB
	case strings.Contains(name, "attn_v.weight"):
		return catAttnV
	case strings.Contains(name, "attn_k.weight"):
		return catAttnK
	case strings.Contains(name, "attn_q.weight"):
		return catAttnQ
	case strings.Contains(name, "attn_output.weight"):
		return catAttnOutput
	case strings.Contains(name, "ffn_up"):
		return catFFNUp
	case strings.Contains(name, "ffn_gate"):
		return catFFNGate
	case strings.Contains(name, "ffn_down"):
		return catFFNDown
	}
	return catOther
}

// attnVLike are the tensors llama.cpp treats as attention values, the most
// sensitive to quantization.
func (c category) attnVLike() bool { return c == catAttnV || c == catAttnQKV || c == catAttnKVB }

// nDims is ggml_n_dims: the dimension count without trailing ones.
func nDims(dims []uint64) int {
	for i := len(dims) - 1; i >= 1; i-- {
		if dims[i] > 1 {
			return i + 1
		}
	}
	return 1
}

// notQuantized are name fragments of weights llama.cpp leaves in their
// stored type: small, or not matrices used in a matmul.
var notQuantized = []string{
	"_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel",
	"per_layer_model_proj", "ssm_conv1d", "shortconv.conv.weight",
	"indexer.k_proj.weight", "indexer.q_proj.weight",
	"time_mix_first.weight", "time_mix_w0.weight", "time_mix_w1.weight", "time_mix_w2.weight",
	"time_mix_v0.weight", "time_mix_v1.weight", "time_mix_v2.weight", "time_mix_a0.weight",
	"time_mix_a1.weight", "time_mix_a2.weight", "time_mix_g1.weight", "time_mix_g2.weight",
	"time_mix_decay_w1.weight", "time_mix_decay_w2.weight", "time_mix_lerp_fused.weight",
	"attn_rel_b.weight", ".position_embd", "sam.pos_embd", "sam.neck.", "sam.net_", ".rel_pos",
	".patch_embd", ".patch_merger", "a.rvq.codebook", "mm.a.code_embd",
}

// allowsQuantization is tensor_allows_quantization: matrices (2-D or more)
// whose name ends in "weight", less norms and a list of exceptions.
func allowsQuantization(t gguf.TensorInfo) bool {
	if nDims(t.Dims) < 2 || !strings.HasSuffix(t.Name, "weight") {
		return false
	}
	if t.Name == "position_embd.weight" || t.Name == "token_types.weight" {
		return false
	}
	for _, frag := range notQuantized {
		if strings.Contains(t.Name, frag) {
			return false
		}
	}
	return true
}

// layerOf parses "blk.N." the way llama.cpp's sscanf does; -1 when the
// name has no layer.
func layerOf(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, "blk.")
	if !ok {
		return -1, false
	}
	end := 0
	if end < len(rest) && (rest[end] == '-' || rest[end] == '+') {
		end++
	}
	for end < len(rest) && rest[end] >= '0' && rest[end] <= '9' {
		end++
	}
	n, err := strconv.Atoi(rest[:end])
	if err != nil {
		return -1, false
	}
	return n, true
}

// llamaOrder sorts tensors as llama.cpp's weight map does (layer, then
// name; tensors outside the blocks first), the order llama-quantize writes
// them in and counts layers by.
func llamaOrder(ts []gguf.TensorInfo) []gguf.TensorInfo {
	out := append([]gguf.TensorInfo(nil), ts...)
	sort.SliceStable(out, func(i, j int) bool {
		li, _ := layerOf(out[i].Name)
		lj, _ := layerOf(out[j].Name)
		if li != lj {
			return li < lj
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// planner holds llama.cpp's quantize_state_impl counters.
type planner struct {
	h                  hparams
	ft                 FileType
	tied               bool // no output.weight: token_embd doubles as the output matrix
	nAttnV, iAttnV     int
	nFFNDown, iFFNDown int
	nFFNGate, iFFNGate int
	nFFNUp, iFFNUp     int
}

// iq4 reports the IQ4_NL and IQ4_XS mixes, which share their rules.
func (t FileType) iq4() bool { return t == MostlyIQ4NL || t == MostlyIQ4XS }

func useMoreBits(i, n int) bool { return i < n/8 || i >= 7*n/8 || (i-n/8)%3 == 2 }

// layerInfo is llama.cpp's layer_info: the running counter, except that
// with experts the layer comes from the tensor's name.
func (p *planner) layerInfo(counter, n int, name string) (int, int, error) {
	if p.h.nExpert > 1 {
		l, ok := layerOf(name)
		if !ok {
			return 0, 0, fmt.Errorf("cannot tell the layer of tensor %s", name)
		}
		if l < 0 || l >= n {
			return 0, 0, fmt.Errorf("tensor %s: layer %d outside [0, %d)", name, l, n)
		}
		return l, n, nil
	}
	return counter, n, nil
}

// mixType is llama_tensor_get_type_impl for this package's file types:
// the type the mix gives a tensor whose base type is t.
func (p *planner) mixType(ti gguf.TensorInfo, cat category, t gguf.GGMLType) (gguf.GGMLType, error) {
	ft, h := p.ft, p.h
	falcon := h.arch == "falcon"
	switch {
	case cat == catOutput || (p.tied && cat == catTokenEmbd):
		switch {
		case ft == MostlyMXFP4MoE || falcon || ti.Dims[0]%uint64(t.BlockSize()) != 0:
			t = gguf.Q8_0
		case t != gguf.Q8_0:
			t = gguf.Q6_K
		}
	case ft == MostlyMXFP4MoE:
		// Expert tensors (a stack of matrices) get MXFP4, everything else Q8_0.
		t = gguf.Q8_0
		if len(ti.Dims) > 2 && ti.Dims[2] > 1 {
			t = gguf.MXFP4
		}
	case cat == catTokenEmbd:
		// No rule for these file types.
	case cat.attnVLike():
		switch {
		case ft == MostlyQ2_K:
			t = gguf.Q3_K
			if h.nGQA >= 4 {
				t = gguf.Q4_K
			}
		case ft == MostlyQ3_KM:
			t = gguf.Q4_K
			if p.iAttnV < 2 {
				t = gguf.Q5_K
			}
		case ft == MostlyQ3_KL:
			t = gguf.Q5_K
		case ft.iq4() && h.nGQA >= 4:
			t = gguf.Q5_K
		case (ft == MostlyQ4_KM || ft == MostlyQ5_KM) && useMoreBits(p.iAttnV, p.nAttnV):
			t = gguf.Q6_K
		case ft == MostlyQ4_KS && p.iAttnV < 4:
			t = gguf.Q5_K
		}
		if h.is70B && (t == gguf.Q3_K || t == gguf.Q4_K) {
			t = gguf.Q5_K
		}
		if h.nExpert == 8 {
			t = gguf.Q8_0
		}
		p.iAttnV++
	case cat == catAttnK:
		if h.nExpert == 8 {
			t = gguf.Q8_0
		}
	case cat == catFFNDown:
		i, n, err := p.layerInfo(p.iFFNDown, p.nFFNDown, ti.Name)
		if err != nil {
			return 0, err
		}
		switch {
		case ft == MostlyQ2_K:
			t = gguf.Q3_K
		case ft == MostlyQ3_KM:
			switch {
			case i < n/16:
				t = gguf.Q5_K
			case !falcon || useMoreBits(i, n):
				t = gguf.Q4_K
			default:
				t = gguf.Q3_K
			}
		case ft == MostlyQ3_KL:
			t = gguf.Q5_K
			if falcon {
				t = gguf.Q4_K
			}
		case ft == MostlyQ4_KM:
			if falcon {
				switch {
				case i < n/16:
					t = gguf.Q6_K
				case useMoreBits(i, n):
					t = gguf.Q5_K
				default:
					t = gguf.Q4_K
				}
			} else if useMoreBits(i, n) {
				t = gguf.Q6_K
			}
		case ft.iq4() && i < n/8: // without an importance matrix
			t = gguf.Q5_K
		case ft == MostlyQ5_KM && useMoreBits(i, n):
			t = gguf.Q6_K
		case ft == MostlyQ4_KS && !falcon && i < n/8:
			t = gguf.Q5_K
		}
		p.iFFNDown++
	case cat == catAttnOutput:
		if !falcon {
			if h.nExpert == 8 {
				switch ft {
				case MostlyQ2_K, MostlyQ3_KS, MostlyQ3_KM, MostlyQ4_KS, MostlyQ4_KM, MostlyIQ4NL, MostlyIQ4XS:
					t = gguf.Q5_K
				}
			} else {
				switch ft {
				case MostlyQ2_K:
					t = gguf.Q3_K
				case MostlyQ3_KM:
					t = gguf.Q4_K
				case MostlyQ3_KL:
					t = gguf.Q5_K
				}
			}
		} else if ft == MostlyQ3_KL {
			t = gguf.Q4_K
		}
	case cat == catFFNGate:
		// No rule for these file types, but llama.cpp still checks the layer.
		if _, _, err := p.layerInfo(p.iFFNGate, p.nFFNGate, ti.Name); err != nil {
			return 0, err
		}
		p.iFFNGate++
	case cat == catFFNUp:
		if _, _, err := p.layerInfo(p.iFFNUp, p.nFFNUp, ti.Name); err != nil {
			return 0, err
		}
		p.iFFNUp++
	}
	return t, nil
}

// fallback is tensor_type_fallback: the type used when t's blocks do not
// divide the row. llama.cpp refuses the legacy types outright there; this
// package uses F16 for them, as it does when the fallback does not fit either.
func fallback(t gguf.GGMLType, cols uint64) (gguf.GGMLType, bool) {
	if cols%uint64(t.BlockSize()) == 0 {
		return t, false
	}
	switch t {
	case gguf.IQ4_XS:
		t = gguf.IQ4_NL
	case gguf.Q2_K, gguf.Q3_K:
		t = gguf.Q4_0
	case gguf.Q4_K:
		t = gguf.Q5_0
	case gguf.Q5_K:
		t = gguf.Q5_1
	case gguf.Q6_K:
		t = gguf.Q8_0
	default:
		t = gguf.F16
	}
	if cols%uint64(t.BlockSize()) != 0 {
		t = gguf.F16
	}
	return t, true
}

// Plan returns the tensors of g in the order Convert writes them (llama.cpp's)
// with the type each gets in file type ft.
func Plan(g *gguf.File, ft FileType) ([]TensorPlan, error) {
	return plan(readHparams(g), g.Tensors, ft)
}

func plan(h hparams, tensors []gguf.TensorInfo, ft FileType) ([]TensorPlan, error) {
	if !ft.Writable() {
		return nil, fmt.Errorf("quantize: cannot write %s", ft)
	}
	base := ft.BaseType()
	mixed := base.BlockSize() > 1 // F32, F16, BF16 targets have no mix
	if mixed && h.nLayer <= 0 {
		return nil, fmt.Errorf("quantize: the model's metadata has no %s.block_count, which the %s mix needs", h.arch, ft)
	}
	ordered := llamaOrder(tensors)
	p := &planner{h: h, ft: ft, tied: true, nFFNDown: h.nLayer, nFFNGate: h.nLayer, nFFNUp: h.nLayer}
	for _, t := range ordered {
		cat := categoryOf(t.Name)
		if cat.attnVLike() {
			p.nAttnV++
		}
		if cat == catOutput {
			p.tied = false
		}
	}
	plans := make([]TensorPlan, len(ordered))
	for i, t := range ordered {
		plans[i] = TensorPlan{Tensor: t, Type: t.Type}
		if !allowsQuantization(t) {
			continue
		}
		typ := base
		if mixed {
			var err error
			if typ, err = p.mixType(t, categoryOf(t.Name), typ); err != nil {
				return nil, fmt.Errorf("quantize: %w", err)
			}
			typ, plans[i].Fallback = fallback(typ, t.Dims[0])
		}
		plans[i].Type = typ
	}
	return plans, nil
}
