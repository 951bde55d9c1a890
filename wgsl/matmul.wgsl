// MatMul (prefill): d[z, m, n] = sum_k a[z, m, k] * B[z, k, n], B = b^T ({{if .TransB}}b is [N, K]{{else}}b is [K, N]{{end}}, {{.B}}).
// One workgroup of 256 threads computes a {{.BM}}x{{.BN}} tile of d, each thread
// {{.TM}}x{{.TN}} outputs held in registers. K is walked in slices of {{.BK}}: the
// slice of a and of B is staged k-major in workgroup memory (f16 widened to
// f32 on the way), while the next slice's global loads are already in flight.
// Loops over registers are unrolled in the text (constant component
// indices), so accumulators can never be demoted to local memory.
// Every output is one fma chain over k = 0..K-1 in order (starting from 0, or
// from d's value when p.acc = 1 so that a K split into ranges gives the same
// bits), whatever the tile, the load path or M: rows never depend on the batch.
struct Params {
  m: u32, n: u32, k: u32,
  acc: u32,
  a_off: u32, a_rs: u32, a_bs: u32,
  b_off: u32, b_rs: u32, b_bs: u32,
  d_off: u32, d_rs: u32, d_bs: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<{{if .VA}}vec4<f32>{{else}}f32{{end}}>;
@group(0) @binding(2) var<storage, read> b: array<{{if eq .B "f16"}}{{if .VB}}vec4<u32>{{else}}u32{{end}}{{else}}{{if .VB}}vec4<f32>{{else}}f32{{end}}{{end}}>;
@group(0) @binding(3) var<storage, read_write> d: array<f32>;

const WG: u32 = 256u;
const BM: u32 = {{.BM}}u;
const BN: u32 = {{.BN}}u;
const BK: u32 = {{.BK}}u;
const EB: u32 = {{.EB}}u;          // elements of b per load slot
const NSB: u32 = {{.NSB}}u;        // load slots of b per slice

// k-major slices: As[k * BM/4 + m/4][m % 4] holds a[m0 + m, k0 + k].
var<workgroup> As: array<vec4<f32>, {{.AsSize}}>;
var<workgroup> Bs: array<vec4<f32>, {{.BsSize}}>;

// Slot e of a's slice: row m = e % BM, elements k = (e / BM) * 4 + 0..3.
fn load_a(base: u32, m0: u32, k0: u32, e: u32) -> vec4<f32> {
  let gm = m0 + e % BM;
  let gk = k0 + (e / BM) * 4u;
  if (gm >= p.m || gk >= p.k) { return vec4<f32>(0.0); }
  let i = base + gm * p.a_rs + gk;
{{- if .VA}}
  return a[i >> 2u];
{{- else}}
  var v = vec4<f32>(0.0);
{{- range $j := .Comps}}
  if (gk + {{$j.J}}u < p.k) { v.{{$j.C}} = a[i + {{$j.J}}u]; }
{{- end}}
  return v;
{{- end}}
}

fn store_a(e: u32, v: vec4<f32>) {
  let m = e % BM;
  let k = (e / BM) * 4u;
{{- range $j := .Comps}}
  As[(k + {{$j.J}}u) * (BM / 4u) + m / 4u][m & 3u] = v.{{$j.C}};
{{- end}}
}

{{- if not .VB}}
// b element i as f32 (scalar path).
fn b_at(i: u32) -> f32 {
{{- if eq .B "f16"}}
  return ld_f16(b[i >> 1u], i);
{{- else}}
  return b[i];
{{- end}}
}
{{- end}}
{{if .TransB}}
// Slot e of B's slice from b [N, K]: row n = e % BN, elements k = (e / BN) * EB + j.
fn load_b(base: u32, n0: u32, k0: u32, e: u32) -> {{.BSlot}} {
  let gn = n0 + e % BN;
  let gk = k0 + (e / BN) * EB;
  var v = {{.BSlot}}();
  if (gn >= p.n || gk >= p.k) { return v; }
  let i = base + gn * p.b_rs + gk;
{{- if .VB}}
{{- if eq .B "f16"}}
  let q = b[i >> 3u];
  v[0] = vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y));
  v[1] = vec4<f32>(unpack2x16float(q.z), unpack2x16float(q.w));
{{- else}}
  v = b[i >> 2u];
{{- end}}
{{- else}}
{{- range $e := .BSlotElems}}
  if (gk + {{$e.J}}u < p.k) { v{{$e.Index}} = b_at(i + {{$e.J}}u); }
{{- end}}
{{- end}}
  return v;
}

fn store_b(e: u32, v: {{.BSlot}}) {
  let n = e % BN;
  let k = (e / BN) * EB;
{{- range $e := .BSlotElems}}
  Bs[(k + {{$e.J}}u) * (BN / 4u) + n / 4u][n & 3u] = v{{$e.Index}};
{{- end}}
}
{{else}}
// Slot e of B's slice from b [K, N]: row k = e / (BN / EB), elements n = (e % (BN / EB)) * EB + j.
fn load_b(base: u32, n0: u32, k0: u32, e: u32) -> {{.BSlot}} {
  let gk = k0 + e / (BN / EB);
  let gn = n0 + (e % (BN / EB)) * EB;
  var v = {{.BSlot}}();
  if (gn >= p.n || gk >= p.k) { return v; }
  let i = base + gk * p.b_rs + gn;
{{- if .VB}}
{{- if eq .B "f16"}}
  let q = b[i >> 3u];
  v[0] = vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y));
  v[1] = vec4<f32>(unpack2x16float(q.z), unpack2x16float(q.w));
{{- else}}
  v = b[i >> 2u];
{{- end}}
{{- else}}
{{- range $e := .BSlotElems}}
  if (gn + {{$e.J}}u < p.n) { v{{$e.Index}} = b_at(i + {{$e.J}}u); }
{{- end}}
{{- end}}
  return v;
}

