package model

import (
	"fmt"

	"github.com/wgllm/wgllm/ops"
)

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
	// On the GPU, gate and up joined per expert ([experts, 2·ffexp, dim],
	// and their biases [experts, 2·ffexp]) for the gated experts matvec,
	// when they share a type; Gate and Up are then unbound tensors.
	gateUp, gateUpB ops.Tensor
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

// prepare joins each expert's gate and up matrices (and biases) into one
// stack, so decode and prefill compute act(gate, up) in one dispatch that
// reads x once. Memory does not grow: the parts are freed once copied.
func (e *ExpertWeights) prepare(m *Model, layer string) error {
	if !joinableExperts(e.Gate.Tensor, e.Up.Tensor) || 2*e.Gate.Bytes() > m.ctx.MaxBinding() || e.GateB.Has() != e.UpB.Has() ||
		(e.GateB.Has() && !joinableExperts(e.GateB.Tensor, e.UpB.Tensor)) {
		return nil // mixed types or layouts, or too big for one binding together: the separate matvecs
	}
	var err error
	if e.gateUp, err = m.joinExperts(layer+".ffn_gate_up_exps.weight", &e.Gate.Tensor, &e.Up.Tensor); err != nil {
		return err
	}
	if e.GateB.Has() {
		e.gateUpB, err = m.joinExperts(layer+".ffn_gate_up_exps.bias", &e.GateB.Tensor, &e.UpB.Tensor)
	}
	return err
}

// joinableExperts: two stacks of one type and shape, each a whole buffer,
// whose per-expert parts are whole words (the copies' alignment).
func joinableExperts(a, b ops.Tensor) bool {
	return a.Buf != nil && b.Buf != nil && a.DType == b.DType && len(a.Shape) >= 2 && fmt.Sprint(a.Shape) == fmt.Sprint(b.Shape) &&
		a.Off == 0 && b.Off == 0 && a.Bytes() == a.Buf.Size() && b.Bytes() == b.Buf.Size() &&
		(a.Bytes()/uint64(a.Shape[0]))%4 == 0
}

// joinExperts interleaves the stacks a and b [E, N, ...] into [E, 2N, ...]
// (expert e's part of a, then its part of b), frees them and leaves them
// unbound.
func (m *Model) joinExperts(name string, a, b *ops.Tensor) (ops.Tensor, error) {
	shape := append([]int{}, a.Shape...)
	shape[1] *= 2
	joined, err := ops.New(m.ctx, name, a.DType, shape...)
	if err != nil {
		return ops.Tensor{}, fmt.Errorf("model: joining %s: %w", name, err)
	}
	enc, err := m.ctx.NewEncoder()
	if err != nil {
		joined.Buf.Destroy()
		return ops.Tensor{}, err
	}
	per := a.Bytes() / uint64(a.Shape[0])
	for ex := 0; ex < a.Shape[0]; ex++ {
		at := uint64(ex) * 2 * per
		if err = enc.Copy(joined.Buf, at, a.Buf, uint64(ex)*per, per); err == nil {
			err = enc.Copy(joined.Buf, at+per, b.Buf, uint64(ex)*per, per)
		}
		if err != nil {
			enc.Release()
			joined.Buf.Destroy()
			return ops.Tensor{}, fmt.Errorf("model: joining %s: %w", name, err)
		}
	}
	if err := enc.SubmitAndWait(); err != nil {
		joined.Buf.Destroy()
		return ops.Tensor{}, fmt.Errorf("model: joining %s: %w", name, err)
	}
	m.buffers = append(m.buffers, joined)
	m.replaceBuffer(a.Buf, joined)
	m.replaceBuffer(b.Buf, ops.Tensor{})
	*a, *b = ops.Tensor{}, ops.Tensor{}
	return joined, nil
}
