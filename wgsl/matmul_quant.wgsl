// MatMulQuant (ops/matmul_quant.go): d[m, n] = sum_k x[m, k] W[n, k] for a
// weight W [N, K] stored as {{.T}} blocks, read in place: the tiled matmul of
// matmul.wgsl with its B slice filled by the block decoders of
// blocks.inc.wgsl instead of from a dequantised copy.
// A workgroup of {{.WG}} threads ({{.TY}} x {{.TX}}) computes a {{.BM}}x{{.BN}} tile of d,
// each thread {{.TM}}x{{.TN}} outputs held in registers. K is walked in slices of
// BK = {{.BK}} elements: the slice of x and the decoded slice of W are staged
// k-major in workgroup memory. A thread's share of W's slice is tasks of 16
// consecutive elements of one row (at16 names the piece holding them); the
// raw words of the next slice's tasks are loaded while this slice is
// computed, and decoded after the barrier.
// Every output is one fma chain over k = 0..K-1 in order starting from 0,
// whatever the tile or M: rows never depend on the batch, and the bits are
// those of Dequantize (to f32) followed by MatMul.
{{- if .Experts}}
// Experts (ops.MatMulExperts): W is [E, N, K]; workgroup (i, j, u) takes
// tile i of the slots that the routing table R (ops.MoERoute) gives the
// u-th used expert e, and tile j of N: its x rows are gathered (slot s
// reads x row s / x_per), its outputs go to d row s{{if .Bias}} plus bias[e, n]{{end}}.
{{- end}}
{{- if .Pair}}
// Pair: W's matrices are [2N, K], gate rows then up rows; a tile of BN
// covers BN/2 outputs, its first half gate rows and its second the matching
// up rows, so that a thread's column groups c = 0 and 1 are the gate and up
// of the same outputs: d = act_{{.Act}}(gate{{if .Bias}} + bias{{end}}, up{{if .Bias}} + bias{{end}}).
{{- end}}
struct Params {
  m: u32, n: u32, k: u32,
  x_off: u32, x_rs: u32,   // x: first element, elements between rows
  w_off: u32, w_row: u32,  // W: row 0 and the row stride, in bytes (bf16: halves)
  d_off: u32, d_rs: u32,   // d: first element, elements between rows
  e_stride: u32,           // experts: W units from one expert's matrix to the next
  x_per: u32,              // experts: slots per x row
  r_off: u32,              // experts: first element of R
  n_exp: u32,              // experts: E
  b_off: u32,              // experts: first bias element
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> W: array<u32>;
@group(0) @binding(2) var<storage, read> x: array<{{if .VA}}vec4<f32>{{else}}f32{{end}}>;
@group(0) @binding(3) var<storage, read_write> d: array<f32>;
{{- if .Experts}}
@group(0) @binding(4) var<storage, read> R: array<u32>;
{{- if .Bias}}
@group(0) @binding(5) var<storage, read> bias: array<f32>;
{{- end}}
var<workgroup> head: vec4<u32>;
{{- end}}
{{template "blocks" .}}

const WG: u32 = {{.WG}}u;
const TX: u32 = {{.TX}}u;
const TY: u32 = {{.TY}}u;
const BM: u32 = {{.BM}}u;
const BN: u32 = {{.BN}}u;
const BK: u32 = {{.BK}}u;
const NSA: u32 = BM * BK / 4u;  // vec4 slots of x per slice
const NSB: u32 = BN * BK / 16u; // 16-element W tasks per slice

// k-major slices: As[k * BM/4 + m/4][m % 4] holds x[m0 + m, k0 + k], and
// Bs[k * BN/4 + n/4][n % 4] holds W[n0 + n, k0 + k] decoded.
var<workgroup> As: array<vec4<f32>, {{.AsSize}}>;
var<workgroup> Bs: array<vec4<f32>, {{.BsSize}}>;

// Tile rows below {{.MEnd}} exist; the weight matrix starts at W unit
// {{.WBase}}; xrow(gm) is tile row gm's x row.
{{- if .Experts}}
var<private> mend: u32;
var<private> wbase: u32;
fn slot(gm: u32) -> u32 { return R[p.r_off + 2u + 2u * p.n_exp + gm]; }
fn xrow(gm: u32) -> u32 { return slot(gm) / p.x_per; }
{{- else}}
fn xrow(gm: u32) -> u32 { return gm; }
{{- end}}

// Slot e of x's slice: row m = e % BM, elements k = (e / BM) * 4 + 0..3.
fn load_a(m0: u32, k0: u32, e: u32) -> vec4<f32> {
  let gm = m0 + e % BM;
  let gk = k0 + (e / BM) * 4u;
  if (e >= NSA || gm >= {{.MEnd}} || gk >= p.k) { return vec4<f32>(0.0); }
  let i = p.x_off + xrow(gm) * p.x_rs + gk;
{{- if .VA}}
  return x[i >> 2u];
{{- else}}
  var v = vec4<f32>(0.0);
{{- range $j := .Comps}}
  if (gk + {{$j.J}}u < p.k) { v.{{$j.C}} = x[i + {{$j.J}}u]; }
{{- end}}
  return v;
{{- end}}
}

fn store_a(e: u32, v: vec4<f32>) {
  if (e >= NSA) { return; }
  let m = e % BM;
  let k = (e / BM) * 4u;
{{- range $j := .Comps}}
  As[(k + {{$j.J}}u) * (BM / 4u) + m / 4u][m & 3u] = v.{{$j.C}};
{{- end}}
}

// Task e of W's slice: tile row r = e % BN (rows past N re-read the last
// row, whose outputs are not written), elements k0 + 16 * (e / BN) .. + 15.
fn wrow(n0: u32, r: u32) -> u32 {
{{- if .Pair}}
  let g = min(n0 / 2u + r % (BN / 2u), p.n - 1u);
  return select(g, g + p.n, r >= BN / 2u);
{{- else}}
  return min(n0 + r, p.n - 1u);
{{- end}}
}
fn put_b(e: u32, kb: u32, i: u32, w: vec4<f32>) {
  let n = e % BN;
  let k = kb + 4u * i;
  Bs[k * (BN / 4u) + n / 4u][n & 3u] = w.x;
  Bs[(k + 1u) * (BN / 4u) + n / 4u][n & 3u] = w.y;
  Bs[(k + 2u) * (BN / 4u) + n / 4u][n & 3u] = w.z;
  Bs[(k + 3u) * (BN / 4u) + n / 4u][n & 3u] = w.w;
}
{{- if eq .T "bf16"}}
// bf16: a task is two 8-value pieces; o counts halves. Elements past K (the
// row's tail, or the next row's head) are stored as zero; a piece that
// starts past K loads from the row's last element instead, so that no read
// strays far past the weight's end.
struct Slot { s0: St, s1: St }
fn load_b(n0: u32, k0: u32, e: u32) -> Slot {
  let o = {{.WBase}} + wrow(n0, e % BN) * p.w_row;
  let k = k0 + 16u * (e / BN);
  return Slot(load(o + min(k, p.k - 1u), 0u), load(o + min(k + 8u, p.k - 1u), 0u));
}
fn store_b(k0: u32, e: u32, v: Slot) {
  if (e >= NSB) { return; }
  let kb = 16u * (e / BN);
  let gk = vec4<u32>(k0 + kb) + vec4<u32>(0u, 1u, 2u, 3u);
{{- range .Halves}}
  put_b(e, kb, {{.I}}u, select(vec4<f32>(0.0), grp(v.s{{.S}}, 0u, {{.J}}u), gk + vec4<u32>({{.K}}u) < vec4<u32>(p.k)));
{{- end}}
}
{{- else}}
// Block types: K is whole blocks of 32 or 256; past K (a last slice of a
// deeper BK) a task reads the row's last 16 elements and stores zeros.
struct Slot { s: St }
fn load_b(n0: u32, k0: u32, e: u32) -> Slot {
  let ek = min(k0 + 16u * (e / BN), p.k - 16u);
  let pj = at16(ek % BS);
  return Slot(load({{.WBase}} + wrow(n0, e % BN) * p.w_row + (ek / BS) * BB, pj.x));
}
fn store_b(k0: u32, e: u32, v: Slot) {
  if (e >= NSB) { return; }
  let kb = 16u * (e / BN);
  if (k0 + kb >= p.k) {
{{- range $i := .Seq4}}
    put_b(e, kb, {{$i}}u, vec4<f32>(0.0));
{{- end}}
    return;
  }
  let pj = at16((k0 + kb) % BS);
{{- range $i := .Seq4}}
  put_b(e, kb, {{$i}}u, grp(v.s, pj.x, pj.y + {{$i}}u));
{{- end}}
}
{{- end}}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let tid = lid.x;
  // TY x TX threads; a 32-thread warp spans 8 columns x 4 rows of threads,
  // so its reads of a slice touch few distinct addresses (broadcasts).
  let lane = tid & 31u;
  let wp = tid >> 5u;
  let tx = (lane & 7u) | ((wp % (TX / 8u)) << 3u);
  let ty = (lane >> 3u) | ((wp / (TX / 8u)) << 2u);
  let n0 = wid.y * BN;
{{- if .Experts}}
  if (tid == 0u) {
    let used = R[p.r_off];
    let uu = min(wid.z, max(used, 1u) - 1u);
    head = vec4<u32>(used, min(R[p.r_off + 1u + uu], p.n_exp - 1u),
                     R[p.r_off + 1u + p.n_exp + uu], R[p.r_off + 2u + p.n_exp + uu]);
  }
  let h = workgroupUniformLoad(&head);  // used experts, this one's id, its slots [h.z, h.w)
  let m0 = h.z + wid.x * BM;
  if (wid.z >= h.x || m0 >= h.w) { return; }
  mend = h.w;
  wbase = p.w_off + h.y * p.e_stride;
{{- else}}
  let m0 = wid.x * BM;
{{- end}}

