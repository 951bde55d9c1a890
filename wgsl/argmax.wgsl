// Argmax over rows: d[r] = the lowest c with x[r, c] maximal. One workgroup
// per row; each thread scans its columns in increasing order (strict >
// keeps the first of equal values), then a tree merges (value, index)
// pairs by "larger value, else lower index", a total order, so the result
// is the CPU's whatever the merge order. A row holding a NaN or +Inf, or
// only -Inf, has no token to pick: d[r] = NONE (0xffffffff) for it. To see
// a NaN (which no comparison picks, and which WGSL may assume away) each
// thread keeps the largest magnitude bit pattern it read, two integer ops
// an element: above 0x7f800000 is a NaN; +Inf shows as the maximum itself.
struct Params {
  rows: u32, cols: u32,
  x_off: u32, x_stride: u32,
  d_off: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> d: array<u32>;

const WG: u32 = {{.WG}}u;
const NONE: u32 = 0xffffffffu;
var<workgroup> best_v: array<f32, WG>;
var<workgroup> best_i: array<u32, WG>;
var<workgroup> max_abs: atomic<u32>;
const INF_BITS: u32 = 0x7f800000u;

fn absBits(v: f32) -> u32 { return bitcast<u32>(v) & 0x7fffffffu; }

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let row = wid.y * nwg.x + wid.x;
  if (row >= p.rows) { return; }  // uniform per workgroup: barriers stay valid
  let xb = p.x_off + row * p.x_stride;
  if (lid == 0u) { atomicStore(&max_abs, 0u); }
  workgroupBarrier();
  // Start from the thread's first element, so -inf entries are found too;
  // a thread with no element holds NONE, which loses every merge.
  var bv = 0.0;
  var bi = NONE;
  var ma = 0u;
  if (lid < p.cols) {
    bv = x[xb + lid];
    bi = lid;
    ma = absBits(bv);
  }
  // Four independent loads per step keep several memory requests in flight.
  var c = lid + WG;
  for (; c + 3u * WG < p.cols; c += 4u * WG) {
    let v0 = x[xb + c];
    let v1 = x[xb + c + WG];
    let v2 = x[xb + c + 2u * WG];
    let v3 = x[xb + c + 3u * WG];
    ma = max(ma, max(max(absBits(v0), absBits(v1)), max(absBits(v2), absBits(v3))));
    if (v0 > bv) { bv = v0; bi = c; }
    if (v1 > bv) { bv = v1; bi = c + WG; }
    if (v2 > bv) { bv = v2; bi = c + 2u * WG; }
    if (v3 > bv) { bv = v3; bi = c + 3u * WG; }
  }
  for (; c < p.cols; c += WG) {
    let v = x[xb + c];
    ma = max(ma, absBits(v));
    if (v > bv) { bv = v; bi = c; }
  }
  atomicMax(&max_abs, ma);
  best_v[lid] = bv;
  best_i[lid] = bi;
  workgroupBarrier();
  for (var k = WG / 2u; k > 0u; k >>= 1u) {
    if (lid < k) {
      let ov = best_v[lid + k];
      let oi = best_i[lid + k];
      let mv = best_v[lid];
      let mi = best_i[lid];
      if (oi != NONE && (mi == NONE || ov > mv || (ov == mv && oi < mi))) {
        best_v[lid] = ov;
        best_i[lid] = oi;
      }
    }
    workgroupBarrier();
  }
  if (lid == 0u) {
    // NaN anywhere; or the maximum is ±Inf: +Inf, or every entry -Inf.
    let bad = atomicLoad(&max_abs) > INF_BITS || absBits(best_v[0]) == INF_BITS;
    d[p.d_off + row] = select(best_i[0], NONE, best_i[0] == NONE || bad);
  }
}
