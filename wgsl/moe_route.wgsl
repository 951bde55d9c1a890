// Mixture-of-experts routing (ops/moe_route.go), two kernels:
//   topk : per token row r of the router logits L [rows, E] (a workgroup
//          each): the K experts of highest probability (ties: the lower id) into ids [rows, K], and
//          their weights into wts [rows, K] (llama.cpp build_moe_ffn);
//   group: the table R that groups the rows·K slots by expert, for the
//          experts matvec: R[0] = experts used, R[1 + u] the u-th used expert
//          (ascending), R[1 + E + u] .. R[2 + E + u] where its slots lie in
//          R[2 + 2E ..], each slot s = r·K + j once.
struct Params {
  rows: u32, experts: u32, k: u32,
  gating: u32,     // 0 softmax, 1 sigmoid, 2 top-k of the logits then softmax over them
  normalize: u32,  // divide the K weights by their sum
  scale: f32,      // then multiply them (expert_weights_scale)
  l_off: u32, i_off: u32, w_off: u32, r_off: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
{{- if eq .Kernel "topk"}}
@group(0) @binding(1) var<storage, read> L: array<f32>;
@group(0) @binding(2) var<storage, read_write> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> wts: array<f32>;
{{- if .Group}}
// Group: a single row (a decode step of one token), so this workgroup also
// writes the route table the group kernel would: its K experts are
// distinct, each with one slot.
@group(0) @binding(4) var<storage, read_write> R: array<u32>;
{{- end}}

const WG: u32 = 64u;
const MAXK: u32 = {{.MaxK}}u;
const PER: u32 = {{.MaxE}}u / WG; // experts per lane at most
const NONE: u32 = 0xffffffffu;
var<workgroup> rv: array<f32, WG>;
var<workgroup> ri: array<u32, WG>;
var<workgroup> pv: array<f32, MAXK>;
var<workgroup> pi: array<u32, MAXK>;

// The gating function of one logit given the row's max m and the sum s of
// exp(l - m) (softmax), without overflow.
fn prob(l: f32, m: f32, s: f32) -> f32 {
  if (p.gating == 0u) { return exp(l - m) / s; }
  if (p.gating == 1u) {
    let e = exp(-abs(l));
    return select(e / (1.0 + e), 1.0 / (1.0 + e), l >= 0.0);
  }
  return l;
}

// (v, i) beats (w, j): larger value, else lower id; NONE loses.
fn beats(v: f32, i: u32, w: f32, j: u32) -> bool {
  return i != NONE && (j == NONE || v > w || (v == w && i < j));
}

// Fixed trees over the lanes (the same order for every row, whatever the
// batch): max and sum into rv[0], argmax into (rv[0], ri[0]).
fn tree_max(lid: u32) {
  for (var k = WG / 2u; k > 0u; k >>= 1u) {
    if (lid < k) { rv[lid] = max(rv[lid], rv[lid + k]); }
    workgroupBarrier();
  }
}
fn tree_sum(lid: u32) {
  for (var k = WG / 2u; k > 0u; k >>= 1u) {
    if (lid < k) { rv[lid] = rv[lid] + rv[lid + k]; }
    workgroupBarrier();
  }
}
fn tree_best(lid: u32) {
  for (var k = WG / 2u; k > 0u; k >>= 1u) {
    if (lid < k && beats(rv[lid + k], ri[lid + k], rv[lid], ri[lid])) {
      rv[lid] = rv[lid + k];
      ri[lid] = ri[lid + k];
    }
    workgroupBarrier();
  }
}

// One workgroup per token row; its lanes hold experts lid, lid + WG, ...
// Rows are independent, so a token's experts and weights do not depend on
// its batch-mates.
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let r = wid.y * nwg.x + wid.x;
  if (r >= p.rows) { return; }  // uniform per workgroup
  let lb = p.l_off + r * p.experts;
  var lv: array<f32, PER>;
  // -inf, built from a run-time value: WGSL forbids a constant expression
  // whose value is infinite (Dawn rejects bitcast<f32>(0xff800000u)).
  var mx = bitcast<f32>(0xff800000u | (p.rows & 0u));
  for (var i = 0u; lid + i * WG < p.experts; i++) {
    lv[i] = L[lb + lid + i * WG];
    mx = max(mx, lv[i]);
  }
  rv[lid] = mx;
  workgroupBarrier();
  tree_max(lid);
  let m = rv[0];
  workgroupBarrier();
  var s = 0.0;
  for (var i = 0u; lid + i * WG < p.experts; i++) { s += exp(lv[i] - m); }
  rv[lid] = s;
  workgroupBarrier();
  tree_sum(lid);
  s = rv[0];
  workgroupBarrier();
  for (var i = 0u; lid + i * WG < p.experts; i++) { lv[i] = prob(lv[i], m, s); }
  var taken = 0u; // bit i: expert lid + i·WG chosen
  for (var j = 0u; j < p.k; j++) {
    var bv = 0.0;
    var bi = NONE;
    for (var i = 0u; lid + i * WG < p.experts; i++) {
      let e = lid + i * WG;
      if ((taken & (1u << i)) == 0u && beats(lv[i], e, bv, bi)) { bv = lv[i]; bi = e; }
    }
    rv[lid] = bv;
    ri[lid] = bi;
    workgroupBarrier();
    tree_best(lid);
    let win = ri[0];
    if (win % WG == lid) { taken |= 1u << (win / WG); }
    if (lid == 0u) { pv[j] = rv[0]; pi[j] = win; }
    workgroupBarrier();
  }
  if (lid != 0u) { return; }
  var w: array<f32, MAXK>;
  for (var j = 0u; j < p.k; j++) { w[j] = pv[j]; }
  if (p.gating == 2u) {
    // softmax over the chosen logits; w[0] is their max
    let top = w[0];
    var t = 0.0;
    for (var j = 0u; j < p.k; j++) { w[j] = exp(w[j] - top); t += w[j]; }
    for (var j = 0u; j < p.k; j++) { w[j] = w[j] / t; }
  }
  if (p.normalize != 0u) {
    var t = 0.0;
    for (var j = 0u; j < p.k; j++) { t += w[j]; }
    t = max(t, 6.103515625e-5); // llama.cpp clamps the sum at f16's smallest normal
    for (var j = 0u; j < p.k; j++) { w[j] = w[j] / t; }
  }
  for (var j = 0u; j < p.k; j++) {
    ids[p.i_off + r * p.k + j] = pi[j];
    wts[p.w_off + r * p.k + j] = w[j] * p.scale;
  }
{{- if .Group}}
  // The used experts ascending (insertion sort of the K ids, each carrying
  // its slot j), slot u of the list for the u-th.
  var se: array<u32, MAXK>;
  var sj: array<u32, MAXK>;
  for (var j = 0u; j < p.k; j++) {
    var at = j;
    while (at > 0u && se[at - 1u] > pi[j]) {
      se[at] = se[at - 1u];
      sj[at] = sj[at - 1u];
      at -= 1u;
    }
    se[at] = pi[j];
    sj[at] = j;
  }
  R[p.r_off] = p.k;
  for (var u = 0u; u < p.k; u++) {
    R[p.r_off + 1u + u] = se[u];
    R[p.r_off + 1u + p.experts + u] = u;
    R[p.r_off + 2u + 2u * p.experts + u] = sj[u];
  }
  R[p.r_off + 1u + p.experts + p.k] = p.k;
{{- end}}
}
{{- else}}
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read_write> R: array<u32>;