  // Thread outputs: rows m0 + v*4TY + ty*4 + i, columns n0 + c*4TX + tx*4 + j.
{{- range $r := .Rows}}{{range $c := $.BV}}
  var acc{{$r.R}}_{{$c}} = vec4<f32>(0.0);
{{- end}}{{end}}

  let tiles = (p.k + BK - 1u) / BK;
{{- range $s := .SA}}
  var ra{{$s}} = load_a(m0, 0u, tid + {{$s}}u * WG);
{{- end}}
{{- range $s := .SB}}
  var rb{{$s}} = load_b(n0, 0u, tid + {{$s}}u * WG);
{{- end}}
  for (var t = 0u; t < tiles; t++) {
{{- range $s := .SA}}
    store_a(tid + {{$s}}u * WG, ra{{$s}});
{{- end}}
{{- range $s := .SB}}
    store_b(t * BK, tid + {{$s}}u * WG, rb{{$s}});
{{- end}}
    workgroupBarrier();
    if (t + 1u < tiles) {  // next slice's loads overlap this slice's math
      let k1 = (t + 1u) * BK;
{{- range $s := .SA}}
      ra{{$s}} = load_a(m0, k1, tid + {{$s}}u * WG);
{{- end}}
{{- range $s := .SB}}
      rb{{$s}} = load_b(n0, k1, tid + {{$s}}u * WG);
{{- end}}
    }
    for (var kk = 0u; kk < BK; kk++) {
{{- range $v := .AV}}
      let a{{$v}} = As[kk * (BM / 4u) + {{$v}}u * TY + ty];
{{- end}}
{{- range $c := .BV}}
      let b{{$c}} = Bs[kk * (BN / 4u) + {{$c}}u * TX + tx];
{{- end}}
{{- range $r := .Rows}}{{range $c := $.BV}}
      acc{{$r.R}}_{{$c}} = fma(vec4<f32>(a{{$r.V}}.{{$r.C}}), b{{$c}}, acc{{$r.R}}_{{$c}});
{{- end}}{{end}}
    }
    workgroupBarrier();
  }

{{- range $r := .Rows}}
  {
    let gm = m0 + {{$r.V}}u * 4u * TY + ty * 4u + {{$r.I}}u;
    if (gm < {{$.MEnd}}) {
{{- if $.Experts}}
      let drow = slot(gm);
{{- else}}
      let drow = gm;
{{- end}}
{{- if $.Pair}}
      let gn = n0 / 2u + tx * 4u;
{{- range $j := $.Comps}}
      if (gn + {{$j.J}}u < p.n) {
        var g = acc{{$r.R}}_0.{{$j.C}};
        var u = acc{{$r.R}}_1.{{$j.C}};
{{- if $.Bias}}
        g += bias[p.b_off + h.y * 2u * p.n + gn + {{$j.J}}u];
        u += bias[p.b_off + h.y * 2u * p.n + p.n + gn + {{$j.J}}u];
{{- end}}
        d[p.d_off + drow * p.d_rs + gn + {{$j.J}}u] = act_{{$.Act}}(g, u);
      }
{{- end}}
{{- else}}
{{- range $c := $.BV}}
      let gn{{$c}} = n0 + {{$c}}u * 4u * TX + tx * 4u;
{{- range $j := $.Comps}}
      if (gn{{$c}} + {{$j.J}}u < p.n) { d[p.d_off + drow * p.d_rs + gn{{$c}} + {{$j.J}}u] = acc{{$r.R}}_{{$c}}.{{$j.C}}{{if $.Bias}} + bias[p.b_off + h.y * p.n + gn{{$c}} + {{$j.J}}u]{{end}}; }
{{- end}}
{{- end}}
{{- end}}
    }
  }
{{- end}}
}
