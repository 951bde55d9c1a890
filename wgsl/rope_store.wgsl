// RoPE ({{.Mode}} layout) on the q and k rows of one step, with k and v
// written straight to their KV-cache slots ({{.Pool}} pool): what RoPE on q,
// RoPE on k and two row scatters did in four dispatches. q, k and v live in
// one buffer (the fused QKV projection's output), bound once.
//   q head: one thread per rotated pair (plus one per dim past n_rot), in
//           place, exactly as rope.wgsl;
//   k head: one thread per two consecutive output elements (one word of an
//           f16 pool), each element rotated from its pair as rope.wgsl does;
//   v head: one thread per two consecutive elements, copied.
// A q8_0 pool (ops/kv_pool.go) takes one thread per 32-value block of a
// token's K (or V) row instead: it rotates (or copies) the block's values,
// quantises them as ggml's quantize_row_q8_0_ref and stores eight quant
// words and its half of a scale word (atomically: the neighbouring block's
// writer shares the word).
// A token whose slot is past the pool (ops.ScatterSkip) writes no K/V.
struct Params {
  n: u32, heads: u32, kv_heads: u32, head_dim: u32,
  n_rot: u32, half_rot: u32, per_row: u32, q_off: u32,
  k_off: u32, v_off: u32, kp_off: u32, vp_off: u32,
  pool_rows: u32, s_off: u32, pos_off: u32, pos_base: u32,
  inv_2pi: f32, sc_off: u32, pad1: u32, pad2: u32,
  mscale: f32, ff_off: u32, ext_factor: f32, freq_scale: f32,  // see ops.ropeScaleParams
  corr_lo: f32, inv_span: f32, pad_s0: u32, pad_s1: u32,
  two_pi: vec4<f32>,
  lo: array<vec4<f32>, 4>,
  hi: array<vec4<f32>, 4>,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> kp: array<{{template "rope_store_pool" .}}>;
@group(0) @binding(3) var<storage, read_write> vp: array<{{template "rope_store_pool" .}}>;
@group(0) @binding(4) var<storage, read> slots: array<u32>;
{{- if .Positions}}
@group(0) @binding(5) var<storage, read> positions: array<u32>;
{{- end}}
{{- if .Factors}}
@group(0) @binding({{.BindFF}}) var<storage, read> freq_factors: array<f32>;
{{- end}}

const WG: u32 = {{.WG}}u;

{{template "rope_angle" .}}
// Element e of the head at xb after rotation at position pos.
fn rotated(xb: u32, e: u32, pos: u32) -> f32 {
  if (e >= p.n_rot) { return x[xb + e]; }
{{- if eq .Mode "neox"}}
  let first = e < p.half_rot;
  let pair = select(e - p.half_rot, e, first);
  let i0 = pair;
  let i1 = pair + p.half_rot;
{{- else}}
  let first = (e & 1u) == 0u;
  let pair = e >> 1u;
  let i0 = 2u * pair;
  let i1 = i0 + 1u;
{{- end}}
  let r = rotate_pair(x[xb + i0], x[xb + i1], pos, pair);
  return select(r.y, r.x, first);
}

{{- if eq .Pool "q8_0"}}
// Block blk of token's K (is_k) or V row, quantised into pool row slot.
fn store_block(is_k: bool, token: u32, slot: u32, blk: u32, pos: u32) {
  let kvrow = p.kv_heads * p.head_dim;
  var vals: array<vec4<f32>, 8>;
  var amax = 0.0;
  for (var g = 0u; g < 8u; g++) {
    var v4 = vec4<f32>(0.0);
    for (var c = 0u; c < 4u; c++) {
      let e = blk * 32u + g * 4u + c;  // in the token's row; a block may span two heads
      if (is_k) {
        let kh = e / p.head_dim;
        v4[c] = rotated(p.k_off + (token * p.kv_heads + kh) * p.head_dim, e - kh * p.head_dim, pos);
      } else {
        v4[c] = x[p.v_off + token * kvrow + e];
      }
    }
    vals[g] = v4;
    amax = max(amax, max(max(abs(v4.x), abs(v4.y)), max(abs(v4.z), abs(v4.w))));
  }
  let id = q8_inv_scale(amax);
  let q0 = (slot * kvrow + blk * 32u) >> 2u;  // the block's first quant word (whole pools: offset 0)
  let pb = slot * (kvrow >> 5u) + blk;        // the block's index in the pool
  let sw = p.sc_off + (pb >> 1u);
  let sbits = f16_bits_rne(amax / 127.0) << ((pb & 1u) * 16u);
  if (is_k) {
    for (var g = 0u; g < 8u; g++) {
      atomicStore(&kp[q0 + g], q8_pack(vals[g], id));
    }
    atomicAnd(&kp[sw], q8_keep_mask(pb));
    atomicOr(&kp[sw], sbits);
  } else {
    for (var g = 0u; g < 8u; g++) {
      atomicStore(&vp[q0 + g], q8_pack(vals[g], id));
    }
    atomicAnd(&vp[sw], q8_keep_mask(pb));
    atomicOr(&vp[sw], sbits);
  }
}
{{- else}}
fn store(pool_is_k: bool, i: u32, a: f32, b: f32) {
  // i: the first of two consecutive pool elements (even).
{{- if eq .Pool "f16"}}
  let w = pack2x16float(vec2<f32>(a, b));
  if (pool_is_k) { kp[i >> 1u] = w; } else { vp[i >> 1u] = w; }
{{- else}}
  if (pool_is_k) { kp[i] = a; kp[i + 1u] = b; } else { vp[i] = a; vp[i + 1u] = b; }
{{- end}}
}
{{- end}}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let t = (wid.y * nwg.x + wid.x) * WG + lid;
  let per_token = p.heads + 2u * p.kv_heads;
  if (t >= p.n * per_token * p.per_row) { return; }
  let row = t / p.per_row;
  let j = t - row * p.per_row;
  let token = row / per_token;
  let h = row - token * per_token;
{{- if .Positions}}
  let pos = positions[p.pos_off + token];
{{- else}}
  let pos = p.pos_base + token;
{{- end}}
  if (h < p.heads) {
    let xb = p.q_off + (token * p.heads + h) * p.head_dim;
    if (j >= p.half_rot) {
      return;  // dims past n_rot stay as they are (in place)
    }
{{- if eq .Mode "neox"}}
    let i0 = j;
    let i1 = j + p.half_rot;
{{- else}}
    let i0 = 2u * j;
    let i1 = i0 + 1u;
{{- end}}
    let r = rotate_pair(x[xb + i0], x[xb + i1], pos, j);
    x[xb + i0] = r.x;
    x[xb + i1] = r.y;
    return;
  }
{{- if eq .Pool "q8_0"}}
  // Threads of the token's K (or V) heads, in order, take its row's blocks.
  let is_k = h < p.heads + p.kv_heads;
  let blk = (h - p.heads - select(p.kv_heads, 0u, is_k)) * p.per_row + j;
  if (blk >= (p.kv_heads * p.head_dim) >> 5u) { return; }
  let slot = slots[p.s_off + token];
  if (slot >= p.pool_rows) { return; }
  store_block(is_k, token, slot, blk, pos);
{{- else}}
  if (2u * j >= p.head_dim) { return; }
  let slot = slots[p.s_off + token];
  if (slot >= p.pool_rows) { return; }
  let e = 2u * j;
  let kvrow = p.kv_heads * p.head_dim;
  if (h < p.heads + p.kv_heads) {
    let kh = h - p.heads;
    let xb = p.k_off + (token * p.kv_heads + kh) * p.head_dim;
    store(true, p.kp_off + slot * kvrow + kh * p.head_dim + e, rotated(xb, e, pos), rotated(xb, e + 1u, pos));
  } else {
    let vh = h - p.heads - p.kv_heads;
    let xb = p.v_off + (token * p.kv_heads + vh) * p.head_dim;
    store(false, p.vp_off + slot * kvrow + vh * p.head_dim + e, x[xb + e], x[xb + e + 1u]);
  }
{{- end}}
}
{{define "rope_store_pool"}}{{if eq .Pool "q8_0"}}atomic<u32>{{else if eq .Pool "f16"}}u32{{else}}f32{{end}}{{end}}
