// Flash attention, prefill variant: online softmax over key tiles, the
// score matrix never leaves workgroup memory.
//
// Rows: the queries of one (batch, kv head) times the G = heads/kv_heads
// query heads that share it; row R is query R / G, head kv_head*G + R % G.
// Packing the group into the rows lets one K/V tile serve all G heads.
// A workgroup owns BQ rows; per key tile of BK keys it
//   1. stages K (f32 in workgroup memory; f16 is widened on the way in),
//   2. computes S = Q·Kᵀ with a TQ×TK register tile per thread,
//   3. stages V over K while RP threads per row update the row's running
//      max m, sum l and rescale factor alpha = exp2(m_old - m_new),
//   4. rescales and accumulates O += P·V with an OQ×OV (vec4) register tile.
// Q is pre-multiplied by scale·log2(e), so exp2 gives the softmax weights.
// Every row's reductions run in a fixed order whatever tile the row lands
// in (fully masked key tiles are exact no-ops), so a row's result does not
// depend on the batch or on its neighbours.
// Paged (the .Paged variant, ops.AttentionPaged): k and v are block pools
// [n_blocks, BS, n_kvh, D]; batch element b is a sequence whose kv_len,
// pos0 and block-table row come from info[b] and whose key j lies in pool
// row tbl[row][j / BS]·BS + j % BS.
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
@group(0) @binding(4) var<storage, read_write> o: array<f32>;
{{- if .Paged}}
@group(0) @binding(5) var<storage, read> tbl: array<u32>;
@group(0) @binding(6) var<storage, read> info: array<u32>;
const BS: u32 = {{.BS}}u;    // tokens per pool block
{{- end}}
{{- if .Sinks}}
@group(0) @binding({{.BindSinks}}) var<storage, read> sinks: array<f32>;
{{- end}}

const BQ: u32 = {{.BQ}}u;
const BK: u32 = {{.BK}}u;
const D: u32 = {{.D}}u;
const D4: u32 = {{.D4}}u;
const RS4: u32 = {{.RS4}}u;  // row stride of Q/K/V tiles in vec4: D4 + 1 against bank conflicts
const SS: u32 = {{.SS}}u;    // row stride of the score tile: BK + 1
const WG: u32 = {{.WG}}u;
const TQ: u32 = {{.TQ}}u;
const TK: u32 = {{.TK}}u;
const SQN: u32 = {{.SQN}}u;  // BQ / TQ
const SKN: u32 = {{.SKN}}u;  // BK / TK
const OQ: u32 = {{.OQ}}u;
const OV: u32 = {{.OV}}u;
const OQN: u32 = {{.OQN}}u;  // BQ / OQ
const OCN: u32 = {{.OCN}}u;  // D4 / OV
const RP: u32 = {{.RP}}u;    // threads per row in the softmax update
// "Nothing seen yet": finite, so m_old - m_new is never NaN.
const LOW: f32 = -3.0e38;
const LOG2E: f32 = 1.4426950408889634;

var<workgroup> qs: array<vec4<f32>, {{.QSLen}}>;
var<workgroup> kvs: array<vec4<f32>, {{.KVLen}}>;
var<workgroup> ss: array<f32, {{.SSLen}}>;
var<workgroup> row_scale: array<f32, BQ>;  // alpha per tile, l at the end
var<workgroup> row_bad: array<u32, BQ>;    // at the end: 1 for a row that saw a non-finite score
var<workgroup> red_m: array<f32, {{.RedLen}}>;
var<workgroup> red_s: array<f32, {{.RedLen}}>;

