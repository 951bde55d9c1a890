// MatVec (decode): d[m, n] = sum_k w[n, k] * x[m, k] for M = {{.M}} rows of x.
// Each workgroup owns R = {{.R}} weight rows; thread t reads chunks t, t+WG, ...
// of V = {{.V}} elements of every row ({{if .Vec}}one 16-byte load per row per
// chunk, coalesced across threads{{else}}scalar loads: K or an offset is not
// 16-byte aligned{{end}}), so each weight row is read once for all M rows of x.
// Per output: a fixed fma chain over the thread's chunks, then a fixed two-level
// sum over the threads in workgroup memory. Neither depends on M, R or the load
// path, so a row of x gets bit-identical results alone or in a batch.
struct Params {
  n: u32,       // weight rows in this dispatch
  k: u32,
  chunks: u32,  // ceil(k / V)
  x_off: u32, x_rs: u32,
  w_off: u32,
  d_off: u32, d_rs: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
{{- if .Vec}}
@group(0) @binding(1) var<storage, read> w: array<{{if eq .W "f16"}}vec4<u32>{{else}}vec4<f32>{{end}}>;
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
{{- else}}
@group(0) @binding(1) var<storage, read> w: array<{{if eq .W "f16"}}u32{{else}}f32{{end}}>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
{{- end}}
@group(0) @binding(3) var<storage, read_write> d: array<f32>;

const WG: u32 = {{.WG}}u;
const R: u32 = {{.R}}u;
const M: u32 = {{.M}}u;
const V: u32 = {{.V}}u;
const RM: u32 = R * M;
const FAN: u32 = 16u; // second-level partial sums per output

var<workgroup> red: array<f32, {{.RedSize}}>;
var<workgroup> red2: array<f32, {{.Red2Size}}>;

// acc + a.x*b.x + a.y*b.y + ... as one fixed chain of fused multiply-adds.
fn dot4(acc: f32, a: vec4<f32>, b: vec4<f32>) -> f32 {
  var s = fma(a.x, b.x, acc);
  s = fma(a.y, b.y, s);
  s = fma(a.z, b.z, s);
  return fma(a.w, b.w, s);
}
{{- if not .Vec}}

// Four consecutive elements from i (of a row ending at end), zero past the end.
fn wld(i: u32, end: u32) -> f32 {
  if (i >= end) { return 0.0; }
{{- if eq .W "f16"}}
  return ld_f16(w[i >> 1u], i);
{{- else}}
  return w[i];
{{- end}}
}
fn ldw4(i: u32, end: u32) -> vec4<f32> {
  return vec4<f32>(wld(i, end), wld(i + 1u, end), wld(i + 2u, end), wld(i + 3u, end));
}
fn xld(i: u32, end: u32) -> f32 {
  if (i >= end) { return 0.0; }
  return x[i];
}
fn ldx4(i: u32, end: u32) -> vec4<f32> {
  return vec4<f32>(xld(i, end), xld(i + 1u, end), xld(i + 2u, end), xld(i + 3u, end));
}
{{- end}}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
  let row0 = (wid.y * nwg.x + wid.x) * R;
  if (row0 >= p.n) { return; }  // uniform per workgroup: barriers stay valid
  // Rows past the end re-read the last row; their sums are not stored.
{{- range $r := .Rs}}
  let wo{{$r}} = p.w_off + min(row0 + {{$r}}u, p.n - 1u) * p.k;
{{- end}}
{{- range $m := .Ms}}
  let xo{{$m}} = p.x_off + {{$m}}u * p.x_rs;
{{- end}}
{{- range $r := .Rs}}{{range $m := $.Ms}}
  var acc{{$r}}_{{$m}} = 0.0;
{{- end}}{{end}}

  for (var c = lid.x; c < p.chunks; c += WG) {
    let kb = c * V;
{{- range $m := .Ms}}
{{- if $.Vec}}
    let xa{{$m}} = x[(xo{{$m}} + kb) >> 2u];
{{- if eq $.W "f16"}}
    let xb{{$m}} = x[((xo{{$m}} + kb) >> 2u) + 1u];
{{- end}}
{{- else}}
    let xa{{$m}} = ldx4(xo{{$m}} + kb, xo{{$m}} + p.k);
{{- if eq $.W "f16"}}
    let xb{{$m}} = ldx4(xo{{$m}} + kb + 4u, xo{{$m}} + p.k);
{{- end}}
{{- end}}
{{- end}}
{{- range $r := .Rs}}
    {
{{- if $.Vec}}
{{- if eq $.W "f16"}}
      let q = w[(wo{{$r}} + kb) >> 3u];
      let wa = vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y));
      let wb = vec4<f32>(unpack2x16float(q.z), unpack2x16float(q.w));
{{- else}}
      let wa = w[(wo{{$r}} + kb) >> 2u];
{{- end}}
{{- else}}
      let wa = ldw4(wo{{$r}} + kb, wo{{$r}} + p.k);
{{- if eq $.W "f16"}}
      let wb = ldw4(wo{{$r}} + kb + 4u, wo{{$r}} + p.k);
{{- end}}
{{- end}}
{{- range $m := $.Ms}}
{{- if eq $.W "f16"}}
      acc{{$r}}_{{$m}} = dot4(dot4(acc{{$r}}_{{$m}}, wa, xa{{$m}}), wb, xb{{$m}});
{{- else}}
      acc{{$r}}_{{$m}} = dot4(acc{{$r}}_{{$m}}, wa, xa{{$m}});
{{- end}}
{{- end}}
    }
{{- end}}
  }

  // Output o = r*M + m. Level 1: partial j of o sums threads j, j+FAN, ...
  // in order; level 2 sums the FAN partials in order.
{{- range $r := .Rs}}{{range $m := $.Ms}}
  red[({{$r}}u * M + {{$m}}u) * WG + lid.x] = acc{{$r}}_{{$m}};
{{- end}}{{end}}
  workgroupBarrier();
  for (var t = lid.x; t < RM * FAN; t += WG) {
    let base = (t / FAN) * WG + t % FAN;
    var s = 0.0;
    for (var i = 0u; i < WG / FAN; i++) {
      s += red[base + i * FAN];
    }
    red2[t] = s;
  }
  workgroupBarrier();
  if (lid.x < RM) {
    let row = row0 + lid.x / M;
    if (row < p.n) {
      var s = 0.0;
      for (var j = 0u; j < FAN; j++) {
        s += red2[lid.x * FAN + j];
      }
      d[p.d_off + (lid.x % M) * p.d_rs + row] = s;
    }
  }
}
