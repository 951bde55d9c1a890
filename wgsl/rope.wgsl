// Rotary position embedding ({{.Mode}} layout) on x [tokens, heads, head_dim].
// One thread per rotated pair, plus one per dim past n_rot (copied), so a
// token's result does not depend on the rest of the batch.
struct Params {
  rows: u32, n_heads: u32, head_dim: u32, n_rot: u32,
  half_rot: u32, per_row: u32, total: u32, x_off: u32,
  d_off: u32, pos_off: u32, pos_base: u32,
  inv_2pi: f32,
  two_pi: vec4<f32>,            // 2π in parts: k*part exact for k < 2^16
  lo: array<vec4<f32>, 4>,      // base^(-2j/n_rot), j = 0..15
  hi: array<vec4<f32>, 4>,      // freq_scale * base^(-32j/n_rot), j = 0..15
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, {{if .AliasX}}read_write{{else}}read{{end}}> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> d: array<f32>;
{{- if .Positions}}
@group(0) @binding(3) var<storage, {{if .AliasPos}}read_write{{else}}read{{end}}> positions: array<u32>;
{{- end}}

const WG: u32 = {{.WG}}u;

// Must match RoPEOpts.Angle on the host exactly: the same two products.
fn angle(pos: u32, pair: u32) -> f32 {
  let lo = pair & 15u;
  let hi = pair >> 4u;
  let inv_freq = p.lo[lo >> 2u][lo & 3u] * p.hi[hi >> 2u][hi & 3u];
  return f32(pos) * inv_freq;
}

// Cody-Waite reduction to [-π, π], where sin and cos are specified (without
// it, an H100's results missed the f32 tolerance at angles of 100 rad).
// For k < 2^16 the products k*part are exact and so is the first
// subtraction (Sterbenz), so the result is within a few ulp of π of
// theta - 2πk whatever theta's size.
fn reduce_angle(theta: f32) -> f32 {
  let k = round(theta * p.inv_2pi);
  return (((theta - k * p.two_pi.x) - k * p.two_pi.y) - k * p.two_pi.z) - k * p.two_pi.w;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let t = (wid.y * nwg.x + wid.x) * WG + lid;
  if (t >= p.total) { return; }
  let row = t / p.per_row;            // token * n_heads + head
  let j = t - row * p.per_row;
  let xb = p.x_off + row * p.head_dim;
  let db = p.d_off + row * p.head_dim;
  if (j >= p.half_rot) {              // dims past n_rot pass through
    let e = p.n_rot + (j - p.half_rot);
    d[db + e] = x[xb + e];
    return;
  }
  let token = row / p.n_heads;
{{- if .Positions}}
  let pos = positions[p.pos_off + token];
{{- else}}
  let pos = p.pos_base + token;
{{- end}}
{{- if eq .Mode "neox"}}
  let i0 = j;
  let i1 = j + p.half_rot;
{{- else}}
  let i0 = 2u * j;
  let i1 = i0 + 1u;
{{- end}}
  let x0 = x[xb + i0];
  let x1 = x[xb + i1];
  let theta = angle(pos, j);
  let r = reduce_angle(theta);
  let c = cos(r);
  let s = sin(r);
  // Angle 0 (position 0) is exactly the identity, whatever cos and sin give.
  let id = theta == 0.0;
  d[db + i0] = select(x0 * c - x1 * s, x0, id);
  d[db + i1] = select(x0 * s + x1 * c, x1, id);
}