{{template "attn_kv" .}}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
  let tile = wid.y * nwg.x + wid.x;
  if (tile >= p.row_tiles) { return; }  // uniform per workgroup
  let kvh = wid.z % p.n_kvh;
  let b = wid.z / p.n_kvh;
  let row0 = tile * BQ;
  let rows_here = min(BQ, p.n_rows - row0);
{{- if .Paged}}
  let si = seq_info(b);
  let kv_len = si.x;
  let pos0 = si.y;
  let tb = si.z;
  let k_base = p.k_off + kvh * D;
  let v_base = p.v_off + kvh * D;
{{- else}}
  let kv_len = p.kv_len;
  let pos0 = p.pos0;
  let tb = 0u;
  let k_base = p.k_off + b * p.kv_bstride + kvh * D;
  let v_base = p.v_off + b * p.kv_bstride + kvh * D;
{{- end}}
  var k_end = kv_len;
{{- if .Causal}}
  k_end = min(k_end, pos0 + (row0 + rows_here - 1u) / p.group + 1u);
{{- end}}
  let q_base = p.q_off + b * p.q_bstride;

  for (var e = t; e < BQ * D4; e += WG) {
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

  // Threads t < BQ·RP hold the softmax state of row sr = t / RP.
  let sr = t / RP;
  let sp = t % RP;
  var m_run = LOW;
  var l_run = 0.0;
  var bad = 0u;  // 1: a score this thread saw is not finite
  var lim = 0u;  // row sr sees keys [w_lo, lim)
  var w_lo = 0u;
  if (t < BQ * RP) {
    lim = kv_len;
{{- if .Causal}}
    lim = min(lim, pos0 + (row0 + sr) / p.group + 1u);
{{- end}}
{{- if .Window}}
    w_lo = win_lo(pos0 + (row0 + sr) / p.group);
{{- end}}
  }
  let sq = t / SKN;
  let sk = t % SKN;
  let oq = t / OCN;
  let oc = t % OCN;
  var acc: array<vec4<f32>, {{.OQV}}>;

  let n_tiles = (k_end + BK - 1u) / BK;
  var kt0 = 0u;  // key tiles before every row's window are skipped (exact no-ops)
{{- if .Window}}
  kt0 = win_lo(pos0 + row0 / p.group) / BK;
{{- end}}
  for (var kt = kt0; kt < n_tiles; kt++) {
    let key0 = kt * BK;
    workgroupBarrier();  // Q staged; the previous tile's V reads are done
    for (var e = t; e < BK * D4; e += WG) {
      let j = e / D4;
      let c = e % D4;
      var val = vec4<f32>(0.0);
      if (key0 + j < kv_len) {
        val = ld_k4(k_base + kv_row(tb, key0 + j) * p.kv_tstride + c * 4u);
      }
      kvs[j * RS4 + c] = val;
    }
    workgroupBarrier();
    if (t < SQN * SKN) {
      // Zeroed explicitly: naga hoists loop-local vars to function scope,
      // so a bare declaration would keep the previous tile's sums.
      var s: array<f32, {{.TQK}}>;
      for (var a = 0u; a < TQ * TK; a++) {
        s[a] = 0.0;
      }
      for (var c = 0u; c < D4; c++) {
        var qv: array<vec4<f32>, TQ>;
        for (var a = 0u; a < TQ; a++) {
          qv[a] = qs[(sq + a * SQN) * RS4 + c];
        }
        for (var bb = 0u; bb < TK; bb++) {
          let kv4 = kvs[(sk + bb * SKN) * RS4 + c];
          for (var a = 0u; a < TQ; a++) {
            s[a * TK + bb] += dot(qv[a], kv4);
          }
        }
      }
      for (var a = 0u; a < TQ; a++) {
        for (var bb = 0u; bb < TK; bb++) {
          ss[(sq + a * SQN) * SS + sk + bb * SKN] = {{if .SoftCap}}cap_score(s[a * TK + bb]){{else}}s[a * TK + bb]{{end}};
        }
      }
    }
    workgroupBarrier();
    for (var e = t; e < BK * D4; e += WG) {
      let j = e / D4;
      let c = e % D4;
      var val = vec4<f32>(0.0);  // zero past kv_len: 0·garbage could be NaN
      if (key0 + j < kv_len) {
        val = ld_v4(v_base + kv_row(tb, key0 + j) * p.kv_tstride + c * 4u);
      }
      kvs[j * RS4 + c] = val;
    }
    // Row softmax update, RP threads per row: each takes keys j ≡ sp
    // (mod RP); the partial maxima and sums are merged in part order, and
    // every thread of a row ends up with the same m_run and l_run.
    var mx = m_run;
    if (t < BQ * RP) {
      for (var i = 0u; i < BK / RP; i++) {
        let j = sp + i * RP;
        if (key0 + j < lim && key0 + j >= w_lo) {
          mx = max(mx, ss[sr * SS + j]);
          bad |= select(0u, 1u, non_finite(ss[sr * SS + j]));
        }
      }
      red_m[t] = mx;
    }
    workgroupBarrier();
    if (t < BQ * RP) {
      for (var u = 0u; u < RP; u++) {
        mx = max(mx, red_m[sr * RP + u]);
      }
      var sum = 0.0;
      for (var i = 0u; i < BK / RP; i++) {
        let j = sp + i * RP;
        var pj = 0.0;
        if (key0 + j < lim && key0 + j >= w_lo) {
          pj = exp2(ss[sr * SS + j] - mx);
        }
        ss[sr * SS + j] = pj;
        sum += pj;
      }
      red_s[t] = sum;
    }
    workgroupBarrier();
    if (t < BQ * RP) {
      var sum = 0.0;
      for (var u = 0u; u < RP; u++) {
        sum += red_s[sr * RP + u];
      }
      let alpha = exp2(m_run - mx);
      l_run = l_run * alpha + sum;
      m_run = mx;
      if (sp == 0u) {
        row_scale[sr] = alpha;
      }
    }
    workgroupBarrier();
    if (t < OQN * OCN) {
      for (var a = 0u; a < OQ; a++) {
        let al = row_scale[oq + a * OQN];
        for (var w = 0u; w < OV; w++) {
          acc[a * OV + w] *= al;
        }
      }
      for (var j = 0u; j < BK; j++) {
        for (var a = 0u; a < OQ; a++) {
          let pj = ss[(oq + a * OQN) * SS + j];
          for (var w = 0u; w < OV; w++) {
            acc[a * OV + w] += pj * kvs[j * RS4 + oc + w * OCN];
          }
        }
      }
    }
  }
  // A row any of whose RP threads saw a non-finite score is written NaN
  // (see non_finite): red_s is free again, and holds the flags.
  if (t < BQ * RP) {
    red_s[t] = f32(bad);
  }
  workgroupBarrier();
  if (t < BQ * RP && sp == 0u) {
    var rb = 0.0;
    for (var u = 0u; u < RP; u++) {
      rb += red_s[sr * RP + u];
    }
    row_bad[sr] = select(0u, 1u, rb > 0.5);
{{- if .Sinks}}
    // The sink joins the softmax: M = max(m, sink), denominator
    // l·2^(m-M) + 2^(sink-M); the output's factor 2^(m-M) goes to red_m.
    var sink = LOW;
    if (row0 + sr < p.n_rows) {
      sink = sinks[p.sink_off + kvh * p.group + (row0 + sr) % p.group] * LOG2E;
    }
    let mx = max(m_run, sink);
    let f = exp2(m_run - mx);
    red_m[sr] = f;
    row_scale[sr] = l_run * f + exp2(sink - mx);
{{- else}}
    row_scale[sr] = l_run;
{{- end}}
  }
  workgroupBarrier();
  if (t < OQN * OCN) {
    for (var a = 0u; a < OQ; a++) {
      let r = oq + a * OQN;
      let R = row0 + r;
      if (R < p.n_rows) {
        let l = row_scale[r];
        let ob = p.o_off + b * p.q_bstride + (R / p.group) * p.q_tstride + (kvh * p.group + R % p.group) * D;
        for (var w = 0u; w < OV; w++) {
          var val = vec4<f32>(0.0);
          if (l > 0.0) {
            val = {{if .Sinks}}acc[a * OV + w] * red_m[r] / l{{else}}acc[a * OV + w] / l{{end}};
          }
          val = select(val, vec4<f32>(nan_of(0u)), row_bad[r] != 0u);
          let i = ob + (oc + w * OCN) * 4u;
          o[i] = val.x;
          o[i + 1u] = val.y;
          o[i + 2u] = val.z;
          o[i + 3u] = val.w;
        }
      }
    }
  }
}
