// Sampling for a batch of rows of logits, one workgroup per row, with
// llama.cpp's chain (runtime/sample): penalties over the row's window of
// recent tokens → top-k → top-p → min-p → temperature → a draw. The draw's
// uniform number comes from Philox4x32-10 keyed by the row's seed at the
// row's step, so a row's token depends only on its own logits and
// parameters, never on its batch-mates.
//
// Each row has 16 parameter words (ops/sample.go packs them):
//   0 temperature (f32)   1 k: candidates kept (k = cols: no top-k)
//   2 top-p (f32)         3 ln(min-p) (f32, -inf: off)
//   4 repeat penalty      5 frequency penalty   6 presence penalty (f32)
//   7 window tokens that count   8 window slot for the chosen token (NONE: none)
//   9, 10 seed (lo, hi)   11, 12 step (lo, hi)
//   13 path: 0 greedy, 1 sorted candidates (k ≤ CAP), 2 the whole row
//   14 the row of the window tensor that is this row's window
// The output is the token id, or NONE when a logit is NaN or +inf or all
// are -inf. The logits are penalised in place.
struct Params {
  rows: u32, cols: u32,
  x_off: u32, x_stride: u32,
  s_off: u32,
  w_off: u32, w_stride: u32,
  d_off: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> sp: array<u32>;
@group(0) @binding(3) var<storage, read_write> win: array<u32>;
@group(0) @binding(4) var<storage, read_write> d: array<u32>;

const WG: u32 = {{.WG}}u;
const CAP: u32 = {{.CAP}}u;
const NONE: u32 = 0xffffffffu;

var<workgroup> ctl: array<u32, 16>;   // the row's parameters
var<workgroup> sel: array<u32, 8>;    // radix select: threshold hi, lo, masks hi, lo, rank left, done
var<workgroup> hist: array<atomic<u32>, 256>;
var<workgroup> taken: atomic<u32>;
var<workgroup> bad: atomic<u32>;
var<workgroup> rv: array<f32, WG>;
var<workgroup> ri: array<u32, WG>;
var<workgroup> cv: array<f32, CAP>;
var<workgroup> ci: array<u32, CAP>;

// -inf, built from a run-time value: WGSL forbids a constant expression
// whose value is infinite (Dawn rejects bitcast<f32>(0xff800000u)).
fn neg_inf() -> f32 { return bitcast<f32>(0xff800000u | (p.rows & 0u)); }

// Order-preserving map of a (non-NaN) f32 to u32.
fn key_hi(v: f32) -> u32 {
  let b = bitcast<u32>(v);
  return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

// (hi, lo) words of a·b.
fn mul_wide(a: u32, b: u32) -> vec2<u32> {
  let al = a & 0xffffu;
  let ah = a >> 16u;
  let bl = b & 0xffffu;
  let bh = b >> 16u;
  let ll = al * bl;
  let lh = al * bh;
  let hl = ah * bl;
  let mid = (ll >> 16u) + (lh & 0xffffu) + (hl & 0xffffu);
  return vec2<u32>(ah * bh + (lh >> 16u) + (hl >> 16u) + (mid >> 16u), (mid << 16u) | (ll & 0xffffu));
}

fn philox(key_in: vec2<u32>, ctr_in: vec4<u32>) -> vec4<u32> {
  var k = key_in;
  var c = ctr_in;
  for (var r = 0u; r < 10u; r++) {
    if (r > 0u) { k += vec2<u32>(0x9E3779B9u, 0xBB67AE85u); }
    let p0 = mul_wide(0xD2511F53u, c.x);
    let p1 = mul_wide(0xCD9E8D57u, c.z);
    c = vec4<u32>(p1.x ^ c.y ^ k.x, p1.y, p0.x ^ c.w ^ k.y, p0.y);
  }
  return c;
}

fn better(av: f32, ai: u32, bv: f32, bi: u32) -> bool {
  return av > bv || (av == bv && ai < bi);
}

fn finish(row: u32, wb: u32, tok: u32) {
  d[p.d_off + row] = tok;
  let slot = ctl[8];
  if (slot != NONE && tok != NONE) { win[wb + slot] = tok; }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let row = wid.y * nwg.x + wid.x;
  if (row >= p.rows) { return; }  // uniform per workgroup: barriers stay valid
  let n = p.cols;
  let xb = p.x_off + row * p.x_stride;
  if (lid < 16u) { ctl[lid] = sp[p.s_off + row * 16u + lid]; }
  if (lid == 0u) { atomicStore(&bad, 0u); }
  workgroupBarrier();
  let wb = p.w_off + ctl[14] * p.w_stride;
  let path = workgroupUniformLoad(&ctl[13]);

  // Penalties, once per distinct token of the window (its first occurrence).
  let wlen = ctl[7];
  let rep = bitcast<f32>(ctl[4]);
  let freq = bitcast<f32>(ctl[5]);
  let pres = bitcast<f32>(ctl[6]);
  for (var j = lid; j < wlen; j += WG) {
    let id = win[wb + j];
    var first = id < n;
    for (var e = 0u; e < j && first; e++) {
      first = win[wb + e] != id;
    }
    if (first) {
      var cnt = 0u;
      for (var e = 0u; e < wlen; e++) {
        cnt += select(0u, 1u, win[wb + e] == id);
      }
      var v = x[xb + id];
      v = select(v / rep, v * rep, v <= 0.0);
      x[xb + id] = v - (f32(cnt) * freq + pres);
    }
  }
  storageBarrier();
  workgroupBarrier();

  // The best logit (lowest id among equals, -inf never), and a check for
  // NaN and +inf.
  var bv = neg_inf();
  var bi = NONE;
  for (var c = lid; c < n; c += WG) {
    let v = x[xb + c];
    // By the bits: compilers may fold v != v away. NaN or +inf.
    let b = bitcast<u32>(v);
    if ((b & 0x7fffffffu) > 0x7f800000u || b == 0x7f800000u) { atomicStore(&bad, 1u); }
    if (v != neg_inf() && (bi == NONE || v > bv)) { bv = v; bi = c; }
  }
  rv[lid] = bv;
  ri[lid] = bi;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) {
      let ov = rv[lid + s];
      let oi = ri[lid + s];
      if (oi != NONE && (ri[lid] == NONE || better(ov, oi, rv[lid], ri[lid]))) {
        rv[lid] = ov;
        ri[lid] = oi;
      }
    }
    workgroupBarrier();
  }
  if (lid == 0u && atomicLoad(&bad) != 0u) { ri[0] = NONE; }
  let best = workgroupUniformLoad(&ri[0]);
  if (best == NONE) {
    if (lid == 0u) { finish(row, wb, NONE); }
    return;
  }
  if (path == 0u) {
    if (lid == 0u) { finish(row, wb, best); }
    return;
  }
  let top = rv[0];
  workgroupBarrier();  // everyone has read rv[0] before the draw reuses rv
  let inv_t = 1.0 / bitcast<f32>(ctl[0]);
  let ln_min_p = bitcast<f32>(ctl[3]);
  let r = philox(vec2<u32>(ctl[9], ctl[10]), vec4<u32>(ctl[11], ctl[12], 0u, 0u));
  let u = f32(r.x >> 8u) * (1.0 / 16777216.0);

