// common.wgsl is prepended to every shader. Helpers here must be used or
// harmless when unused (WGSL allows unused functions).

// f16 values are stored two to a u32 (works without the shader-f16 feature).
// Element i of an f16 array stored as array<u32>.
fn ld_f16(v: u32, i: u32) -> f32 {
  let pair = unpack2x16float(v);
  return select(pair.x, pair.y, (i & 1u) == 1u);
}

// Inf or NaN, by the bits: float comparisons with NaN are not reliable
// (drivers may assume finite values, and llvmpipe's exp2(NaN) is 0), so
// the attention kernels flag non-finite scores this way and write NaN
// outright, for the logits' non-finite check to fail the request.
fn non_finite(x: f32) -> bool { return (bitcast<u32>(x) & 0x7f800000u) == 0x7f800000u; }
// A NaN built from a run-time value (WGSL forbids NaN constants); z is 0.
fn nan_of(z: u32) -> f32 { return bitcast<f32>(0x7fc00000u | z); }

// q8_0 KV pools (ops/kv_pool.go): ggml's block_q8_0 of 32 values, as
// quantize_row_q8_0_ref computes it: d = amax/127 stored as f16 (rounded
// to nearest even, as GGML_FP32_TO_FP16), q = roundf(x·(1/d)) with the
// f32 reciprocal of the unrounded d; decoded q·f16(d).

// The f32 reciprocal ggml multiplies by (0 for an all-zero block).
fn q8_inv_scale(amax: f32) -> f32 {
  let d = amax / 127.0;
  return select(0.0, 1.0 / d, d != 0.0);
}

// Four values quantised with reciprocal id into four int8 bytes (C's roundf:
// halves away from zero, not WGSL's round, which goes to even).
fn q8_pack(x: vec4<f32>, id: f32) -> u32 {
  let v = x * id;
  let t = trunc(v);
  let r = t + select(vec4<f32>(0.0), sign(v), abs(v - t) >= vec4<f32>(0.5));
  let b = bitcast<vec4<u32>>(vec4<i32>(clamp(r, vec4<f32>(-128.0), vec4<f32>(127.0)))) & vec4<u32>(0xffu);
  return b.x | (b.y << 8u) | (b.z << 16u) | (b.w << 24u);
}

// Four int8 bytes, sign-extended, as f32.
fn q8_unpack(w: u32) -> vec4<f32> {
  let s = vec4<i32>(bitcast<i32>(w << 24u), bitcast<i32>(w << 16u), bitcast<i32>(w << 8u), bitcast<i32>(w));
  return vec4<f32>(s >> vec4<u32>(24u));
}

// The scale of value i's block from its scale word (two f16 per word). A
// device may flush a subnormal scale (a block whose largest value is below
// 127·2^-14 ≈ 0.0078) to zero: an error below that value.
fn q8_scale_of(w: u32, i: u32) -> f32 {
  let s = unpack2x16float(w);
  return select(s.x, s.y, ((i >> 5u) & 1u) == 1u);
}

// The f16 bits of a non-negative f32, rounded to nearest even, subnormals
// and overflow to infinity included (pack2x16float may round either way).
fn f16_bits_rne(f: f32) -> u32 {
  let b = bitcast<u32>(f);
  let e = i32(b >> 23u) - 112;  // the f16 biased exponent
  if (e >= 31) { return 0x7c00u; }
  if (e <= 0) {
    if (e < -10) { return 0u; }  // below 2^-25: rounds to zero
    let m = (b & 0x7fffffu) | 0x800000u;
    let sh = u32(14 - e);        // to units of 2^-24
    let q = m >> sh;
    let rem = m & ((1u << sh) - 1u);
    let hf = 1u << (sh - 1u);
    return q + select(0u, 1u, rem > hf || (rem == hf && (q & 1u) == 1u));
  }
  let m = b & 0x7fffffu;
  let r = (u32(e) << 10u) | (m >> 13u);
  let rem = m & 0x1fffu;
  return r + select(0u, 1u, rem > 0x1000u || (rem == 0x1000u && (r & 1u) == 1u));  // a carry moves the exponent
}

