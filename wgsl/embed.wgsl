// Embedding lookup, table {{.T}}: d[t, c] = table[ids[t], c]. This dispatch
// binds table rows [row_lo, row_hi) only; ids outside it are left to the
// dispatch that binds their rows, and ids >= vocab give zeros (written by
// the dispatch flagged zero_oov), so no id reads out of bounds.
struct Params {
  n_tokens: u32, dim: u32,
  t_off: u32, ids_off: u32,
  d_off: u32,
  row_lo: u32, row_hi: u32,
  vocab: u32,
  zero_oov: u32,
  total: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
// A table or ids in d's binding window (InDTable, InDIDs) is not bound: it
// is read as words of d (Dawn rejects overlapping writable bindings).
{{- if not .InDTable}}
@group(0) @binding(1) var<storage, {{if .AliasTable}}read_write{{else}}read{{end}}> table: array<{{if eq .T "f16"}}u32{{else}}f32{{end}}>;
{{- end}}
{{- if not .InDIDs}}
@group(0) @binding({{.BindIDs}}) var<storage, {{if .AliasIDs}}read_write{{else}}read{{end}}> ids: array<u32>;
{{- end}}
@group(0) @binding({{.BindD}}) var<storage, read_write> d: array<f32>;

const WG: u32 = {{.WG}}u;

fn table_at(i: u32) -> f32 {
{{- if eq .T "f16"}}
  return ld_f16({{if .InDTable}}bitcast<u32>(d[i >> 1u]){{else}}table[i >> 1u]{{end}}, i);
{{- else}}
  return {{if .InDTable}}d{{else}}table{{end}}[i];
{{- end}}
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let t = (wid.y * nwg.x + wid.x) * WG + lid;
  if (t >= p.total) { return; }
  let tok = t / p.dim;
  let c = t - tok * p.dim;
  let id = {{if .InDIDs}}bitcast<u32>(d[p.ids_off + tok]){{else}}ids[p.ids_off + tok]{{end}};
  if (id >= p.row_lo && id < p.row_hi) {
    d[p.d_off + t] = table_at(p.t_off + (id - p.row_lo) * p.dim + c);
  } else if (id >= p.vocab && p.zero_oov == 1u) {
    d[p.d_off + t] = 0.0;
  }
}