  if (path == 2u) {
    // The whole row in id order: min-p as a threshold, then the draw over
    // contiguous chunks, one a thread, in a fixed order.
    let thr = top + ln_min_p;
    let chunk = (n + WG - 1u) / WG;
    let c0 = min(n, lid * chunk);
    let c1 = min(n, c0 + chunk);
    var sum = 0.0;
    for (var c = c0; c < c1; c++) {
      let v = x[xb + c];
      if (v >= thr) { sum += exp((v - top) * inv_t); }
    }
    rv[lid] = sum;
    workgroupBarrier();
    if (lid == 0u) {
      var total = 0.0;
      for (var t = 0u; t < WG; t++) { total += rv[t]; }
      let goal = u * total;
      var cum = 0.0;
      var tok = NONE;
      for (var t = 0u; t < WG && tok == NONE; t++) {
        if (goal >= cum + rv[t]) { cum += rv[t]; continue; }
        let a = min(n, t * chunk);
        let b = min(n, a + chunk);
        for (var c = a; c < b; c++) {
          let v = x[xb + c];
          if (v >= thr) {
            cum += exp((v - top) * inv_t);
            if (goal < cum) { tok = c; break; }
          }
        }
      }
      if (tok == NONE) {  // rounding: the last token with mass
        tok = best;
        for (var c = n; c > 0u; c--) {
          let v = x[xb + c - 1u];
          if (v >= thr && exp((v - top) * inv_t) > 0.0) { tok = c - 1u; break; }
        }
      }
      finish(row, wb, tok);
    }
    return;
  }