// The mask that keeps the other half of a scale word when block blk's half
// is replaced (writers clear their half with atomicAnd, then atomicOr it).
fn q8_keep_mask(blk: u32) -> u32 { return select(0xffff0000u, 0x0000ffffu, (blk & 1u) == 1u); }

{{/* attn_kv is shared by the attention kernels: K/V loads of four elements
     (f32, f16 stored two per u32: i is even since f16 views start at even
     elements and D % 4 == 0, or q8_0 dequantised in registers) and, for
     paged attention, the block-table lookup. */}}
{{define "attn_kv"}}fn ld_k4(i: u32) -> vec4<f32> {
{{- if eq .KV "q8_0"}}
  // q8_0 pool (ops/kv_pool.go): i is the value index (the pool is bound
  // from its start, i % 4 == 0); its quants are word i/4, its block's scale
  // half (i/32)&1 of word kv_sc_off + i/64.
  return q8_unpack(k[i >> 2u]) * q8_scale_of(k[p.kv_sc_off + (i >> 6u)], i);
{{- else if eq .KV "f16"}}
  let w = i >> 1u;  // i is even: f16 views start at even elements, D % 4 == 0
  return vec4<f32>(unpack2x16float(k[w]), unpack2x16float(k[w + 1u]));
{{- else}}
  return vec4<f32>(k[i], k[i + 1u], k[i + 2u], k[i + 3u]);
{{- end}}
}

fn ld_v4(i: u32) -> vec4<f32> {
{{- if eq .KV "q8_0"}}
  return q8_unpack(v[i >> 2u]) * q8_scale_of(v[p.kv_sc_off + (i >> 6u)], i);
{{- else if eq .KV "f16"}}
  let w = i >> 1u;
  return vec4<f32>(unpack2x16float(v[w]), unpack2x16float(v[w + 1u]));
{{- else}}
  return vec4<f32>(v[i], v[i + 1u], v[i + 2u], v[i + 3u]);
{{- end}}
}

{{- if .Paged}}
// (kv_len, pos0, start of the table row) of sequence b, clamped so that a
// bad info entry reads neither past its table row nor past the table.
fn seq_info(b: u32) -> vec3<u32> {
  let i = p.info_off + b * 3u;
  let row = min(info[i + 2u], p.tbl_rows - 1u);
  return vec3<u32>(min(info[i], p.tbl_stride * BS), info[i + 1u], p.tbl_off + row * p.tbl_stride);
}

// Pool row of key j of the sequence whose table row starts at tb; a bad
// block id is clamped into the pool.
fn kv_row(tb: u32, j: u32) -> u32 {
  return min(tbl[tb + j / BS], p.n_blocks - 1u) * BS + j % BS;
}
{{- else}}
fn kv_row(tb: u32, j: u32) -> u32 { return j; }
{{- end}}
{{- if .Window}}

// First key a query at pos sees in a sliding window: key j is masked when
// pos - j >= window (llama.cpp LLAMA_SWA_TYPE_STANDARD).
fn win_lo(pos: u32) -> u32 { return select(0u, pos + 1u - p.window, pos >= p.window); }
{{- end}}
{{- if .SoftCap}}

// The soft-capped score in log2 units: q was scaled by scale/cap, so
// s = cap·log2(e)·tanh(q·k).
fn cap_score(s: f32) -> f32 { return p.softcap * tanh_stable(s); }
{{- end}}
{{end}}

// silu(x) = x * sigmoid(x), with sigmoid from e = exp(-|x|) in (0, 1]: no
// overflow to inf, so no inf/inf = NaN at large |x|.
fn silu(x: f32) -> f32 {
  let e = exp(-abs(x));
  let s = select(e / (1.0 + e), 1.0 / (1.0 + e), x >= 0.0);
  return x * s;
}

// sigmoid(x) as silu computes it: from e = exp(-|x|), never inf/inf.
fn sigmoid(x: f32) -> f32 {
  let e = exp(-abs(x));
  return select(e / (1.0 + e), 1.0 / (1.0 + e), x >= 0.0);
}

