// RMSNorm over rows: dst[r, c] = x[r, c] / sqrt(mean_c(x[r, c]^2) + eps) * w[c]
// (with Add: dst[r, c] += the same).
// One workgroup per row; each thread strides over columns and the partial
// sums are reduced in workgroup memory by a fixed tree (batch invariant).
// Two (in place): rows [split, rows) are a second row set at x_off2 of the
// same buffer, scaled by the second weight w2 (a layer's q and k heads,
// normalised in one dispatch).
struct Params {
  rows: u32, cols: u32,
  x_off: u32, x_stride: u32,
  w_off: u32,
  d_off: u32, d_stride: u32,
  eps: f32,
  split: u32, x_off2: u32, w2_off: u32,
}
// In place (SameX), x is not bound: it is read through d's binding.
@group(0) @binding(0) var<uniform> p: Params;
{{- if .SameX}}
@group(0) @binding(1) var<storage, read> w: array<{{if eq .W "f16"}}u32{{else}}f32{{end}}>;
@group(0) @binding(2) var<storage, read_write> d: array<f32>;
{{- if .Two}}
@group(0) @binding(3) var<storage, read> w2: array<{{if eq .W "f16"}}u32{{else}}f32{{end}}>;
{{- end}}
{{- else}}
@group(0) @binding(1) var<storage, {{if .AliasX}}read_write{{else}}read{{end}}> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<{{if eq .W "f16"}}u32{{else}}f32{{end}}>;
@group(0) @binding(3) var<storage, read_write> d: array<f32>;
{{- end}}

const WG: u32 = {{.WG}}u;
var<workgroup> part: array<f32, WG>;

fn weight(second: bool, c: u32) -> f32 {
{{- if .Two}}
  if (second) {
{{- if eq .W "f16"}}
    let i2 = p.w2_off + c;
    return ld_f16(w2[i2 >> 1u], i2);
{{- else}}
    return w2[p.w2_off + c];
{{- end}}
  }
{{- end}}
{{- if eq .W "f16"}}
  let i = p.w_off + c;
  return ld_f16(w[i >> 1u], i);
{{- else}}
  return w[p.w_off + c];
{{- end}}
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
  let row = wid.y * nwg.x + wid.x;
  if (row >= p.rows) { return; }  // uniform per workgroup: barriers stay valid
{{- if .Two}}
  let second = row >= p.split;
  let xb = select(p.x_off + row * p.x_stride, p.x_off2 + (row - p.split) * p.x_stride, second);
{{- else}}
  let second = false;
  let xb = p.x_off + row * p.x_stride;
{{- end}}
  var s = 0.0;
  for (var c = lid.x; c < p.cols; c += WG) {
    let v = {{if .SameX}}d{{else}}x{{end}}[xb + c];
    s += v * v;
  }
  part[lid.x] = s;
  workgroupBarrier();
  for (var k = WG / 2u; k > 0u; k >>= 1u) {
    if (lid.x < k) { part[lid.x] += part[lid.x + k]; }
    workgroupBarrier();
  }
  let scale = inverseSqrt(part[0] / f32(p.cols) + p.eps);
{{- if .Two}}
  let db = xb;  // in place
{{- else}}
  let db = p.d_off + row * p.d_stride;
{{- end}}
  for (var c = lid.x; c < p.cols; c += WG) {
    d[db + c] {{if .Add}}+{{end}}= {{if .SameX}}d{{else}}x{{end}}[xb + c] * scale * weight(second, c);
  }
}
