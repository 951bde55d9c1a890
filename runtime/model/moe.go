package model

import "github.com/wgllm/wgllm/ops"

// ExpertWeights are a layer's routed experts, as llama.cpp's build_moe_ffn
// takes them: the router ffn_gate_inp [experts, dim] (with an optional
// bias, gpt-oss) and the experts' gated FFNs stacked into 3-D tensors
// [experts, rows, cols], with optional per-expert biases (gpt-oss).
type ExpertWeights struct {
	Router  Weight `gguf:"ffn_gate_inp.weight" shape:"exp,dim"`
	RouterB Weight `gguf:"ffn_gate_inp.bias,opt" shape:"exp"`
	Gate    Weight `gguf:"ffn_gate_exps.weight" shape:"exp,ffexp,dim"`
	Up      Weight `gguf:"ffn_up_exps.weight" shape:"exp,ffexp,dim"`
	Down    Weight `gguf:"ffn_down_exps.weight" shape:"exp,dim,ffexp"`
	GateB   Weight `gguf:"ffn_gate_exps.bias,opt" shape:"exp,ffexp"`
	UpB     Weight `gguf:"ffn_up_exps.bias,opt" shape:"exp,ffexp"`
	DownB   Weight `gguf:"ffn_down_exps.bias,opt" shape:"exp,dim"`
}

// SharedExpert is an FFN every token takes beside its routed experts,
// scaled by sigmoid(h·GateInp) (qwen2moe).
type SharedExpert struct {
	GateInp Weight `gguf:"ffn_gate_inp_shexp.weight" shape:"dim"`
	Gate    Weight `gguf:"ffn_gate_shexp.weight" shape:"ffsh,dim"`
	Up      Weight `gguf:"ffn_up_shexp.weight" shape:"ffsh,dim"`
	Down    Weight `gguf:"ffn_down_shexp.weight" shape:"dim,ffsh"`
}

// Gating is how router logits become expert weights (ops.Gating).
type Gating = ops.Gating

const (
	GateSoftmax     = ops.GateSoftmax     // qwen2moe, qwen3moe, Mixtral
	GateSigmoid     = ops.GateSigmoid     // sigmoid per expert
	GateSoftmaxTopK = ops.GateSoftmaxTopK // gpt-oss: softmax over the chosen experts' logits
)

// MoEOpts are an MoE layer's routing and activation.
type MoEOpts struct {
	Gating Gating
	// Normalize divides the chosen experts' weights by their sum
	// (qwen3moe, Mixtral; not qwen2moe).
	Normalize bool
	// Scale multiplies the weights (expert_weights_scale); 0 means 1.
	Scale float32
	Act   Activation
	// Shared, when set, is added to the experts' sum (qwen2moe).
	Shared *SharedExpert
}