fn store_b(e: u32, v: {{.BSlot}}) {
  let k = e / (BN / EB);
  let n4 = (e % (BN / EB)) * (EB / 4u);
{{- if eq .EB 8}}
  Bs[k * (BN / 4u) + n4] = v[0];
  Bs[k * (BN / 4u) + n4 + 1u] = v[1];
{{- else}}
  Bs[k * (BN / 4u) + n4] = v;
{{- end}}
}
{{end}}
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let tid = lid.x;
  // 16x16 threads; a 32-thread warp spans 8 columns x 4 rows of threads, so
  // its reads of a slice touch few distinct addresses (broadcasts).
  let lane = tid & 31u;
  let wp = tid >> 5u;
  let tx = (lane & 7u) | ((wp & 1u) << 3u);
  let ty = (lane >> 3u) | ((wp >> 1u) << 2u);
  let m0 = wid.x * BM;
  let n0 = wid.y * BN;
  let abase = p.a_off + wid.z * p.a_bs;
  let bbase = p.b_off + wid.z * p.b_bs;
  let dbase = p.d_off + wid.z * p.d_bs;

  // Thread outputs: rows m0 + v*64 + ty*4 + i, columns n0 + c*64 + tx*4 + j.
{{- range $r := .Rows}}{{range $c := $.BV}}
  var acc{{$r.R}}_{{$c}} = vec4<f32>(0.0);
{{- end}}{{end}}
  if (p.acc != 0u) {
{{- range $r := .Rows}}
    {
      let gm = m0 + {{$r.V}}u * 64u + ty * 4u + {{$r.I}}u;
      if (gm < p.m) {
{{- range $c := $.BV}}
        let gn{{$c}} = n0 + {{$c}}u * 64u + tx * 4u;
{{- range $j := $.Comps}}
        if (gn{{$c}} + {{$j.J}}u < p.n) { acc{{$r.R}}_{{$c}}.{{$j.C}} = d[dbase + gm * p.d_rs + gn{{$c}} + {{$j.J}}u]; }
{{- end}}
{{- end}}
      }
    }
{{- end}}
  }

  let tiles = (p.k + BK - 1u) / BK;
{{- range $s := .SA}}
  var ra{{$s}} = load_a(abase, m0, 0u, tid + {{$s}}u * WG);
{{- end}}
{{- range $s := .SB}}
  var rb{{$s}} = {{$.BSlot}}();
  if (tid + {{$s}}u * WG < NSB) { rb{{$s}} = load_b(bbase, n0, 0u, tid + {{$s}}u * WG); }
{{- end}}
  for (var t = 0u; t < tiles; t++) {
{{- range $s := .SA}}
    store_a(tid + {{$s}}u * WG, ra{{$s}});
{{- end}}
{{- range $s := .SB}}
    if (tid + {{$s}}u * WG < NSB) { store_b(tid + {{$s}}u * WG, rb{{$s}}); }
{{- end}}
    workgroupBarrier();
    if (t + 1u < tiles) {  // next slice's loads overlap this slice's math
      let k1 = (t + 1u) * BK;
{{- range $s := .SA}}
      ra{{$s}} = load_a(abase, m0, k1, tid + {{$s}}u * WG);
{{- end}}
{{- range $s := .SB}}
      if (tid + {{$s}}u * WG < NSB) { rb{{$s}} = load_b(bbase, n0, k1, tid + {{$s}}u * WG); }
{{- end}}
    }
    for (var kk = 0u; kk < BK; kk++) {
{{- range $v := .AV}}
      let a{{$v}} = As[kk * (BM / 4u) + {{$v}}u * 16u + ty];
{{- end}}
{{- range $c := .BV}}
      let b{{$c}} = Bs[kk * (BN / 4u) + {{$c}}u * 16u + tx];
{{- end}}
{{- range $r := .Rows}}{{range $c := $.BV}}
      acc{{$r.R}}_{{$c}} = fma(vec4<f32>(a{{$r.V}}.{{$r.C}}), b{{$c}}, acc{{$r.R}}_{{$c}});
{{- end}}{{end}}
    }
    workgroupBarrier();
  }

{{- range $r := .Rows}}
  {
    let gm = m0 + {{$r.V}}u * 64u + ty * 4u + {{$r.I}}u;
    if (gm < p.m) {
{{- range $c := $.BV}}
      let gn{{$c}} = n0 + {{$c}}u * 64u + tx * 4u;
{{- range $j := $.Comps}}
      if (gn{{$c}} + {{$j.J}}u < p.n) { d[dbase + gm * p.d_rs + gn{{$c}} + {{$j.J}}u] = acc{{$r.R}}_{{$c}}.{{$j.C}}; }
{{- end}}
{{- end}}
    }
  }
{{- end}}
}
