// Rotary position embedding ({{.Mode}} layout) on x [tokens, heads, head_dim].
// One thread per rotated pair, plus one per dim past n_rot (copied), so a
// token's result does not depend on the rest of the batch.
struct Params {
  rows: u32, n_heads: u32, head_dim: u32, n_rot: u32,
  half_rot: u32, per_row: u32, total: u32, x_off: u32,
  d_off: u32, pos_off: u32, pos_base: u32,
  inv_2pi: f32,
  mscale: f32, ff_off: u32, ext_factor: f32, freq_scale: f32,  // see ops.ropeScaleParams
  corr_lo: f32, inv_span: f32, pad_s0: u32, pad_s1: u32,
  two_pi: vec4<f32>,            // 2π in parts: k*part exact for k < 2^16
  lo: array<vec4<f32>, 4>,      // base^(-2j/n_rot), j = 0..15
  hi: array<vec4<f32>, 4>,      // freq_scale * base^(-32j/n_rot), j = 0..15
}
@group(0) @binding(0) var<uniform> p: Params;
// x or positions in d's binding window (InDX, InDPos: in place, or views of
// one buffer) are not bound: they are read through d, as Dawn rejects
// overlapping writable bindings.
{{- if not .InDX}}
@group(0) @binding(1) var<storage, {{if .AliasX}}read_write{{else}}read{{end}}> x: array<f32>;
{{- end}}
@group(0) @binding({{.BindD}}) var<storage, read_write> d: array<f32>;
{{- if and .Positions (not .InDPos)}}
@group(0) @binding({{.BindPos}}) var<storage, {{if .AliasPos}}read_write{{else}}read{{end}}> positions: array<u32>;
{{- end}}
{{- if .Factors}}
@group(0) @binding({{.BindFF}}) var<storage, read> freq_factors: array<f32>;
{{- end}}

const WG: u32 = {{.WG}}u;

{{template "rope_angle" .}}
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
    d[db + e] = {{if .InDX}}d{{else}}x{{end}}[xb + e];
    return;
  }
  let token = row / p.n_heads;
{{- if .Positions}}
  let pos = {{if .InDPos}}bitcast<u32>(d[p.pos_off + token]){{else}}positions[p.pos_off + token]{{end}};
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
  let r = rotate_pair({{if .InDX}}d{{else}}x{{end}}[xb + i0], {{if .InDX}}d{{else}}x{{end}}[xb + i1], pos, j);
  d[db + i0] = r.x;
  d[db + i1] = r.y;
}
