// Flash attention, decode variant ("flash-decoding"): split-K. The keys
// [0, kv_len) are cut into n_split chunks of split_len keys; workgroup
// (split, row tile, batch·kv head) runs the online softmax over its chunk
// for RT rows (rows as in attention_prefill.wgsl: query × group head) and
// writes the unnormalised partial output O_s with its running max m_s and
// sum l_s to the scratch buffer. attention_combine.wgsl merges the splits.
// So one query over thousands of keys still spreads over many workgroups.
// Per key tile of BK keys every thread takes part in every step:
//   0. thread (lane, c) issues the loads of its V vec4s of the tile into
//      registers (keys j ≡ lane mod KL), so they fly while K is staged and
//      the scores and softmax run;
//   1. the K tile is staged in workgroup memory (coalesced; f16 kept as
//      pairs), barrier;
//   2. thread (part, key j) computes the dot products of key j with the RT
//      rows over its KT-th of the head dim (Q is read by all lanes of a
//      subgroup at one address: a broadcast), barrier;
//   3. thread (row, g) sums the parts of NE scores of its row (keys
//      j ≡ g mod TR), masks them and takes their max, barrier;
//   4. the same thread takes the row max over the TR partial maxima,
//      writes its probabilities and keeps its own part of the row sum
//      (summed in a fixed order at the end), barrier;
//   5. P·V from the registers of step 0.
// Paged (the .Paged variant, ops.AttentionPaged): k and v are block pools
// [n_blocks, BS, n_kvh, D]; batch element b is a sequence whose kv_len,
// pos0 and block-table row come from info[b] and whose key j lies in pool
// row tbl[row][j / BS]·BS + j % BS. The split length is derived from the
// sequence's own kv_len, so its result does not depend on the batch.
struct Params {
  n_rows: u32, group: u32, kv_len: u32, pos0: u32,
  q_off: u32, k_off: u32, v_off: u32, o_off: u32,
  q_bstride: u32, q_tstride: u32,
  kv_bstride: u32, kv_tstride: u32,
  n_kvh: u32, row_tiles: u32,
  scale: f32,
  n_split: u32, split_len: u32, part_off: u32, ml_off: u32,
  batch: u32,
  n_blocks: u32, tbl_off: u32, tbl_stride: u32, tbl_rows: u32,
  info_off: u32, max_split: u32,
  softcap: f32, window: u32, sink_off: u32,  // ops.attnMods
  kv_sc_off: u32,  // q8_0 pools: word of the scale plane
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<{{if eq .KV "f32"}}f32{{else}}u32{{end}}>;
@group(0) @binding(3) var<storage, read> v: array<{{if eq .KV "f32"}}f32{{else}}u32{{end}}>;
@group(0) @binding(4) var<storage, read_write> scratch: array<f32>;
{{- if .Paged}}
@group(0) @binding(5) var<storage, read> tbl: array<u32>;
@group(0) @binding(6) var<storage, read> info: array<u32>;
const BS: u32 = {{.BS}}u;    // tokens per pool block
{{- end}}

const RT: u32 = {{.RT}}u;
const BK: u32 = {{.BK}}u;
const D: u32 = {{.D}}u;
const D4: u32 = {{.D4}}u;
const RS: u32 = {{.RS}}u;    // D4 + 1: K tile row stride, padded against bank conflicts
const WG: u32 = {{.WG}}u;
const KT: u32 = {{.KT}}u;    // WG / BK: threads (parts of the head dim) per key in step 2
const TR: u32 = {{.TR}}u;    // softmax threads per row
const NE: u32 = {{.NE}}u;    // BK / TR: keys per softmax thread
const KL: u32 = {{.KL}}u;    // key lanes of the P·V step
const KPL: u32 = {{.KPL}}u;  // keys per lane: ceil(BK / KL)
const KSI: u32 = {{.KSI}}u;  // ceil(BK·D4 / WG): K tile vec4s a thread loads
const DKM: u32 = {{.DKM}}u;  // ceil(D4 / KT): the most vec4s of a step-2 part
const LOW: f32 = -3.0e38;

var<workgroup> qs: array<vec4<f32>, {{.QSLen}}>;   // [RT][D4], scaled
var<workgroup> sm: array<{{.KS}}, {{.SMLen}}>;     // K tile [BK][RS]; at the end lane partials [KL][RT][D4]
var<workgroup> ss: array<f32, {{.SSLen}}>;         // score parts [KT][RT][BK]; then probabilities [RT][BK]
var<workgroup> pm: array<f32, WG>;                 // partial row maxima [RT][TR]; at the end partial sums
var<workgroup> row_scale: array<f32, RT>;

{{template "attn_kv" .}}

// Raw K/V vec4s as loaded ({{.Raw}}), decoded only where used, so that a
// load in flight does not stall the thread before the barriers.
{{- if eq .KV "f16"}}
fn k_raw(i: u32) -> vec2<u32> { let w = i >> 1u; return vec2<u32>(k[w], k[w + 1u]); }
fn v_raw(i: u32) -> vec2<u32> { let w = i >> 1u; return vec2<u32>(v[w], v[w + 1u]); }
fn dec(r: vec2<u32>) -> vec4<f32> { return vec4<f32>(unpack2x16float(r.x), unpack2x16float(r.y)); }
// The K tile keeps the f16 pairs (half the workgroup memory of f32).
fn ks_put(r: vec2<u32>) -> vec2<u32> { return r; }
fn ks_get(s: vec2<u32>) -> vec4<f32> { return dec(s); }
// Lane partials (vec4<f32>) stored as two pairs of the K tile's type.
fn lp_put(i: u32, x: vec4<f32>) { sm[2u * i] = bitcast<vec2<u32>>(x.xy); sm[2u * i + 1u] = bitcast<vec2<u32>>(x.zw); }
fn lp_get(i: u32) -> vec4<f32> { return vec4<f32>(bitcast<vec2<f32>>(sm[2u * i]), bitcast<vec2<f32>>(sm[2u * i + 1u])); }
{{- else if eq .KV "q8_0"}}
// (quants, scale word, shift of the block's scale half in it)
fn k_raw(i: u32) -> vec3<u32> { return vec3<u32>(k[i >> 2u], k[p.kv_sc_off + (i >> 6u)], ((i >> 5u) & 1u) * 16u); }
fn v_raw(i: u32) -> vec3<u32> { return vec3<u32>(v[i >> 2u], v[p.kv_sc_off + (i >> 6u)], ((i >> 5u) & 1u) * 16u); }
fn dec(r: vec3<u32>) -> vec4<f32> { return q8_unpack(r.x) * unpack2x16float(r.y >> r.z).x; }
fn ks_put(r: vec3<u32>) -> vec4<f32> { return dec(r); }
fn ks_get(s: vec4<f32>) -> vec4<f32> { return s; }
fn lp_put(i: u32, x: vec4<f32>) { sm[i] = x; }
fn lp_get(i: u32) -> vec4<f32> { return sm[i]; }
{{- else}}
fn k_raw(i: u32) -> vec4<f32> { return vec4<f32>(k[i], k[i + 1u], k[i + 2u], k[i + 3u]); }
fn v_raw(i: u32) -> vec4<f32> { return vec4<f32>(v[i], v[i + 1u], v[i + 2u], v[i + 3u]); }
fn dec(r: vec4<f32>) -> vec4<f32> { return r; }
fn ks_put(r: vec4<f32>) -> vec4<f32> { return r; }
fn ks_get(s: vec4<f32>) -> vec4<f32> { return s; }
fn lp_put(i: u32, x: vec4<f32>) { sm[i] = x; }
fn lp_get(i: u32) -> vec4<f32> { return sm[i]; }
{{- end}}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let split = wid.x;
  let tile = wid.y;
  let kvh = wid.z % p.n_kvh;
  let b = wid.z / p.n_kvh;
  let row0 = tile * RT;
  let rows_here = min(RT, p.n_rows - row0);
{{- if .Paged}}
  let si = seq_info(b);
  let kv_len = si.x;
  let pos0 = si.y;
  let tb = si.z;
  // Chunks of whole key tiles, at most max_split of them: the same formula
  // as the contiguous kernel's host code. The second term only matters when
  // kv_len exceeds the bound the grid was sized for.
  var s0 = 0u;  // chunks cover [s0, kv_len): s0 is the first query's window start
{{- if .Window}}
  s0 = min(win_lo(pos0), kv_len);
{{- end}}
  let n_tiles = (kv_len - s0 + BK - 1u) / BK;
  let split_len = max((n_tiles + p.max_split - 1u) / p.max_split, (n_tiles + p.n_split - 1u) / p.n_split) * BK;
  let k_base = p.k_off + kvh * D;
  let v_base = p.v_off + kvh * D;
{{- else}}
  let kv_len = p.kv_len;
  let pos0 = p.pos0;
  let tb = 0u;
  let split_len = p.split_len;
  var s0 = 0u;
{{- if .Window}}
  s0 = min(win_lo(pos0), kv_len);
{{- end}}
  let k_base = p.k_off + b * p.kv_bstride + kvh * D;
  let v_base = p.v_off + b * p.kv_bstride + kvh * D;
{{- end}}
  let ks0 = s0 + split * split_len;
  var ks1 = min(kv_len, ks0 + split_len);
{{- if .Causal}}
  ks1 = min(ks1, pos0 + (row0 + rows_here - 1u) / p.group + 1u);
{{- end}}
  let q_base = p.q_off + b * p.q_bstride;

