// Merges the split-K partials of attention_split.wgsl: with M = max_s m_s,
// out = Σ_s 2^(m_s-M) O_s / Σ_s 2^(m_s-M) l_s. Splits that saw no key
// (l_s = 0) are skipped; a row that saw none at all gets zeros. One
// workgroup per output row: the (m_s, l_s) pairs are read once into
// workgroup memory, thread (g, c) sums the weighted partials of splits
// s ≡ g (mod SG) in order for vec4 column c (independent loads, all in
// flight), and the SG group sums are added in order: a fixed reduction
// order that depends only on the split index, so splits past a
// sequence's end (paged grids sized for longer ones) change nothing.
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
const SG: u32 = {{.SG}}u;  // WG / D4: split groups
const MS: u32 = {{.MS}}u;  // the most splits
const LOW: f32 = -3.0e38;
const LOG2E: f32 = 1.4426950408889634;

var<workgroup> wm: array<f32, MS>;  // m_s, then the weights 2^(m_s-M) (0: skipped)
var<workgroup> wl: array<f32, MS>;  // l_s
var<workgroup> part: array<vec4<f32>, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
  let row = wid.y * nwg.x + wid.x;  // (b·n_kvh + kvh)·n_rows + R
  if (row >= p.batch * p.n_kvh * p.n_rows) { return; }
  let R = row % p.n_rows;
  let kvh = (row / p.n_rows) % p.n_kvh;
  let b = row / (p.n_rows * p.n_kvh);
  let base = row * p.n_split;
  let ns = min(p.n_split, MS);
  for (var s = t; s < ns; s += WG) {
    wm[s] = scratch[p.ml_off + (base + s) * 2u];
    wl[s] = scratch[p.ml_off + (base + s) * 2u + 1u];
  }
  workgroupBarrier();
  var mx = LOW;
  for (var s = 0u; s < ns; s++) {
    if (wl[s] > 0.0) {
      mx = max(mx, wm[s]);
    }
  }
{{- if .Sinks}}
  // gpt-oss's sink joins the max and the denominator, with no value.
  let sink = sinks[p.sink_off + kvh * p.group + R % p.group] * LOG2E;
  mx = max(mx, sink);
{{- end}}
  workgroupBarrier();  // every m_s read
  for (var s = t; s < ns; s += WG) {
    wm[s] = select(0.0, exp2(wm[s] - mx), wl[s] > 0.0);
  }
  workgroupBarrier();
  let g = t / D4;
  let c = t % D4;
  var acc = vec4<f32>(0.0);
  if (g < SG) {
    for (var s = g; s < ns; s += SG) {
      let w = wm[s];
      if (w > 0.0) {
        let i = p.part_off + (base + s) * D + c * 4u;
        acc += w * vec4<f32>(scratch[i], scratch[i + 1u], scratch[i + 2u], scratch[i + 3u]);
      }
    }
  }
  part[t] = acc;
  workgroupBarrier();
  if (t < D4) {
    var l = 0.0;
    for (var s = 0u; s < ns; s++) {
      l += wm[s] * wl[s];
    }
{{- if .Sinks}}
    l += exp2(sink - mx);
{{- end}}
    var sum = part[t];
    for (var h = 1u; h < SG; h++) {
      sum += part[h * D4 + t];
    }
    var y = vec4<f32>(0.0);
    if (l > 0.0) {
      y = sum / l;
    }
    let o0 = p.o_off + b * p.q_bstride + (R / p.group) * p.q_tstride + (kvh * p.group + R % p.group) * D + t * 4u;
    o[o0] = y.x;
    o[o0 + 1u] = y.y;
    o[o0 + 2u] = y.z;
    o[o0 + 3u] = y.w;
  }
}
