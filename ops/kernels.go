package ops

import (
	"fmt"
	"sync"

	"github.com/wgllm/wgllm/runtime/gpu"
)

// KernelOptions switch opt-in kernel variants on for one context (config
// kernels.*). A variant also needs the device feature it is built on.
type KernelOptions struct {
	// Int8Dot: quantised matvecs first quantise x to int8 blocks of 32
	// (QuantizeQ8) and sum quants with dot4I8Packed, as llama.cpp's MMVQ
	// does, where the device has dot4I8Packed and the weight type has an
	// int8 decoder. x is rounded to 8 bits, so results differ from the f32
	// path by that rounding.
	Int8Dot bool
}

var kernelOpts sync.Map // *gpu.Context -> KernelOptions

// SetKernelOptions sets ctx's kernel variants; the zero value (the
// default) uses none of them.
func SetKernelOptions(ctx *gpu.Context, o KernelOptions) { kernelOpts.Store(ctx, o) }

func kernelOptions(ctx *gpu.Context) KernelOptions {
	o, _ := kernelOpts.Load(ctx)
	ko, _ := o.(KernelOptions)
	return ko
}

// ParseInt8Dot reads config kernels.int8_dot: "off" (or empty) or "on".
func ParseInt8Dot(s string) (bool, error) {
	switch s {
	case "", "off", "false": // YAML may hand over off as a boolean
		return false, nil
	case "on", "true":
		return true, nil
	}
	return false, fmt.Errorf("kernels.int8_dot %q: want off or on", s)
}

// KernelVariants says which feature variants the matvec kernels use on
// ctx, for `wgllm devices`.
func KernelVariants(ctx *gpu.Context) []string {
	f := ctx.Features
	sg := "workgroup-memory reduction"
	if f.Subgroups {
		sg = fmt.Sprintf("subgroup reduction (subgroup size %s)", subgroupSizes(f))
	}
	int8 := "off (kernels.int8_dot: off)"
	switch {
	case kernelOptions(ctx).Int8Dot && f.DotI8Packed:
		int8 = "on: x quantised to q8, dot4I8Packed for " + fmt.Sprint(q8TypeNames())
	case kernelOptions(ctx).Int8Dot:
		int8 = "off: kernels.int8_dot is on but the device has no dot4I8Packed"
	}
	qsg := sg
	if f.Subgroups && f.SubgroupMinSize < matVecQuantTPR {
		qsg += fmt.Sprintf(", the upper levels of a row's %d lanes in workgroup memory", matVecQuantTPR)
	}
	// The experts kernel's rows have 8, 16 or 32 lanes (expertTPR, by K).
	esg := sg
	if f.Subgroups {
		var wide []int
		for _, tpr := range []int{8, 16, 32} {
			if f.SubgroupMinSize < uint32(tpr) {
				wide = append(wide, tpr)
			}
		}
		if len(wide) > 0 {
			esg += fmt.Sprintf(", the upper levels of rows of %v lanes (by K) in workgroup memory", wide)
		}
	}
	return []string{
		"matvec f32/f16: " + sg,
		"matvec quantised: " + qsg,
		"matvec experts (MoE): " + esg,
		"matvec quantised int8 dot: " + int8,
	}
}

func subgroupSizes(f gpu.Features) string {
	if f.SubgroupMinSize == f.SubgroupMaxSize {
		return fmt.Sprint(f.SubgroupMinSize)
	}
	return fmt.Sprintf("%d..%d", f.SubgroupMinSize, f.SubgroupMaxSize)
}
