// x[t, c] += sum_j w[t, j] y[t·K + j, c] (j in order) [+ gate(t) sh[t, c]]:
// the weighted sum of a token's expert outputs (ops/moe_combine.go), plus a
// shared expert's output, scaled by sigmoid of its gate logit when Gated.
struct Params {
  n: u32, cols: u32, k: u32,
  x_off: u32, y_off: u32, w_off: u32, s_off: u32, g_off: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<f32>;
{{- if .Shared}}
@group(0) @binding(4) var<storage, read> sh: array<f32>;
{{- if .Gated}}
@group(0) @binding(5) var<storage, read> g: array<f32>;
{{- end}}
{{- end}}

const WG: u32 = 256u;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * WG + lid;
  if (i >= p.n * p.cols) { return; }
  let t = i / p.cols;
  let c = i % p.cols;
  var acc = w[p.w_off + t * p.k] * y[p.y_off + t * p.k * p.cols + c];
  for (var j = 1u; j < p.k; j++) {
    acc += w[p.w_off + t * p.k + j] * y[p.y_off + (t * p.k + j) * p.cols + c];
  }
{{- if .Shared}}
  var s = sh[p.s_off + i];
{{- if .Gated}}
  let l = g[p.g_off + t];
  let e = exp(-abs(l));
  s *= select(e / (1.0 + e), 1.0 / (1.0 + e), l >= 0.0);
{{- end}}
  acc += s;
{{- end}}
  x[p.x_off + i] += acc;
}
