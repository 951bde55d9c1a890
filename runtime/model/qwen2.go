package model

// qwen2: Qwen1.5, Qwen2, Qwen2.5 (llama.cpp src/models/qwen2.cpp): llama's
// block with NEOX RoPE; its q/k/v biases are AttnWeights' optional ones.
func init() { register("qwen2", func() Arch { return &llama{ropeMode: RopeNeox} }) }