  // Sorted candidates: the k best keys (logit, then lower id: the low word
  // is ~id) by a radix select over 8-bit digits, gathered and sorted.
  let k = workgroupUniformLoad(&ctl[1]);
  if (lid == 0u) {
    sel = array<u32, 8>(0u, 0u, 0u, 0u, k, select(0u, 1u, k >= n), 0u, 0u);
    atomicStore(&taken, 0u);
  }
  workgroupBarrier();
  for (var digit = 0u; digit < 8u; digit++) {
    if (workgroupUniformLoad(&sel[5]) != 0u) { break; }
    for (var b = lid; b < 256u; b += WG) { atomicStore(&hist[b], 0u); }
    workgroupBarrier();
    let th_hi = sel[0];
    let th_lo = sel[1];
    let m_hi = sel[2];
    let m_lo = sel[3];
    let shift = 24u - 8u * (digit % 4u);
    for (var c = lid; c < n; c += WG) {
      let hi = key_hi(x[xb + c]);
      let lo = ~c;
      if ((hi & m_hi) == th_hi && (lo & m_lo) == th_lo) {
        let w = select(lo, hi, digit < 4u);
        atomicAdd(&hist[(w >> shift) & 255u], 1u);
      }
    }
    workgroupBarrier();
    if (lid == 0u) {
      var left = sel[4];
      var b = 255u;
      loop {
        let h = atomicLoad(&hist[b]);
        if (h >= left || b == 0u) { break; }
        left -= h;
        b -= 1u;
      }
      if (digit < 4u) {
        sel[0] |= b << shift;
        sel[2] |= 255u << shift;
      } else {
        sel[1] |= b << shift;
        sel[3] |= 255u << shift;
      }
      sel[4] = left;
      if (atomicLoad(&hist[b]) == left || digit == 7u) { sel[5] = 1u; }
    }
    workgroupBarrier();
  }
  let th_hi = sel[0];
  let th_lo = sel[1];
  let m_hi = sel[2];
  let m_lo = sel[3];
  for (var c = lid; c < n; c += WG) {
    let v = x[xb + c];
    let mh = key_hi(v) & m_hi;
    let ml = ~c & m_lo;
    if (mh > th_hi || (mh == th_hi && ml >= th_lo)) {
      let s = atomicAdd(&taken, 1u);
      if (s < CAP) {
        cv[s] = v;
        ci[s] = c;
      }
    }
  }
  var size = 1u;
  while (size < k) { size <<= 1u; }
  for (var s = k + lid; s < size; s += WG) {
    cv[s] = neg_inf();
    ci[s] = NONE;
  }
  workgroupBarrier();
  // Bitonic sort, best first.
  for (var blk = 2u; blk <= size; blk <<= 1u) {
    for (var stride = blk >> 1u; stride > 0u; stride >>= 1u) {
      for (var t = lid; t < size / 2u; t += WG) {
        let i = (t / stride) * 2u * stride + (t % stride);
        let j = i + stride;
        let up = (i & blk) == 0u;
        let jb = better(cv[j], ci[j], cv[i], ci[i]);
        if (jb == up) {
          let v = cv[i];
          let id = ci[i];
          cv[i] = cv[j];
          ci[i] = ci[j];
          cv[j] = v;
          ci[j] = id;
        }
      }
      workgroupBarrier();
    }
  }
  if (lid == 0u) {
    var m = k;
    let v0 = cv[0];
    let top_p = bitcast<f32>(ctl[2]);
    if (top_p < 1.0) {
      var total = 0.0;
      for (var j = 0u; j < m; j++) { total += exp(cv[j] - v0); }
      var cum = 0.0;
      for (var j = 0u; j < m; j++) {
        cum += exp(cv[j] - v0) / total;
        if (cum >= top_p) { m = j + 1u; break; }
      }
    }
    var q = 1u;
    while (q < m && cv[q] >= v0 + ln_min_p) { q++; }
    m = q;
    var total = 0.0;
    for (var j = 0u; j < m; j++) { total += exp((cv[j] - v0) * inv_t); }
    let goal = u * total;
    var cum = 0.0;
    var pick = NONE;
    for (var j = 0u; j < m; j++) {
      cum += exp((cv[j] - v0) * inv_t);
      if (goal < cum) { pick = j; break; }
    }
    if (pick == NONE) {  // rounding: the last candidate with mass
      pick = 0u;
      for (var j = m - 1u; j > 0u; j--) {
        if (exp((cv[j] - v0) * inv_t) > 0.0) { pick = j; break; }
      }
    }
    finish(row, wb, ci[pick]);
  }
}
