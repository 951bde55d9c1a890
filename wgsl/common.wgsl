// common.wgsl is prepended to every shader. Helpers here must be used or
// harmless when unused (WGSL allows unused functions).

// f16 values are stored two to a u32 (works without the shader-f16 feature).
// Element i of an f16 array stored as array<u32>.
fn ld_f16(v: u32, i: u32) -> f32 {
  let pair = unpack2x16float(v);
  return select(pair.x, pair.y, (i & 1u) == 1u);
}
