// GGUF block-quantised weights read in place, and four kernels built on one
// set of block decoders (ops/matvec_quant.go, ops/matvec_experts.go,
// ops/dequant.go):
//   matvec : dst[m, n] = sum_k w[n, k] x[m, k] for x rows m < M (decode)
//   experts: the matvec of each routed slot by its expert's matrix (MoE)
//   dequant: dst[r, :] = decode(src[r, :])          (prefill weights)
//   embed  : dst[t, :] = decode(table[ids[t], :])   (token embeddings)
//
// The block decoders (load, grp, gel per type) are blocks.inc.wgsl's.
struct Params {
  rows: u32,        // output rows handled by this dispatch
  k: u32,           // elements per row
  np: u32,          // pieces per row
  w_off: u32,       // where row 0 starts in W: bytes (quantised) or halves (bf16)
  w_row: u32,       // row stride in W, same unit as w_off
  x_off: u32,       // matvec: first x element; embed: first id
  x_stride: u32,    // matvec: elements between x rows
  d_off: u32,       // first dst element
  d_stride: u32,    // matvec: elements between dst rows (N); dequant/embed: per output row
  id_lo: u32,       // embed: table rows [id_lo, id_hi) are in this dispatch's W window
  id_hi: u32,
  vocab: u32,       // embed: table rows; ids >= vocab give zero rows
  zero_oob: u32,    // embed: this dispatch writes the zero rows of out-of-range ids
  // matvec fusions (ops.MatVecOpts; the same as in matvec.wgsl):
  pair_off: u32,    // Pair: rows from gate row n to up row n
  seg1: u32, seg2: u32, d_off1: u32, d_rs1: u32, d_off2: u32, d_rs2: u32, // Segs
  g_off: u32,       // Norm: first element of g
  eps: f32,
  fb_off: u32,      // DBias (dense matvec): the bias of output row 0
  // experts (ops.MatVecExperts):
  e_stride: u32,    // W units from one expert's matrix to the next
  x_per: u32,       // slots per x row
  b_off: u32,       // first bias element
  r_off: u32,       // first element of the routing table R
  n_exp: u32,       // experts
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> W: array<u32>;
{{- if .Rowwise}}
{{- if .Q8}}
// Q8 (the matvec only): x is ops.QuantizeQ8's rows of x_stride words (x_off
// and x_stride multiples of 4): K/4 words of packed int8, K/32 scales (f32),
// K/16 sums of 16 quants (f32), 1 / rms(x).
@group(0) @binding(2) var<storage, read> x: array<vec4<u32>>;
{{- else}}
@group(0) @binding(2) var<storage, read> x: array<{{if .XVec}}vec4<f32>{{else}}f32{{end}}>;
{{- end}}
@group(0) @binding(3) var<storage, read_write> d: array<f32>;
{{- if and .Norm (not .Q8)}}
@group(0) @binding(4) var<storage, read> g: array<{{if .XVec}}vec4<f32>{{else}}f32{{end}}>;
{{- end}}
{{- if .DBias}}
@group(0) @binding({{if and .Norm (not .Q8)}}5{{else}}4{{end}}) var<storage, read> bias: array<f32>;
{{- end}}
{{- if .Experts}}
@group(0) @binding(4) var<storage, read> R: array<u32>;
{{- if .Bias}}
@group(0) @binding(5) var<storage, read> bias: array<f32>;
{{- end}}
{{- end}}
{{- else if eq .Kernel "embed"}}
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> d: array<{{if .DstF16}}u32{{else}}f32{{end}}>;
{{- else}}
@group(0) @binding(2) var<storage, read_write> d: array<{{if .DstF16}}u32{{else}}f32{{end}}>;
{{- end}}

{{template "blocks" .}}

{{- if and (eq .Kernel "matvec") .Q8}}

// --- int8 accessors (the Q8 matvec) -----------------------------------------
// grpq(st, sub, j): group j's four weight quants as packed int8 (without
// the type's offset); a piece's G groups form NSG scale groups of G / NSG
// consecutive groups (16 or 32 consecutive elements, inside one x block);
// qsc(st, sub, t) = (a, b) with weight = a * quant - b in scale group t, so
// the group adds dx * (a * sum(quant * xq) - b * sum(xq)).
{{- if or (eq .T "q4_0") (eq .T "q4_1")}}
const NSG: u32 = 1u;
fn grpq(s: St, sub: u32, j: u32) -> u32 { return (s.q[j & 3u] >> (4u * (j >> 2u))) & 0x0f0f0f0fu; }
{{- if eq .T "q4_0"}}
fn qsc(s: St, sub: u32, t: u32) -> vec2<f32> { return vec2<f32>(s.d, 8.0 * s.d); }
{{- else}}
fn qsc(s: St, sub: u32, t: u32) -> vec2<f32> { return vec2<f32>(s.d, -s.m); }
{{- end}}
{{- else if or (eq .T "q5_0") (eq .T "q5_1")}}
const NSG: u32 = 1u;
fn grpq(s: St, sub: u32, j: u32) -> u32 {
  return ((s.q[j & 3u] >> (4u * (j >> 2u))) & 0x0f0f0f0fu) | (bits4(s.qh >> (4u * j)) << 4u);
}
{{- if eq .T "q5_0"}}
fn qsc(s: St, sub: u32, t: u32) -> vec2<f32> { return vec2<f32>(s.d, 16.0 * s.d); }
{{- else}}
fn qsc(s: St, sub: u32, t: u32) -> vec2<f32> { return vec2<f32>(s.d, -s.m); }
{{- end}}
{{- else if eq .T "q8_0"}}
const NSG: u32 = 1u;
fn grpq(s: St, sub: u32, j: u32) -> u32 { return select(s.qa[j & 3u], s.qb[j & 3u], j >= 4u); }
fn qsc(s: St, sub: u32, t: u32) -> vec2<f32> { return vec2<f32>(s.d, 0.0); }
{{- else if or (eq .T "q4_k") (eq .T "q5_k")}}
const NSG: u32 = 2u;
fn grpq(s: St, sub: u32, j: u32) -> u32 {
  let hb = j >> 2u;
{{- if eq .T "q4_k"}}
  return (s.q[j & 3u] >> (4u * hb)) & 0x0f0f0f0fu;
{{- else}}
  return ((s.q[j & 3u] >> (4u * hb)) & 0x0f0f0f0fu) | (((s.qh[j & 3u] >> hb) & 0x01010101u) << 4u);
{{- end}}
}
fn qsc(s: St, sub: u32, t: u32) -> vec2<f32> { return select(vec2<f32>(s.d0, s.m0), vec2<f32>(s.d1, s.m1), t == 1u); }
{{- else if eq .T "q6_k"}}
const NSG: u32 = 4u;
fn grpq(s: St, sub: u32, j: u32) -> u32 {
  let t = j >> 2u;
  let k = j & 3u;
  let ql = select(s.qa[k], s.qb[k], (t & 1u) == 1u) >> (4u * (t >> 1u));
  return (ql & 0x0f0f0f0fu) | (((s.qh[k] >> (2u * t)) & 0x03030303u) << 4u);
}
fn qsc(s: St, sub: u32, t: u32) -> vec2<f32> { return vec2<f32>(s.dl[t], 32.0 * s.dl[t]); }
{{- else if eq .T "q2_k"}}
const NSG: u32 = 4u;
fn grpq(s: St, sub: u32, j: u32) -> u32 { return (s.q[j & 3u] >> (2u * (j >> 2u))) & 0x03030303u; }
fn qsc(s: St, sub: u32, t: u32) -> vec2<f32> { return vec2<f32>(s.dl[t], s.ml[t]); }
{{- else if eq .T "q3_k"}}
const NSG: u32 = 4u;
fn grpq(s: St, sub: u32, j: u32) -> u32 {
  let t = j >> 2u;
  return ((s.q[j & 3u] >> (2u * t)) & 0x03030303u) | (((s.hm[j & 3u] >> t) & 0x01010101u) << 2u);
}
fn qsc(s: St, sub: u32, t: u32) -> vec2<f32> { return vec2<f32>(s.dl[t], 4.0 * s.dl[t]); }
{{- end}}
const GS: u32 = G / NSG; // groups per scale group
{{- end}}

// --- kernels ----------------------------------------------------------------
{{- if .Rowwise}}
// matvec and experts. A lane computes RPT rows at once (x is loaded once
// for all of them); the TPR lanes of a row group take pieces lane, lane +
// TPR, ... in that order, and their partial sums meet in a fixed tree. So a
// row's result depends on neither M, RPT nor the other rows: only on TPR,
// which the weight's type and K fix.
//
// experts: for each slot s that the routing table R (ops.MoERoute) gives
// expert e, d[s, row] = sum_k W[e, row, k] x[s / x_per, k] (+ bias[e, row]).
// Workgroup (wid.x, u) is a block of rows of the u-th used expert; it takes
// the expert's slots M at a time (a slot in place of each x row of the
// matvec), an expert's last single slot alone in a body of one. The weight
// rows are read from memory once for all of the expert's slots, and a
// slot's value depends only on its expert and x row: not on the other
// slots, nor on M or how the slots are grouped.
const WG: u32 = {{.WG}}u;
const TPR: u32 = {{.TPR}}u;
const RPT: u32 = {{.RPT}}u;
const NACC: u32 = {{.NAcc}}u;
const RED: u32 = NACC * WG;
// Accumulators acc<r * M + m>: plain scalars (an array indexed in a loop
// would live in slow local memory).
{{- range .Accs}}
var<private> acc{{.}}: f32;
{{- end}}
{{- if .WGRed}}
var<workgroup> red: array<f32, RED>;
{{- end}}
{{- if .StageX}}
// StageX: each pass of the piece loop first copies the slice of x its
// pieces use (CV vec4 per x row, times g under Norm) into workgroup memory
// with coalesced loads, because the TPR lanes of a row read x BS/PPB
// elements apart: straight from global memory every vec4 load of a warp
// touches 32 cache lines. One vec4 of padding per 8 keeps the lanes' reads
// on different banks. The products are the same, in the same order.
const U: u32 = {{len .Us}}u;     // pieces per lane per pass
const CV: u32 = {{.CV}}u;       // vec4 of one x row per pass (U pieces per lane)
const CVP: u32 = CV + CV / 8u;  // with padding
var<workgroup> xs: array<vec4<f32>, {{.XSLen}}>;
var<private> xbase: u32;        // first element of x staged
{{- end}}
{{- if .Experts}}
const PAIRS: u32 = {{if .Pair}}2u{{else}}1u{{end}};
var<workgroup> head: vec4<u32>;              // used, expert, first and end slot
var<workgroup> tslot: array<u32, {{.M}}>;  // the tile's slots (dst rows)
var<workgroup> txrow: array<u32, {{.M}}>;  // and their x rows
{{- end}}

{{- if .Q8}}
// Row m of the quantised x: the quants of elements e .. e + 15 (e a
// multiple of 16), element e's block scale, the sum of scale group e's
// quants (16 or 32 from e), 1 / rms.
fn xword(i: u32) -> u32 { return x[i >> 2u][i & 3u]; }
fn xqv(m: u32, e: u32) -> vec4<u32> { return x[(p.x_off + m * p.x_stride + (e >> 2u)) >> 2u]; }
fn xqd(m: u32, e: u32) -> f32 { return bitcast<f32>(xword(p.x_off + m * p.x_stride + p.k / 4u + (e >> 5u))); }
fn xqs(m: u32, e: u32) -> f32 {
  let i = p.x_off + m * p.x_stride + p.k / 4u + p.k / 32u + (e >> 4u);
  return select(bitcast<f32>(xword(i)), bitcast<f32>(xword(i)) + bitcast<f32>(xword(i + 1u)), GS == 8u);
}
{{- else}}
fn xraw(m: u32, e: u32) -> vec4<f32> {
  let i = p.x_off + {{if .Experts}}txrow[m]{{else}}m{{end}} * p.x_stride + e;
{{- if .XVec}}
  return x[i >> 2u];
{{- else}}
  // Not vec4-aligned; elements past the row (a bf16 tail) read as zero.
  return vec4<f32>(select(0.0, x[i], e < p.k), select(0.0, x[i + 1u], e + 1u < p.k),
                   select(0.0, x[i + 2u], e + 2u < p.k), select(0.0, x[i + 3u], e + 3u < p.k));
{{- end}}
}
{{- if .Norm}}
fn gv(e: u32) -> vec4<f32> {
  let i = p.g_off + e;
{{- if .XVec}}
  return g[i >> 2u];
{{- else}}
  return vec4<f32>(select(0.0, g[i], e < p.k), select(0.0, g[i + 1u], e + 1u < p.k),
                   select(0.0, g[i + 2u], e + 2u < p.k), select(0.0, g[i + 3u], e + 3u < p.k));
{{- end}}
}
{{- end}}
fn xv(m: u32, e: u32) -> vec4<f32> {
{{- if .StageX}}
  let v = (e - xbase) >> 2u;
  return xs[m * CVP + v + v / 8u];
{{- else}}
  return xraw(m, e){{if .Norm}} * gv(e){{end}};
{{- end}}
}
{{- end}}
{{- if .Norm}}
var<private> nscale: array<f32, {{len .Ms}}>; // Norm: 1 / rms of each x row
{{- end}}
{{- range .Bodies}}
{{template "consume" .}}
{{- end}}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>{{if .SG}},
        @builtin(subgroup_size) sg_size: u32{{end}}) {
  let lane = lid.x % TPR;
{{- if and .Norm .Q8}}
  // ops.QuantizeQ8 computed each row's 1 / rms beside its quants.
{{- range $m := .Ms}}
  nscale[{{$m}}u] = bitcast<f32>(xword(p.x_off + {{$m}}u * p.x_stride + p.k / 4u + p.k / 32u + p.k / 16u));
{{- end}}
{{- else if .Norm}}
  // Sum of squares of each x row over the whole workgroup: thread partials
  // in a fixed order, then a fixed tree, the same in every workgroup.
{{- range $m := .Ms}}
  {
    var ss = 0.0;
    for (var e = lid.x * 4u; e < p.k; e += WG * 4u) {
      let v = xraw({{$m}}u, e);
      ss += dot(v, v);
    }
    red[{{$m}}u * WG + lid.x] = ss;
  }
{{- end}}
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid.x < s) {
      for (var m = 0u; m < {{len .Ms}}u; m++) { red[m * WG + lid.x] += red[m * WG + lid.x + s]; }
    }
    workgroupBarrier();
  }
{{- range $m := .Ms}}
  nscale[{{$m}}u] = inverseSqrt(red[{{$m}}u * WG] / f32(p.k) + p.eps);
{{- end}}
  workgroupBarrier();
{{- end}}
{{- if .Experts}}
  // The u-th used expert and its slots (uniform: the early exit and the
  // tile loop below are the whole workgroup's).
  if (lid.x == 0u) {
    let used = R[p.r_off];
    let uu = min(wid.y, max(used, 1u) - 1u);
    head = vec4<u32>(used, min(R[p.r_off + 1u + uu], p.n_exp - 1u),
                     R[p.r_off + 1u + p.n_exp + uu], R[p.r_off + 2u + p.n_exp + uu]);
  }
  let h = workgroupUniformLoad(&head);
  if (wid.y >= h.x) { return; }
  let wbase = p.w_off + h.y * p.e_stride;
  let blockid = wid.x;
{{- else}}
  let wbase = p.w_off;
  let blockid = wid.y * nwg.x + wid.x;
{{- end}}
{{- if .Pair}}
  // Rows 0..RPT/2-1 of a lane are gate rows, the rest the matching up rows.
  let row0 = (blockid * (WG / TPR) + lid.x / TPR) * (RPT / 2u);
{{- else}}
  let row0 = (blockid * (WG / TPR) + lid.x / TPR) * RPT;
{{- end}}
  // Rows past the end re-read the last row; they are not written.
{{- range .Rs}}
{{- if $.Pair}}
  let rb{{.}} = wbase + (min(row0 + {{.}}u % (RPT / 2u), p.rows - 1u) + ({{.}}u / (RPT / 2u)) * p.pair_off) * p.w_row;
{{- else}}
  let rb{{.}} = wbase + min(row0 + {{.}}u, p.rows - 1u) * p.w_row;
{{- end}}
{{- end}}
{{- if .Experts}}
  let lb = p.r_off + 2u + 2u * p.n_exp;
  var t = h.z;
  loop {
    if (t >= h.w) { break; }
    let left = h.w - t;  // slots still to compute (uniform)
    if (lid.x < {{.M}}u) {
      // A tile past the last slot repeats it; those copies are not written.
      let s = R[lb + min(t + lid.x, h.w - 1u)];
      tslot[lid.x] = s;
      txrow[lid.x] = s / p.x_per;
    }
    workgroupBarrier();
{{- if gt .M 1}}
    if (left == 1u) {
{{- template "body" index .Bodies 1}}
      t += 1u;
    } else {
{{- template "body" index .Bodies 0}}
      t += {{.M}}u;
    }
{{- else}}
{{- template "body" index .Bodies 0}}
    t += 1u;
{{- end}}
    workgroupBarrier();  // the tile is done with red, tslot and txrow
  }
{{- else}}
{{- template "body" index .Bodies 0}}
{{- end}}
}
{{- else}}
var<private> dbase: u32;

