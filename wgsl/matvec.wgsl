// MatVec (decode): d[m, n] = sum_k w[n, k] * x[m, k] for M = {{.M}} rows of x.
// Each workgroup owns R = {{.R}} weight rows; thread t reads chunks t, t+WG, ...
// of V = {{.V}} elements of every row ({{if .Vec}}one 16-byte load per row per
// chunk, coalesced across threads{{else}}scalar loads: K or an offset is not
// 16-byte aligned{{end}}), so each weight row is read once for all M rows of x.
// Per output: a fixed fma chain over the thread's chunks, then a fixed two-level
// sum over the threads in workgroup memory. Neither depends on M, R or the load
// path, so a row of x gets bit-identical results alone or in a batch.
//
// SG (where the device has subgroups): the first level of the sum is a
// subgroupAdd per subgroup instead of a pass through workgroup memory.
//
// Fusions (each a template switch, see ops.MatVecOpts):
//   Acc : d += result (a residual add after the projection);
//   Pair: the weight holds [gate; up] (pair_off rows apart): output n is
//         act(gate_n . x, up_n . x) (silu(g)*u by default), each dot summed as above;
//   Segs: output rows [0, seg1), [seg1, seg2), [seg2, n) go to three
//         destinations (q, k, v of one fused QKV weight);
//   Norm: x is RMS-normalised and scaled by g first; the dot runs on x * g
//         and the sum is scaled by 1 / rms(x) at the end;
//   Bias: bias[row] is added to each output (before Acc's add).
struct Params {
  n: u32,       // output rows in this dispatch (Pair: gate rows)
  k: u32,
  chunks: u32,  // ceil(k / V)
  x_off: u32, x_rs: u32,
  w_off: u32,
  d_off: u32, d_rs: u32,
  pair_off: u32,  // Pair: rows from gate row n to up row n
  seg1: u32, seg2: u32,
  d_off1: u32, d_rs1: u32, d_off2: u32, d_rs2: u32,
  g_off: u32,     // Norm: first element of g
  eps: f32,
  fb_off: u32,    // Bias: the bias of output row 0
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
{{- if .Norm}}
@group(0) @binding(4) var<storage, read> g: array<{{if .Vec}}vec4<f32>{{else}}f32{{end}}>;
{{- end}}
{{- if .Bias}}
@group(0) @binding({{if .Norm}}5{{else}}4{{end}}) var<storage, read> bias: array<f32>;
{{- end}}

const WG: u32 = {{.WG}}u;
const R: u32 = {{.R}}u;
const M: u32 = {{.M}}u;
const V: u32 = {{.V}}u;
const RM: u32 = R * M;
// Second-level partial sums per output (subgroups: room for WG / 4, the
// smallest subgroup WebGPU allows).
const FAN: u32 = {{if .SG}}32u{{else}}16u{{end}};

var<workgroup> red: array<f32, {{.RedSize}}>;
var<workgroup> red2: array<f32, {{.Red2Size}}>;
{{- if .Norm}}
var<private> nscale: array<f32, M>; // Norm: 1 / rms of each x row
{{- end}}

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
{{- if .Norm}}
fn gld(i: u32, end: u32) -> f32 {
  if (i >= end) { return 0.0; }
  return g[i];
}
fn ldg4(i: u32, end: u32) -> vec4<f32> {
  return vec4<f32>(gld(i, end), gld(i + 1u, end), gld(i + 2u, end), gld(i + 3u, end));
}
{{- end}}
{{- end}}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>{{if .SG}},
        @builtin(subgroup_size) sg_size: u32, @builtin(subgroup_invocation_id) sg_id: u32{{end}}) {
{{- if .Pair}}
  // Rows 0..R/2-1 are gate rows, R/2..R-1 the matching up rows.
  let row0 = (wid.y * nwg.x + wid.x) * (R / 2u);
  if (row0 >= p.n) { return; }  // uniform per workgroup: barriers stay valid
{{- range $r := .Rs}}
  let wo{{$r}} = p.w_off + (min(row0 + {{$r}}u % (R / 2u), p.n - 1u) + ({{$r}}u / (R / 2u)) * p.pair_off) * p.k;
{{- end}}
{{- else}}
  let row0 = (wid.y * nwg.x + wid.x) * R;
  if (row0 >= p.n) { return; }  // uniform per workgroup: barriers stay valid
  // Rows past the end re-read the last row; their sums are not stored.
{{- range $r := .Rs}}
  let wo{{$r}} = p.w_off + min(row0 + {{$r}}u, p.n - 1u) * p.k;
{{- end}}
{{- end}}
{{- range $m := .Ms}}
  let xo{{$m}} = p.x_off + {{$m}}u * p.x_rs;
{{- end}}
{{- if .Norm}}
  // Sum of squares of each x row: thread partials in a fixed order, then
  // a fixed tree, so every workgroup (and every M) gets the same scale.
{{- range $m := .Ms}}
  {
    var ss = 0.0;
{{- if $.Vec}}
    for (var c = lid.x; c < p.k / 4u; c += WG) {
      let v = x[(xo{{$m}} >> 2u) + c];
      ss = dot4(ss, v, v);
    }
{{- else}}
    for (var c = lid.x; c < p.k; c += WG) {
      let v = x[xo{{$m}} + c];
      ss = fma(v, v, ss);
    }
{{- end}}
    red[{{$m}}u * WG + lid.x] = ss;
  }
{{- end}}
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid.x < s) {
      for (var m = 0u; m < M; m++) { red[m * WG + lid.x] += red[m * WG + lid.x + s]; }
    }
    workgroupBarrier();
  }
{{- range $m := .Ms}}
  nscale[{{$m}}u] = inverseSqrt(red[{{$m}}u * WG] / f32(p.k) + p.eps);
{{- end}}
  workgroupBarrier();
{{- end}}
{{- range $r := .Rs}}{{range $m := $.Ms}}
  var acc{{$r}}_{{$m}} = 0.0;
{{- end}}{{end}}

  for (var c = lid.x; c < p.chunks; c += WG) {
    let kb = c * V;
{{- if .Norm}}
{{- if .Vec}}
    let ga = g[(p.g_off + kb) >> 2u];
{{- if eq .W "f16"}}
    let gb = g[((p.g_off + kb) >> 2u) + 1u];
{{- end}}
{{- else}}
    let ga = ldg4(p.g_off + kb, p.g_off + p.k);
{{- if eq .W "f16"}}
    let gb = ldg4(p.g_off + kb + 4u, p.g_off + p.k);
{{- end}}
{{- end}}
{{- end}}
{{- range $m := .Ms}}
{{- if $.Vec}}
    let xa{{$m}} = x[(xo{{$m}} + kb) >> 2u]{{if $.Norm}} * ga{{end}};
{{- if eq $.W "f16"}}
    let xb{{$m}} = x[((xo{{$m}} + kb) >> 2u) + 1u]{{if $.Norm}} * gb{{end}};
{{- end}}
{{- else}}
    let xa{{$m}} = ldx4(xo{{$m}} + kb, xo{{$m}} + p.k){{if $.Norm}} * ga{{end}};
{{- if eq $.W "f16"}}
    let xb{{$m}} = ldx4(xo{{$m}} + kb + 4u, xo{{$m}} + p.k){{if $.Norm}} * gb{{end}};
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

{{- if .SG}}
  // Output o = r*M + m. Level 1 in subgroups: subgroup j (invocations
  // j*S .. j*S+S-1, the layout gpu checks when it opens the device) adds its
  // lanes and its first lane keeps partial j; level 2 sums the WG/S
  // partials in order.
  let nparts = WG / sg_size;
  let part = lid.x / sg_size;
{{- range $r := .Rs}}{{range $m := $.Ms}}
  {
    let s = subgroupAdd(acc{{$r}}_{{$m}});
    if (sg_id == 0u) { red2[({{$r}}u * M + {{$m}}u) * FAN + part] = s; }
  }
{{- end}}{{end}}
  workgroupBarrier();
{{- else}}
  // Output o = r*M + m. Level 1: partial j of o sums threads j, j+FAN, ...
  // in order; level 2 sums the FAN partials in order.
  let nparts = FAN;
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
{{- end}}
{{- if .Pair}}
  if (lid.x < RM / 2u) {
    let row = row0 + lid.x / M;
    if (row < p.n) {
      var gs = 0.0;
      var us = 0.0;
      for (var j = 0u; j < nparts; j++) {
        gs += red2[lid.x * FAN + j];
        us += red2[(lid.x + RM / 2u) * FAN + j];
      }
      let m = lid.x % M;
{{- if .Norm}}
      gs *= nscale[m];
      us *= nscale[m];
{{- end}}
      let i = p.d_off + m * p.d_rs + row;
      d[i] = {{if .Acc}}d[i] + {{end}}act_{{.Act}}(gs, us);
    }
  }
{{- else}}
  if (lid.x < RM) {
    let row = row0 + lid.x / M;
    if (row < p.n) {
      var s = 0.0;
      for (var j = 0u; j < nparts; j++) {
        s += red2[lid.x * FAN + j];
      }
      let m = lid.x % M;
{{- if .Norm}}
      s *= nscale[m];
{{- end}}
{{- if .Segs}}
      var i = p.d_off + m * p.d_rs + row;
      if (row >= p.seg2) {
        i = p.d_off2 + m * p.d_rs2 + (row - p.seg2);
      } else if (row >= p.seg1) {
        i = p.d_off1 + m * p.d_rs1 + (row - p.seg1);
      }
{{- else}}
      let i = p.d_off + m * p.d_rs + row;
{{- end}}
      d[i] = {{if .Acc}}d[i] + {{end}}s{{if .Bias}} + bias[p.fb_off + row]{{end}};
    }
  }
{{- end}}
}
