// Scatter rows, {{.Src}} -> {{.Dst}}: d[idx[i]·cols + c] = s[i·cols + c] for
// every source row i whose index is in range (idx[i] < d_rows); other rows
// are skipped. One thread per destination {{if eq .Dst "q8_0"}}block of 32 values (a q8_0 KV pool,
// ops/kv_pool.go: quantised as ggml's quantize_row_q8_0_ref; the scale word
// two blocks share is updated atomically, half by half){{else if eq .Dst "f16"}}word (two halves: rows are whole
// words, so no thread touches another's word){{else}}element{{end}}.
struct Params {
  n: u32, cols: u32, d_rows: u32, per_row: u32,
  s_off: u32, d_off: u32, i_off: u32, sc_off: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> s: array<{{if eq .Src "f16"}}u32{{else}}f32{{end}}>;
@group(0) @binding(2) var<storage, read> idx: array<u32>;
@group(0) @binding(3) var<storage, read_write> d: array<{{if eq .Dst "q8_0"}}atomic<u32>{{else if eq .Dst "f16"}}u32{{else}}f32{{end}}>;

const WG: u32 = {{.WG}}u;

// Element j of the source, as f32.
fn load(j: u32) -> f32 {
{{- if eq .Src "f16"}}
  return ld_f16(s[j >> 1u], j);
{{- else}}
  return s[j];
{{- end}}
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let t = (wid.y * nwg.x + wid.x) * WG + lid;
  if (t >= p.n * p.per_row) { return; }
  let i = t / p.per_row;
  let w = t - i * p.per_row;
  let row = idx[p.i_off + i];
  if (row >= p.d_rows) { return; }
  let src = p.s_off + i * p.cols;
{{- if eq .Dst "q8_0"}}
  var vals: array<vec4<f32>, 8>;
  var amax = 0.0;
  for (var g = 0u; g < 8u; g++) {
    let e = src + 32u * w + 4u * g;
    let v4 = vec4<f32>(load(e), load(e + 1u), load(e + 2u), load(e + 3u));
    vals[g] = v4;
    amax = max(amax, max(max(abs(v4.x), abs(v4.y)), max(abs(v4.z), abs(v4.w))));
  }
  let id = q8_inv_scale(amax);
  let q0 = (row * p.cols + 32u * w) >> 2u;  // whole pools: offset 0
  for (var g = 0u; g < 8u; g++) {
    atomicStore(&d[q0 + g], q8_pack(vals[g], id));
  }
  let pb = row * p.per_row + w;  // the block's index in the pool
  let sw = p.sc_off + (pb >> 1u);
  atomicAnd(&d[sw], q8_keep_mask(pb));
  atomicOr(&d[sw], f16_bits_rne(amax / 127.0) << ((pb & 1u) * 16u));
{{- else if eq .Dst "f16"}}
{{- if eq .Src "f16"}}
  // f16 to f16: copy the bits (no rounding through f32 and back).
  let a = src + 2u * w;
  var bits: u32;
  if ((a & 1u) == 0u) {
    bits = s[a >> 1u];
  } else {
    bits = (s[a >> 1u] >> 16u) | (s[(a >> 1u) + 1u] << 16u);
  }
  d[(p.d_off >> 1u) + row * (p.cols >> 1u) + w] = bits;
{{- else}}
  d[(p.d_off >> 1u) + row * (p.cols >> 1u) + w] = pack2x16float(vec2<f32>(load(src + 2u * w), load(src + 2u * w + 1u)));
{{- end}}
{{- else}}
  d[p.d_off + row * p.cols + w] = load(src + w);
{{- end}}
}