fn store(e: u32, w: vec4<f32>) {
  let i = dbase + e;
{{- if .DstF16}}
  // dst starts at an even element and rows are whole blocks: i is even.
  d[i >> 1u] = pack2x16float(w.xy);
  d[(i >> 1u) + 1u] = pack2x16float(w.zw);
{{- else}}
  d[i] = w.x; d[i + 1u] = w.y; d[i + 2u] = w.z; d[i + 3u] = w.w;
{{- end}}
}

// One thread per piece of the output.
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
  let g = (wid.y * nwg.x + wid.x) * 256u + lid.x;
  let row = g / p.np;
  if (row >= p.rows) { return; }
  let r = g % p.np;
  let blk = r / PPB;
  let sub = r % PPB;
  let eb = blk * BS;
  dbase = p.d_off + row * p.d_stride + eb;
{{- if eq .Kernel "embed"}}
  let id = ids[p.x_off + row];
  if (id < p.id_lo || id >= p.id_hi) {
    if (p.zero_oob != 0u && id >= p.vocab) {
      // No such table row: this piece's share of the output row is zero.
      for (var e = sub * (BS / PPB); e < (sub + 1u) * (BS / PPB); e += 4u) {
        store(e, vec4<f32>(0.0));
      }
    }
    return;
  }
  let s = load(p.w_off + (id - p.id_lo) * p.w_row + blk * BB, sub);
{{- else}}
  let s = load(p.w_off + row * p.w_row + blk * BB, sub);
{{- end}}
  for (var j = 0u; j < G; j++) {
    store(gel(sub, j), grp(s, sub, j));
  }
}
{{- end}}

