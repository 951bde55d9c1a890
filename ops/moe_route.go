package ops

import (
	"fmt"
	"strings"

	"github.com/wgllm/wgllm/runtime/gpu"
	"github.com/wgllm/wgllm/wgsl"
)

// Gating is how a router's logits become expert weights (llama.cpp's
// llama_expert_gating_func_type).
type Gating uint8

const (
	// GateSoftmax: softmax over all experts, the top K of it (qwen2moe,
	// qwen3moe, Mixtral).
	GateSoftmax Gating = iota
	// GateSigmoid: a sigmoid per expert, the top K of it.
	GateSigmoid
	// GateSoftmaxTopK: the top K logits, softmax over those K (gpt-oss,
	// LLAMA_EXPERT_GATING_FUNC_TYPE_SOFTMAX_WEIGHT).
	GateSoftmaxTopK
)

var gatingNames = [...]string{GateSoftmax: "softmax", GateSigmoid: "sigmoid", GateSoftmaxTopK: "softmax_topk"}

func (g Gating) String() string {
	if int(g) < len(gatingNames) {
		return gatingNames[g]
	}
	return fmt.Sprintf("gating(%d)", g)
}

// RouteOpts choose an MoE layer's expert weights.
type RouteOpts struct {
	K      int // experts per token
	Gating Gating
	// Normalize divides the K weights by their sum (clamped below at
	// 6.1e-5, as llama.cpp does): qwen3moe, Mixtral; not qwen2moe.
	Normalize bool
	// Scale multiplies the weights (expert_weights_scale); 0 means 1.
	Scale float32
}

// Router limits: the top-K kernel's lanes hold MaxExperts/64 experts each
// and its picks fit a bit mask.
const (
	MaxExperts     = 512
	MaxExpertsUsed = 32
)

// RouteLen is the length of the u32 routing table MoERoute writes for
// slots = rows·K slots over experts experts.
func RouteLen(experts, slots int) int { return 2 + 2*experts + slots }

type moeRouteKey struct {
	Kernel string
}

func (k moeRouteKey) String() string { return "moe_route_" + k.Kernel }

type moeRouteParams struct {
	Rows, Experts, K    uint32
	Gating, Normalize   uint32
	Scale               float32
	LOff, IOff, WOff, R uint32
}

// MoERoute routes each token row of logits [rows, E] (the router's output,
// f32) to its K experts, all on the GPU: ids [rows, K] u32 the experts by
// decreasing probability (ties: the lower id), weights [rows, K] f32 their
// weights, and route (u32, RouteLen(E, rows·K)) the slots r·K+j grouped by
// expert for MatVecExperts. A row's ids and weights depend on its logits
// only.
func MoERoute(enc *gpu.Encoder, ids, weights, route, logits Tensor, o RouteOpts) error {
	rows, experts, err := rowsCols("MoERoute", logits)
	if err != nil {
		return err
	}
	k := o.K
	switch {
	case logits.DType != F32:
		return fmt.Errorf("ops.MoERoute: logits %s must be f32", logits)
	case experts > MaxExperts:
		return fmt.Errorf("ops.MoERoute: %d experts; at most %d are supported", experts, MaxExperts)
	case k < 1 || k > experts || k > MaxExpertsUsed:
		return fmt.Errorf("ops.MoERoute: %d experts per token for %d experts (1 to min(%d, experts))", k, experts, MaxExpertsUsed)
	case int(o.Gating) >= len(gatingNames):
		return fmt.Errorf("ops.MoERoute: unknown gating %s", o.Gating)
	case ids.DType != U32 || ids.Len() != rows*k:
		return fmt.Errorf("ops.MoERoute: ids %s must be u32 [%d, %d]", ids, rows, k)
	case weights.DType != F32 || weights.Len() != rows*k:
		return fmt.Errorf("ops.MoERoute: weights %s must be f32 [%d, %d]", weights, rows, k)
	case route.DType != U32 || route.Len() != RouteLen(experts, rows*k):
		return fmt.Errorf("ops.MoERoute: route %s must be u32 of %d", route, RouteLen(experts, rows*k))
	}
	bufs := []*gpu.Buffer{logits.Buf, ids.Buf, weights.Buf, route.Buf}
	for i := range bufs {
		for j := i + 1; j < len(bufs); j++ {
			if bufs[i] == bufs[j] {
				return fmt.Errorf("ops.MoERoute: logits, ids, weights and route must be four buffers")
			}
		}
	}
	args, offs, err := binds("MoERoute", logits, ids, weights, route)
	if err != nil {
		return err
	}
	scale := o.Scale
	if scale == 0 {
		scale = 1
	}
	prm := moeRouteParams{Rows: uint32(rows), Experts: uint32(experts), K: uint32(k), Gating: uint32(o.Gating),
		Scale: scale, LOff: offs[0], IOff: offs[1], WOff: offs[2], R: offs[3]}
	if o.Normalize {
		prm.Normalize = 1
	}
	ctx := enc.Context()
	pipe := func(kernel string, storage ...gpu.Access) (*gpu.Pipeline, error) {
		key := moeRouteKey{Kernel: kernel}
		return ctx.Pipeline(key, func() (gpu.PipelineSpec, error) {
			src, err := wgsl.Render("moe_route.wgsl", map[string]any{"Kernel": strings.TrimSuffix(kernel, "_group"),
				"Group": strings.HasSuffix(kernel, "_group"), "MaxK": MaxExpertsUsed, "MaxE": MaxExperts})
			return gpu.PipelineSpec{Source: src, Storage: storage}, err
		})
	}
	if rows == 1 { // one token: its workgroup writes the route table too
		topk, err := pipe("topk_group", gpu.ReadOnly, gpu.ReadWrite, gpu.ReadWrite, gpu.ReadWrite)
		if err != nil {
			return err
		}
		return enc.Dispatch(topk, prm, args, 1, 1, 1)
	}
	topk, err := pipe("topk", gpu.ReadOnly, gpu.ReadWrite, gpu.ReadWrite)
	if err != nil {
		return err
	}
	gx, gy := ctx.Grid(uint32(rows))
	if err := enc.Dispatch(topk, prm, args[:3], gx, gy, 1); err != nil {
		return err
	}
	group, err := pipe("group", gpu.ReadOnly, gpu.ReadWrite)
	if err != nil {
		return err
	}
	return enc.Dispatch(group, prm, []gpu.Arg{args[1], args[3]}, 1, 1, 1)
}
