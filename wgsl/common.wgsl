// common.wgsl is prepended to every shader. Helpers here must be used or
// harmless when unused (WGSL allows unused functions).

// f16 values are stored two to a u32 (works without the shader-f16 feature).
// Element i of an f16 array stored as array<u32>.
fn ld_f16(v: u32, i: u32) -> f32 {
  let pair = unpack2x16float(v);
  return select(pair.x, pair.y, (i & 1u) == 1u);
}

{{/* attn_kv is shared by the attention kernels: K/V loads of four elements
     (f32, or f16 stored two per u32: i is even since f16 views start at even
     elements and D % 4 == 0) and, for paged attention, the block-table lookup. */}}
{{define "attn_kv"}}fn ld_k4(i: u32) -> vec4<f32> {
{{- if eq .KV "f16"}}
  let w = i >> 1u;  // i is even: f16 views start at even elements, D % 4 == 0
  return vec4<f32>(unpack2x16float(k[w]), unpack2x16float(k[w + 1u]));
{{- else}}
  return vec4<f32>(k[i], k[i + 1u], k[i + 2u], k[i + 3u]);
{{- end}}
}

fn ld_v4(i: u32) -> vec4<f32> {
{{- if eq .KV "f16"}}
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