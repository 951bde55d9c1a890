// Copy a rows x cols block, {{.Src}} -> {{.Dst}}:
// d[d_off + r*d_stride + c] = s[s_off + r*s_stride + c].
{{- if eq .Dst "f16"}}
// Two f16 share a u32 word and WGSL has no 16-bit stores, so one thread owns
// each destination word: the thread of the row holding the word's first
// copied half. It writes both halves, or merges the one it copies into the
// word's old value when the other half lies outside the block. No two
// threads ever store to one word.
{{- end}}
struct Params {
  rows: u32, cols: u32,
  s_off: u32, s_stride: u32,
  d_off: u32, d_stride: u32,
  per_row: u32, total: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
{{- if .SameSrc}}
// src lies in d's binding (same buffer and type): read through d.
@group(0) @binding(1) var<storage, read_write> d: array<{{if eq .Dst "f32"}}f32{{else}}u32{{end}}>;
{{- else}}
@group(0) @binding(1) var<storage, {{if .AliasSrc}}read_write{{else}}read{{end}}> s: array<{{if eq .Src "f32"}}f32{{else}}u32{{end}}>;
@group(0) @binding(2) var<storage, read_write> d: array<{{if eq .Dst "f32"}}f32{{else}}u32{{end}}>;
{{- end}}

const WG: u32 = {{.WG}}u;

{{- if ne .Src "u32"}}
// Element (r, c) of the source block, as f32.
fn load_f32(r: u32, c: u32) -> f32 {
  let i = p.s_off + r * p.s_stride + c;
{{- if eq .Src "f16"}}
  return ld_f16({{if $.SameSrc}}d{{else}}s{{end}}[i >> 1u], i);
{{- else}}
  return {{if $.SameSrc}}d{{else}}s{{end}}[i];
{{- end}}
}

// Element (r, c) of the source block as f16 bits (f16 sources copied raw).
fn load_bits(r: u32, c: u32) -> u32 {
  let i = p.s_off + r * p.s_stride + c;
{{- if eq .Src "f16"}}
  return ({{if $.SameSrc}}d{{else}}s{{end}}[i >> 1u] >> ((i & 1u) * 16u)) & 0xffffu;
{{- else}}
  return pack2x16float(vec2<f32>({{if $.SameSrc}}d{{else}}s{{end}}[i], 0.0)) & 0xffffu;
{{- end}}
}
{{- end}}

// Which block row and column a destination half belongs to; ok is false
// for halves outside the block (before it, in a stride gap, after it).
struct Where { r: u32, c: u32, ok: bool }
fn where_half(h: u32) -> Where {
  if (h < p.d_off) { return Where(0u, 0u, false); }
  let rel = h - p.d_off;
  let r = rel / p.d_stride;
  let c = rel - r * p.d_stride;
  return Where(r, c, r < p.rows && c < p.cols);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let t = (wid.y * nwg.x + wid.x) * WG + lid;
  if (t >= p.total) { return; }
  let r = t / p.per_row;
  let j = t - r * p.per_row;
{{- if eq .Dst "f16"}}
  let start = p.d_off + r * p.d_stride;  // first half of row r
  let w = (start >> 1u) + j;             // the word this thread may own
  if (2u * w > start + p.cols - 1u) { return; }  // past the row's end
  let a = where_half(2u * w);
  let b = where_half(2u * w + 1u);
  let owner = select(b.r, a.r, a.ok);    // row of the first copied half
  if (owner != r) { return; }
  if (a.ok && b.ok) {
    d[w] = load_bits(a.r, a.c) | (load_bits(b.r, b.c) << 16u);
  } else if (a.ok) {
    d[w] = (d[w] & 0xffff0000u) | load_bits(a.r, a.c);
  } else {
    d[w] = (d[w] & 0x0000ffffu) | (load_bits(b.r, b.c) << 16u);
  }
{{- else if eq .Dst "u32"}}
  d[p.d_off + r * p.d_stride + j] = {{if .SameSrc}}d{{else}}s{{end}}[p.s_off + r * p.s_stride + j];  // raw words
{{- else}}
  d[p.d_off + r * p.d_stride + j] = load_f32(r, j);
{{- end}}
}
