// Merges the split-K partials of attention_split.wgsl: with M = max_s m_s,
// out = Σ_s 2^(m_s-M) O_s / Σ_s 2^(m_s-M) l_s, splits in order (a fixed
// reduction order). Splits that saw no key (l_s = 0) are skipped; a row
// that saw none at all gets zeros. One thread per vec4 of an output row:
// the (m_s, l_s) pairs are read once per four outputs, the partials as
// coalesced runs.
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
  softcap: f32, window: u32, sink_off: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> scratch: array<f32>;
@group(0) @binding(2) var<storage, read_write> o: array<f32>;
{{- if .Sinks}}
@group(0) @binding(3) var<storage, read> sinks: array<f32>;  // per head, natural-log units
{{- end}}

const WG: u32 = {{.WG}}u;
const D: u32 = {{.D}}u;
const D4: u32 = {{.D4}}u;
const LOW: f32 = -3.0e38;
const LOG2E: f32 = 1.4426950408889634;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
  let g = (wid.y * nwg.x + wid.x) * WG + t;
  if (g >= p.batch * p.n_kvh * p.n_rows * D4) { return; }
  let d = (g % D4) * 4u;
  let row = g / D4;  // (b·n_kvh + kvh)·n_rows + R
  let R = row % p.n_rows;
  let kvh = (row / p.n_rows) % p.n_kvh;
  let b = row / (p.n_rows * p.n_kvh);
  let base = row * p.n_split;
  var mx = LOW;
  for (var s = 0u; s < p.n_split; s++) {
    if (scratch[p.ml_off + (base + s) * 2u + 1u] > 0.0) {
      mx = max(mx, scratch[p.ml_off + (base + s) * 2u]);
    }
  }
{{- if .Sinks}}
  // gpt-oss's sink joins the max and the denominator, with no value.
  let sink = sinks[p.sink_off + kvh * p.group + R % p.group] * LOG2E;
  mx = max(mx, sink);
{{- end}}
  var l = 0.0;
  var acc = vec4<f32>(0.0);
  for (var s = 0u; s < p.n_split; s++) {
    let ls = scratch[p.ml_off + (base + s) * 2u + 1u];
    if (ls > 0.0) {
      let w = exp2(scratch[p.ml_off + (base + s) * 2u] - mx);
      let i = p.part_off + (base + s) * D + d;
      l += w * ls;
      acc += w * vec4<f32>(scratch[i], scratch[i + 1u], scratch[i + 2u], scratch[i + 3u]);
    }
  }
{{- if .Sinks}}
  l += exp2(sink - mx);
{{- end}}
  var y = vec4<f32>(0.0);
  if (l > 0.0) {
    y = acc / l;
  }
  let o0 = p.o_off + b * p.q_bstride + (R / p.group) * p.q_tstride + (kvh * p.group + R % p.group) * D + d;
  o[o0] = y.x;
  o[o0 + 1u] = y.y;
  o[o0 + 2u] = y.z;
  o[o0 + 3u] = y.w;
}
