// Flash attention, decode variant ("flash-decoding"): split-K. The keys
// [0, kv_len) are cut into n_split chunks of split_len keys; workgroup
// (split, row tile, batch·kv head) runs the online softmax over its chunk
// for RT rows (rows as in attention_prefill.wgsl: query × group head) and
// writes the unnormalised partial output O_s with its running max m_s and
// sum l_s to the scratch buffer. attention_combine.wgsl merges the splits.
// So one query over thousands of keys still spreads over many workgroups.
// Per key tile of BK keys:
//   1. stage K in workgroup memory,
//   2. scores: each (row, key) dot product is cut into DS parts over the
//      head dim (when RT·BK < WG) so that all threads work,
//   3. thread r < RT adds the parts in order and updates row r's m, l,
//   4. P·V: thread (lane, c) accumulates vec4 column c over keys
//      j ≡ lane (mod KL), reading V straight from global memory (each V
//      row is used by only RT rows, so staging it buys little);
// the KL lane partials are summed in lane order at the end.
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
const RS4: u32 = {{.RS4}}u;  // D4 + 1: padded against bank conflicts
const SS: u32 = {{.SS}}u;    // BK + 1
const WG: u32 = {{.WG}}u;
const DS: u32 = {{.DS}}u;    // parts per dot product
const DC: u32 = {{.DC}}u;    // D4 / DS
const KL: u32 = {{.KL}}u;    // key lanes of the P·V step
const KPL: u32 = {{.KPL}}u;  // keys per lane: ceil(BK / KL)
const LOW: f32 = -3.0e38;

var<workgroup> qs: array<vec4<f32>, {{.QSLen}}>;
var<workgroup> sm: array<vec4<f32>, {{.SMLen}}>;  // K tile [BK][RS4]; at the end lane partials [KL][RT][D4]
var<workgroup> ss: array<f32, {{.SSLen}}>;        // [DS][RT][SS]
var<workgroup> row_scale: array<f32, RT>;

{{template "attn_kv" .}}

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
    qs[r * RS4 + c] = val;
  }

  var m_run = LOW;
  var l_run = 0.0;
  var lim = 0u;  // row t sees keys [max(ks0, w_lo), lim)
  var w_lo = 0u;
  if (t < RT) {
    lim = ks1;
{{- if .Causal}}
    lim = min(lim, pos0 + (row0 + t) / p.group + 1u);
{{- end}}
{{- if .Window}}
    w_lo = win_lo(pos0 + (row0 + t) / p.group);
{{- end}}
  }
  let lane = t / D4;
  let c = t % D4;
  var acc: array<vec4<f32>, RT>;

  for (var key0 = ks0; key0 < ks1; key0 += BK) {
    workgroupBarrier();  // Q staged; the previous tile's reads are done
    for (var e = t; e < BK * D4; e += WG) {
      let j = e / D4;
      let cc = e % D4;
      var val = vec4<f32>(0.0);
      if (key0 + j < ks1) {
        val = ld_k4(k_base + kv_row(tb, key0 + j) * p.kv_tstride + cc * 4u);
      }
      sm[j * RS4 + cc] = val;
    }
    workgroupBarrier();
    for (var e = t; e < DS * RT * BK; e += WG) {
      let part = e / (RT * BK);
      let r = (e / BK) % RT;
      let j = e % BK;
      var s = 0.0;
      for (var cc = part * DC; cc < part * DC + DC; cc++) {
        s += dot(qs[r * RS4 + cc], sm[j * RS4 + cc]);
      }
      ss[(part * RT + r) * SS + j] = s;
    }
    workgroupBarrier();
    if (t < RT) {
      var mx = m_run;
      for (var j = 0u; j < BK; j++) {
        var s = ss[t * SS + j];
        for (var part = 1u; part < DS; part++) {
          s += ss[(part * RT + t) * SS + j];
        }
{{- if .SoftCap}}
        s = cap_score(s);
{{- end}}
        ss[t * SS + j] = s;
        if (key0 + j < lim && key0 + j >= w_lo) {
          mx = max(mx, s);
        }
      }
      var sum = 0.0;
      for (var j = 0u; j < BK; j++) {
        var pj = 0.0;
        if (key0 + j < lim && key0 + j >= w_lo) {
          pj = exp2(ss[t * SS + j] - mx);
        }
        ss[t * SS + j] = pj;
        sum += pj;
      }
      let alpha = exp2(m_run - mx);
      l_run = l_run * alpha + sum;
      m_run = mx;
      row_scale[t] = alpha;
    }
    workgroupBarrier();
    if (lane < KL) {
      for (var a = 0u; a < RT; a++) {
        acc[a] *= row_scale[a];
      }
      for (var i = 0u; i < KPL; i++) {  // constant trip count: the V loads can be issued together
        let j = lane + i * KL;
        if (j < BK && key0 + j < ks1) {
          let vv = ld_v4(v_base + kv_row(tb, key0 + j) * p.kv_tstride + c * 4u);
          for (var a = 0u; a < RT; a++) {
            acc[a] += ss[a * SS + j] * vv;
          }
        }
      }
    }
  }
  workgroupBarrier();
  if (lane < KL) {
    for (var a = 0u; a < RT; a++) {
      sm[(lane * RT + a) * D4 + c] = acc[a];
    }
  }
  workgroupBarrier();
  let base = (b * p.n_kvh + kvh) * p.n_rows;
  for (var e = t; e < RT * D4; e += WG) {
    let a = e / D4;
    let cc = e % D4;
    let R = row0 + a;
    if (R < p.n_rows) {
      var sum = sm[a * D4 + cc];
      for (var l = 1u; l < KL; l++) {
        sum += sm[(l * RT + a) * D4 + cc];
      }
      let i = p.part_off + ((base + R) * p.n_split + split) * D + cc * 4u;
      scratch[i] = sum.x;
      scratch[i + 1u] = sum.y;
      scratch[i + 2u] = sum.z;
      scratch[i + 3u] = sum.w;
    }
  }
  if (t < RT && row0 + t < p.n_rows) {
    let i = p.ml_off + ((base + row0 + t) * p.n_split + split) * 2u;
    scratch[i] = m_run;
    scratch[i + 1u] = l_run;
  }
}
