// Weighted sum of value rows by attention probabilities (the unfused
// P·V step): out[i, h, :] = Σ_j probs(h, i, j) · v[j, h / group, :].
// One workgroup per (query, head); threads stride over the head dim and
// walk the keys in order, so every output has a fixed summation order.
struct Params {
  heads: u32, queries: u32, keys: u32, head_dim: u32, group: u32,
  p_off: u32, p_row_stride: u32, p_head_stride: u32,
  v_off: u32, v_token_stride: u32,
  o_off: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> probs: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<{{if eq .V "f16"}}u32{{else}}f32{{end}}>;
@group(0) @binding(3) var<storage, read_write> o: array<f32>;

const WG: u32 = {{.WG}}u;

fn ld_v(i: u32) -> f32 {
{{- if eq .V "f16"}}
  return ld_f16(v[i >> 1u], i);
{{- else}}
  return v[i];
{{- end}}
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
  let id = wid.y * nwg.x + wid.x;
  if (id >= p.queries * p.heads) { return; }
  let i = id / p.heads;
  let h = id % p.heads;
  let pb = p.p_off + h * p.p_head_stride + i * p.p_row_stride;
  let vb = p.v_off + (h / p.group) * p.head_dim;
  let ob = p.o_off + id * p.head_dim;
  for (var d = lid.x; d < p.head_dim; d += WG) {
    var acc = 0.0;
    for (var j = 0u; j < p.keys; j++) {
      acc += probs[pb + j] * ld_v(vb + j * p.v_token_stride + d);
    }
    o[ob + d] = acc;
  }
}