// tanh without overflow for any finite x (the builtin may compute
// sinh/cosh and give NaN at large |x| on some drivers): a Taylor series to
// x^11 below |x| = 1/4 (truncation < 3e-10 relative, where (1-e)/(1+e)
// would cancel), else sign(x)(1-e)/(1+e) with e = exp(-2|x|) in (0, 0.61).
fn tanh_stable(x: f32) -> f32 {
  let a = abs(x);
  if (a < 0.25) {
    let z = x * x;
    return x * (1.0 + z * (-0.33333333 + z * (0.13333333 + z * (-0.053968254 + z * (0.021869489 + z * -0.0088632355)))));
  }
  let e = exp(-2.0 * a);
  return sign(x) * ((1.0 - e) / (1.0 + e));
}

// Gated FFN activations act(gate, up) (ops.Activation), shared by the
// elementwise op and the fused Pair matvecs so both paths agree.
fn act_silu(g: f32, u: f32) -> f32 { return silu(g) * u; }

// gelu (tanh form) as x·sigmoid(2·sqrt(2/π)(x + 0.044715x³)), which equals
// 0.5x(1 + tanh(sqrt(2/π)(x + 0.044715x³))).
fn act_gelu(g: f32, u: f32) -> f32 {
  let t = 1.5957691 * g * (1.0 + 0.044715 * g * g);
  return g * sigmoid(t) * u;
}

// gpt-oss's clamped SwiGLU (ggml_swiglu_oai, alpha 1.702, limit 7).
fn act_swiglu_oai(g: f32, u: f32) -> f32 {
  let x = min(g, 7.0);
  let y = clamp(u, -7.0, 7.0);
  return x * sigmoid(1.702 * x) * (y + 1.0);
}

{{/* rope_angle is shared by the RoPE kernels (rope.wgsl, rope_store.wgsl):
     the rotation of one pair, from the Params fields lo, hi, inv_2pi and
     two_pi. It must match RoPEOpts.Angle on the host exactly. */}}
{{define "rope_angle"}}fn angle(pos: u32, pair: u32) -> f32 {
  let lo = pair & 15u;
  let hi = pair >> 4u;
  var inv_freq = p.lo[lo >> 2u][lo & 3u] * p.hi[hi >> 2u][hi & 3u];
{{- if .YaRN}}
  // YaRN (ggml rope_yarn): mix interpolation (freq_scale) and extrapolation
  // (1) by the ramp between the correction dims.
  let y = (f32(pair) - p.corr_lo) * p.inv_span;
  let r = (1.0 - clamp(y, 0.0, 1.0)) * p.ext_factor;
  inv_freq = inv_freq * (p.freq_scale * (1.0 - r) + r);
{{- end}}
{{- if .Factors}}
  inv_freq = inv_freq / freq_factors[p.ff_off + pair];
{{- end}}
  return f32(pos) * inv_freq;
}

// Cody-Waite reduction to [-π, π], where sin and cos are specified (without
// it, an H100's results missed the f32 tolerance at angles of 100 rad).
// For k < 2^16 the products k*part are exact and so is the first
// subtraction (Sterbenz), so the result is within a few ulp of π of
// theta - 2πk whatever theta's size.
fn reduce_angle(theta: f32) -> f32 {
  let k = round(theta * p.inv_2pi);
  return (((theta - k * p.two_pi.x) - k * p.two_pi.y) - k * p.two_pi.z) - k * p.two_pi.w;
}

// Pair (x0, x1) turned by pair's angle at pos, scaled by mscale (ggml's
// cos·mscale and sin·mscale; 1 scales exactly). Angle 0 (position 0) is
// exactly the identity (times mscale), whatever cos and sin give.
fn rotate_pair(x0: f32, x1: f32, pos: u32, pair: u32) -> vec2<f32> {
  let theta = angle(pos, pair);
  let r = reduce_angle(theta);
  let c = cos(r) * p.mscale;
  let s = sin(r) * p.mscale;
  return select(vec2<f32>(x0 * c - x1 * s, x0 * s + x1 * c), vec2<f32>(x0, x1) * p.mscale, theta == 0.0);
}
{{end}}