{{- /* Multiply-accumulate one piece of each of the RPT rows, for a body of M
x rows (slots). On GPUs the groups are unrolled here (constant j); software
adapters get the loop, which compiles much faster and computes the same
values. */}}
{{- define "consume"}}
fn consume_m{{.M}}({{range .Rs}}s{{.}}: St, {{end}}eb: u32, sub: u32) {
{{- if .Q8}}
  // Per scale group: integer dot products of the weight and x quants, then
  // one scaling per row pair (r, m).
{{- if not .UnrollJ}}
  for (var t = 0u; t < NSG; t++) {
{{- end}}
{{- range $tg := .TGroups}}
  {
    let e0 = eb + gel(sub, {{$tg.T}} * GS);
{{- range $.Ms}}
    let xd{{.}} = xqd({{.}}u, e0);
    let xs{{.}} = xqs({{.}}u, e0);
{{- end}}
{{- range $.RMs}}{{range .}}
    var is{{.I}} = 0i;
{{- end}}{{end}}
    // Four groups (16 consecutive elements) at a time: one vec4 of x.
{{- if not $.UnrollJ}}
    for (var jq = 0u; jq < GS; jq += 4u) {
{{- end}}
{{- range $q := $tg.Quads}}
    {
      let e = eb + gel(sub, {{$q.J0}});
{{- range $.Ms}}
      let x{{.}} = xqv({{.}}u, e);
{{- end}}
{{- if not $.UnrollJ}}
      for (var i = 0u; i < 4u; i++) {
{{- end}}
{{- range $c, $je := $q.Js}}
{{- range $r := $.Rs}}
      {
        let w = grpq(s{{$r}}, sub, {{$je}});
{{- range index $.RMs $r}}
        is{{.I}} += dot4I8Packed(w, x{{.M}}[{{index $q.Cs $c}}]);
{{- end}}
      }
{{- end}}
{{- end}}
{{- if not $.UnrollJ}}
      }
{{- end}}
    }
{{- end}}
{{- if not $.UnrollJ}}
    }
{{- end}}
{{- range $r := $.Rs}}
    {
      let sc = qsc(s{{$r}}, sub, {{$tg.T}});
{{- range index $.RMs $r}}
      acc{{.I}} += xd{{.M}} * (sc.x * f32(is{{.I}}) - sc.y * xs{{.M}});
{{- end}}
    }
{{- end}}
  }
{{- end}}
{{- if not .UnrollJ}}
  }
{{- end}}
{{- else}}
{{- if not .UnrollJ}}
  for (var j = 0u; j < G; j++) {
{{- end}}
{{- range $je := .JExprs}}
  {
    let e = eb + gel(sub, {{$je}});
{{- if $.Tail}}
    if (e < p.k) {
{{- end}}
{{- range $.Ms}}
    let x{{.}} = xv({{.}}u, e);
{{- end}}
{{- range $r := $.Rs}}
    {
      let w = grp(s{{$r}}, sub, {{$je}});
{{- range index $.RMs $r}}
      acc{{.I}} += dot(w, x{{.M}});
{{- end}}
    }
{{- end}}
{{- if $.Tail}}
    }
{{- end}}
  }
{{- end}}
{{- if not .UnrollJ}}
  }
{{- end}}
{{- end}}
}
{{- end}}