  for (var e = t; e < RT * D4; e += WG) {
    let r = e / D4;
    let c = e % D4;
    let R = row0 + r;
    var val = vec4<f32>(0.0);
    if (R < p.n_rows) {
      let i = q_base + (R / p.group) * p.q_tstride + (kvh * p.group + R % p.group) * D + c * 4u;
      val = vec4<f32>(q[i], q[i + 1u], q[i + 2u], q[i + 3u]) * p.scale;
    }
    qs[r * D4 + c] = val;
  }

  // Step 2's roles: key sj, head-dim part sh (vec4s [d0, d1)).
  let sj = t % BK;
  let sh = t / BK;
  let d0 = (sh * D4) / KT;
  let d1 = ((sh + 1u) * D4) / KT;
  // Steps 3-4: row sr, keys j ≡ sg (mod TR); row sr sees keys [w_lo, lim).
  let soft = t < RT * TR;
  let sr = t / TR;
  let sg = t % TR;
  var lim = 0u;
  var w_lo = 0u;
  if (soft && row0 + sr < p.n_rows) {
    lim = ks1;
{{- if .Causal}}
    lim = min(lim, pos0 + (row0 + sr) / p.group + 1u);
{{- end}}
{{- if .Window}}
    w_lo = win_lo(pos0 + (row0 + sr) / p.group);
{{- end}}
  }
  var m_run = LOW;  // row sr's running max and this thread's part of its sum
  var l_run = 0.0;
  var sv: array<f32, NE>;
  // Steps 0 and 5: key lane, vec4 column c.
  let lane = t / D4;
  let c = t % D4;
  var acc: array<vec4<f32>, RT>;
  var vr: array<{{.Raw}}, KPL>;

