package gpu

import (
	"encoding/binary"
	"fmt"
)

// subgroupLayoutWG is the workgroup size the layout check runs at: the
// widest the kernels use with subgroups.
const subgroupLayoutWG = 256

// subgroupLayoutWGSL marks each invocation whose subgroup is the run of
// subgroup_size consecutive local_invocation_index values starting at a
// multiple of subgroup_size, with subgroup_invocation_id its place in it.
const subgroupLayoutWGSL = `enable subgroups;
struct Params { n: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> ok: array<u32>;
@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) li: u32, @builtin(subgroup_invocation_id) sid: u32,
        @builtin(subgroup_size) ss: u32) {
  let first = subgroupBroadcastFirst(li);
  let good = (256u % ss == 0u) && (li % ss == sid) && (first == li - sid);
  ok[li] = select(0u, 1u, good);
}
`

type subgroupLayoutKey struct{}

func (subgroupLayoutKey) String() string { return "subgroup_layout_check" }

// subgroupsContiguous checks on the device what kernels with subgroup
// reductions assume and WGSL does not promise: subgroups are aligned runs
// of consecutive invocations, so subgroup i of a workgroup is invocations
// i*size .. i*size+size-1 (true of every Vulkan driver seen, NVIDIA and
// lavapipe included).
func (c *Context) subgroupsContiguous() (bool, error) {
	pipe, err := c.Pipeline(subgroupLayoutKey{}, func() (PipelineSpec, error) {
		return PipelineSpec{Source: subgroupLayoutWGSL, Storage: []Access{ReadWrite}}, nil
	})
	if err != nil {
		return false, err
	}
	buf, err := c.NewBuffer("subgroup check", 4*subgroupLayoutWG)
	if err != nil {
		return false, err
	}
	defer buf.Destroy()
	enc, err := c.NewEncoder()
	if err != nil {
		return false, err
	}
	if err := enc.Dispatch(pipe, struct{ N uint32 }{subgroupLayoutWG}, []Arg{WholeBuffer(buf)}, 1, 1, 1); err != nil {
		enc.Release()
		return false, err
	}
	if err := enc.SubmitAndWait(); err != nil {
		return false, err
	}
	out, err := buf.Read(0, 4*subgroupLayoutWG)
	if err != nil {
		return false, err
	}
	for i := 0; i < subgroupLayoutWG; i++ {
		if binary.LittleEndian.Uint32(out[4*i:]) != 1 {
			return false, nil
		}
	}
	return true, nil
}

// confirmSubgroups turns Features.Subgroups off when the layout check
// fails, so no kernel relies on a layout the device does not have.
func (c *Context) confirmSubgroups() error {
	if !c.Features.Subgroups {
		return nil
	}
	ok, err := c.subgroupsContiguous()
	if err != nil {
		return fmt.Errorf("gpu: checking the subgroup layout: %w", err)
	}
	c.Features.Subgroups = ok
	return nil
}