{{- /* The products of the M x rows (slots) of a body, their tree over the
TPR lanes and the stores: inside main, after the row bases rb<r>. */}}
{{- define "body"}}
  {
{{- range .Accs}}
  acc{{.}} = 0.0;
{{- end}}
{{- if .StageX}}
  // Each pass covers U pieces per lane (pieces gp + u*TPR + lane): every
  // lane issues all their weight loads before any arithmetic, so U blocks
  // per row are in flight across each pass's barriers. A lane still
  // consumes its pieces in the order lane, lane + TPR, ...
  for (var gp = 0u; gp < p.np; gp += TPR * U) {  // uniform: every lane stages
    xbase = gp / PPB * BS;
    workgroupBarrier();  // the last pass is done with xs
    for (var i = lid.x; i < {{len .Ms}}u * CV; i += WG) {
      let m = i / CV;
      let v = i % CV;
      let e = xbase + 4u * v;
      var val = vec4<f32>(0.0);
      if (e < p.k) {
        val = xraw(m, e){{if .Norm}} * gv(e){{end}};
      }
      xs[m * CVP + v + v / 8u] = val;
    }
    workgroupBarrier();
    if (row0 < p.rows) {
{{- range $u := .Us}}
      let g{{$u}} = min(gp + {{$u}}u * TPR + lane, p.np - 1u);
{{- range $.Rs}}
      let s{{.}}_{{$u}} = load(rb{{.}} + (g{{$u}} / PPB) * BB, g{{$u}} % PPB);
{{- end}}
{{- end}}
{{- range $u := .Us}}
      if (gp + {{$u}}u * TPR + lane < p.np) {
        consume_m{{$.M}}({{range $.Rs}}s{{.}}_{{$u}}, {{end}}(g{{$u}} / PPB) * BS, g{{$u}} % PPB);
      }
{{- end}}
    }
  }
{{- else if .Ahead}}
  // Two pieces per row in flight: every row's loads of pieces g and
  // g + TPR first, then their arithmetic in the order g, g + TPR.
  if (row0 < p.rows) {
    for (var g = lane; g < p.np; g += 2u * TPR) {
      let g1 = min(g + TPR, p.np - 1u);
{{- range .Rs}}
      let s{{.}} = load(rb{{.}} + (g / PPB) * BB, g % PPB);
      let t{{.}} = load(rb{{.}} + (g1 / PPB) * BB, g1 % PPB);
{{- end}}
      consume_m{{.M}}({{range .Rs}}s{{.}}, {{end}}(g / PPB) * BS, g % PPB);
      if (g + TPR < p.np) {
        consume_m{{.M}}({{range .Rs}}t{{.}}, {{end}}(g1 / PPB) * BS, g1 % PPB);
      }
    }
  }
{{- else}}
  if (row0 < p.rows) {
    for (var g = lane; g < p.np; g += TPR) {
      let blk = g / PPB;
      let sub = g % PPB;
      // Every row's loads first, then the arithmetic.
{{- range .Rs}}
      let s{{.}} = load(rb{{.}} + blk * BB, sub);
{{- end}}
      consume_m{{.M}}({{range .Rs}}s{{.}}, {{end}}blk * BS, sub);
    }
  }
{{- end}}
  // The TPR lanes of a row meet in a fixed tree: at level s (TPR/2 down to
  // 1) lane l < s adds lane l + s.
{{- if .SG}}
  // Subgroups: levels at or above the subgroup size go through workgroup
  // memory (none when subgroups hold a whole row), the rest by
  // subgroupShuffleXor within the row's first subgroup (subgroups are
  // aligned runs of lanes, which gpu checks when it opens the device, and
  // TPR and the subgroup size are powers of two, so a row's lanes are one
  // aligned run inside a subgroup or whole subgroups). For l < s,
  // l ^ s = l + s, so every level adds the same two values in the same
  // order as the tree: the same bits as the plain kernel.
  var lvl = TPR / 2u;
{{- if .WGRed}}
  if (sg_size < TPR) {
{{- template "tree" .}}
  }
{{- end}}
  for (; lvl > 0u; lvl >>= 1u) {
{{- range .Accs}}
    acc{{.}} += subgroupShuffleXor(acc{{.}}, lvl);
{{- end}}
  }
{{- else}}
  var lvl = TPR / 2u;
{{- template "tree" .}}
{{- end}}
  if (lane == 0u) {
{{- if .Pair}}
{{- range $r, $ps := .Pairs}}
    if (row0 + {{$r}}u < p.rows) {
{{- range $ps}}
{{- if $.Experts}}
      if ({{.M}}u < left) {
        let row = row0 + {{$r}}u;
        let i = p.d_off + tslot[{{.M}}u] * p.d_stride + row;
        var gs = acc{{.G}};
        var us = acc{{.U}};
{{- if $.Bias}}
        gs += bias[p.b_off + h.y * PAIRS * p.rows + row];
        us += bias[p.b_off + h.y * PAIRS * p.rows + p.rows + row];
{{- end}}
        d[i] = act_{{$.Act}}(gs, us);
      }
{{- else}}
      {
        let i = p.d_off + {{.M}}u * p.d_stride + row0 + {{$r}}u;
        let gs = acc{{.G}}{{if $.Norm}} * nscale[{{.M}}u]{{end}};
        let us = acc{{.U}}{{if $.Norm}} * nscale[{{.M}}u]{{end}};
        d[i] = {{if $.Acc}}d[i] + {{end}}act_{{$.Act}}(gs, us);
      }
{{- end}}
{{- end}}
    }
{{- end}}
{{- else}}
{{- range $r := .Rs}}
    if (row0 + {{$r}}u < p.rows) {
      let row = row0 + {{$r}}u;
{{- range index $.RMs $r}}
{{- if $.Experts}}
      if ({{.M}}u < left) {
        d[p.d_off + tslot[{{.M}}u] * p.d_stride + row] = acc{{.I}}{{if $.Bias}} + bias[p.b_off + h.y * p.rows + row]{{end}};
      }
{{- else}}
      {
{{- if $.Segs}}
        var i = p.d_off + {{.M}}u * p.d_stride + row;
        if (row >= p.seg2) {
          i = p.d_off2 + {{.M}}u * p.d_rs2 + (row - p.seg2);
        } else if (row >= p.seg1) {
          i = p.d_off1 + {{.M}}u * p.d_rs1 + (row - p.seg1);
        }
{{- else}}
        let i = p.d_off + {{.M}}u * p.d_stride + row;
{{- end}}
        d[i] = {{if $.Acc}}d[i] + {{end}}acc{{.I}}{{if $.Norm}} * nscale[{{.M}}u]{{end}}{{if $.DBias}} + bias[p.fb_off + row]{{end}};
      }
{{- end}}
{{- end}}
    }
{{- end}}
{{- end}}
  }
  }
{{- end}}

{{- /* The tree's levels lvl down to the subgroup size (sg_size; to 1
without subgroups) in workgroup memory, leaving each lane's sums in its
accumulators. */}}
{{- define "tree"}}
{{- range .Accs}}
  red[{{.}}u * WG + lid.x] = acc{{.}};
{{- end}}
  workgroupBarrier();
  for (; lvl >= {{if .SG}}sg_size{{else}}1u{{end}}; lvl >>= 1u) {
    if (lane < lvl) {
      for (var i = 0u; i < {{.NAcc}}u; i++) { red[i * WG + lid.x] += red[i * WG + lid.x + lvl]; }
    }
    workgroupBarrier();
  }
{{- range .Accs}}
  acc{{.}} = red[{{.}}u * WG + lid.x];
{{- end}}
{{- end}}