  for (var key0 = ks0; key0 < ks1; key0 += BK) {
    if (lane < KL) {
      for (var i = 0u; i < KPL; i++) {  // constant trip count: the loads are issued together
        let j = lane + i * KL;
        if (j < BK && key0 + j < ks1) {
          vr[i] = v_raw(v_base + kv_row(tb, key0 + j) * p.kv_tstride + c * 4u);
        }
      }
    }
    // The K tile: every load first (constant trip counts, so that they are
    // all in flight together), then the stores.
    var kr: array<{{.Raw}}, KSI>;
    for (var i = 0u; i < KSI; i++) {
      let e = t + i * WG;
      let j = e / D4;
      if (e < BK * D4 && key0 + j < ks1) {
        kr[i] = k_raw(k_base + kv_row(tb, key0 + j) * p.kv_tstride + (e % D4) * 4u);
      } else {
        kr[i] = {{.Raw}}();
      }
    }
    for (var i = 0u; i < KSI; i++) {
      let e = t + i * WG;
      if (e < BK * D4) {
        sm[(e / D4) * RS + e % D4] = ks_put(kr[i]);
      }
    }
    workgroupBarrier();  // K staged (and the previous tile's P·V is done)

    var s = array<f32, RT>();  // an initialiser: a bare var in a loop may keep the last iteration's value (naga)
    for (var i = 0u; i < DKM; i++) {
      let cc = d0 + i;
      if (cc < d1) {
        let kk = ks_get(sm[sj * RS + cc]);
        for (var a = 0u; a < RT; a++) {
          s[a] += dot(qs[a * D4 + cc], kk);
        }
      }
    }
    for (var a = 0u; a < RT; a++) {
      ss[(sh * RT + a) * BK + sj] = s[a];
    }
    workgroupBarrier();

    var mx = LOW;
    if (soft) {
      for (var i = 0u; i < NE; i++) {
        let j = sg + i * TR;
        var x = ss[sr * BK + j];
        for (var h = 1u; h < KT; h++) {
          x += ss[(h * RT + sr) * BK + j];
        }
{{- if .SoftCap}}
        x = cap_score(x);
{{- end}}
        let key = key0 + j;
        if (key < lim && key >= w_lo) {
          mx = max(mx, x);
        }
        sv[i] = x;
      }
      pm[t] = mx;
    }
    workgroupBarrier();

    if (soft) {
      var mt = m_run;
      for (var g = 0u; g < TR; g++) {
        mt = max(mt, pm[sr * TR + g]);
      }
      var sum = 0.0;
      for (var i = 0u; i < NE; i++) {
        let j = sg + i * TR;
        let key = key0 + j;
        var pj = 0.0;
        if (key < lim && key >= w_lo) {
          pj = exp2(sv[i] - mt);
        }
        ss[sr * BK + j] = pj;
        sum += pj;
      }
      let alpha = exp2(m_run - mt);
      l_run = l_run * alpha + sum;
      m_run = mt;
      if (sg == 0u) {
        row_scale[sr] = alpha;
      }
    }
    workgroupBarrier();

    if (lane < KL) {
      for (var a = 0u; a < RT; a++) {
        acc[a] *= row_scale[a];
      }
      for (var i = 0u; i < KPL; i++) {
        let j = lane + i * KL;
        if (j < BK && key0 + j < ks1) {
          let vv = dec(vr[i]);
          for (var a = 0u; a < RT; a++) {
            acc[a] += ss[a * BK + j] * vv;
          }
        }
      }
    }
  }
  // The K tile and pm were last read before the last tile's final barrier.
  if (lane < KL) {
    for (var a = 0u; a < RT; a++) {
      lp_put((lane * RT + a) * D4 + c, acc[a]);
    }
  }
  if (soft) {
    pm[t] = l_run;
  }
  workgroupBarrier();
  let base = (b * p.n_kvh + kvh) * p.n_rows;
  for (var e = t; e < RT * D4; e += WG) {
    let a = e / D4;
    let cc = e % D4;
    let R = row0 + a;
    if (R < p.n_rows) {
      var sum = lp_get(a * D4 + cc);
      for (var l = 1u; l < KL; l++) {
        sum += lp_get((l * RT + a) * D4 + cc);
      }
      let i = p.part_off + ((base + R) * p.n_split + split) * D + cc * 4u;
      scratch[i] = sum.x;
      scratch[i + 1u] = sum.y;
      scratch[i + 2u] = sum.z;
      scratch[i + 3u] = sum.w;
    }
  }
  if (soft && sg == 0u && row0 + sr < p.n_rows) {
    var l = 0.0;
    for (var g = 0u; g < TR; g++) {
      l += pm[sr * TR + g];
    }
    let i = p.ml_off + ((base + row0 + sr) * p.n_split + split) * 2u;
    scratch[i] = m_run;
    scratch[i + 1u] = l;
  }
}
