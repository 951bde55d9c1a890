// Mixture-of-experts routing (ops/moe_route.go), two kernels:
//   topk : per token row r of the router logits L [rows, E]: the K experts of
//          highest probability (ties: the lower id) into ids [rows, K], and
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

const WG: u32 = 64u;
const MAXK: u32 = {{.MaxK}}u;
const MASKW: u32 = {{.MaskWords}}u;

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

// One thread per row: the rows are independent, so a token's experts and
// weights do not depend on its batch-mates.
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let r = (wid.y * nwg.x + wid.x) * WG + lid;
  if (r >= p.rows) { return; }
  let lb = p.l_off + r * p.experts;
  var m = L[lb];
  for (var e = 1u; e < p.experts; e++) { m = max(m, L[lb + e]); }
  var s = 0.0;
  if (p.gating == 0u) {
    for (var e = 0u; e < p.experts; e++) { s += exp(L[lb + e] - m); }
  }
  var taken: array<u32, MASKW>;
  var w: array<f32, MAXK>;
  for (var j = 0u; j < p.k; j++) {
    var best = 0u;
    var bv = 0.0;
    var found = false;
    for (var e = 0u; e < p.experts; e++) {
      if ((taken[e >> 5u] & (1u << (e & 31u))) != 0u) { continue; }
      let v = prob(L[lb + e], m, s);
      if (!found || v > bv) { best = e; bv = v; found = true; }
    }
    taken[best >> 5u] |= 1u << (best & 31u);
    ids[p.i_off + r * p.k + j] = best;
    w[j] = bv;
  }
  if (p.gating == 2u) {
    // softmax over the selected logits; w[0] is their max
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
    wts[p.w_off + r * p.k + j] = w[j] * p.scale;
  }
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