const WG: u32 = 256u;
const MAXE: u32 = {{.MaxE}}u;
var<workgroup> count: array<atomic<u32>, MAXE>;
var<workgroup> start: array<u32, MAXE>;

// One workgroup: count the slots of each expert, lay the used experts out in
// ascending order, then place every slot. The order of slots within an
// expert's list may vary from run to run; the experts matvec computes each
// slot alone, so values do not depend on it.
@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32) {
  let slots = p.rows * p.k;
  for (var e = lid; e < p.experts; e += WG) { atomicStore(&count[e], 0u); }
  workgroupBarrier();
  for (var s = lid; s < slots; s += WG) {
    atomicAdd(&count[min(ids[p.i_off + s], p.experts - 1u)], 1u);
  }
  workgroupBarrier();
  if (lid == 0u) {
    var used = 0u;
    var at = 0u;
    for (var e = 0u; e < p.experts; e++) {
      let c = atomicLoad(&count[e]);
      start[e] = at;
      if (c != 0u) {
        R[p.r_off + 1u + used] = e;
        R[p.r_off + 1u + p.experts + used] = at;
        used += 1u;
        at += c;
      }
      atomicStore(&count[e], 0u);
    }
    R[p.r_off + 1u + p.experts + used] = at;
    R[p.r_off] = used;
  }
  workgroupBarrier();
  for (var s = lid; s < slots; s += WG) {
    let e = min(ids[p.i_off + s], p.experts - 1u);
    let at = start[e] + atomicAdd(&count[e], 1u);
    R[p.r_off + 2u + 2u * p.experts + at] = s;
  }
}
{{- end}}
