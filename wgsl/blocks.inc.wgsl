{{/* Block decoders of the GGUF weight types, shared by every kernel that
reads quantised weights in place (dequant.wgsl, matmul_quant.wgsl):
{{template "blocks" .}} with .T (the type), .BS, .BB and .PPB (ops.quantLayout)
and a binding W: array<u32> holding the blocks.

The weight binding is array<u32>; blocks sit at arbitrary even byte offsets
(18, 22, 34, 110, 210-byte blocks; any byte offset for mxfp4's 17), so
every block read assembles its bytes from whole words. A block is cut into
PPB "pieces" (one lane's work: 32 or 64 elements, or 8 bf16 values). Each
type defines
  St                  what one piece's loads leave in registers,
  load(o, sub) -> St  the loads of piece sub of the block at W byte o,
  grp(st, sub, j)     the four weights of group j < G of the piece,
  gel(sub, j)         where group j's four consecutive elements start in
                      the block,
  at16(r) -> (sub, j) block types: the piece and first of the four groups
                      that hold the 16 consecutive elements r .. r+15 of a
                      block (r a multiple of 16), in that order.
The matvec on GPUs calls grp with constant j (the template unrolls the
groups, so the selects on j fold away); elsewhere j is a loop. Decoding
follows ggml's dequantize_row_* in float32; every product it forms is exact
in float32 (at most 24 significant bits), so fused multiply-adds cannot
change a value and the dequantised values match the CPU reference bit for
bit. */}}
{{- define "blocks"}}
const BS: u32 = {{.BS}}u;   // elements per block
const BB: u32 = {{.BB}}u;   // bytes per block (bf16: halves per pseudo-block)
const PPB: u32 = {{.PPB}}u; // pieces per block

// --- byte helpers -----------------------------------------------------------

// f16 bits to f32, exactly (subnormals included, whatever the GPU does with
// denormals in unpack2x16float).
fn f16f(h: u32) -> f32 {
  let s = (h & 0x8000u) << 16u;
  let e = (h >> 10u) & 0x1fu;
  let m = h & 0x3ffu;
  let sub = f32(m) * 5.9604644775390625e-8; // m * 2^-24, exact
  let normal = bitcast<f32>(s | ((e + 112u) << 23u) | (m << 13u));
  let special = bitcast<f32>(s | 0x7f800000u | (m << 13u));
  return select(select(normal, special, e == 31u), select(sub, -sub, s != 0u), e == 0u);
}
fn lo16(a: u32) -> u32 { return a & 0xffffu; }
fn hi16(a: u32) -> u32 { return a >> 16u; }
// The 4 bytes starting 2 bytes into a: the word at a 2-mod-4 byte offset.
fn mid(a: u32, b: u32) -> u32 { return (a >> 16u) | (b << 16u); }
fn byte(a: u32, i: u32) -> u32 { return (a >> (8u * i)) & 0xffu; }
// The four bytes of a word as 2^23 + byte: OR-ing a byte into the mantissa
// of 2^23 is cheaper than an int-to-float conversion, and subtracting 2^23
// (plus any offset) afterwards is exact.
const MAGIC: f32 = 8388608.0;
fn u8x4m(a: u32) -> vec4<f32> {
  return bitcast<vec4<f32>>(vec4<u32>(a & 0xffu, (a >> 8u) & 0xffu, (a >> 16u) & 0xffu, a >> 24u) | vec4<u32>(0x4b000000u));
}
// Signed bytes, exactly.
fn i8x4(a: u32) -> vec4<f32> { return u8x4m(a ^ 0x80808080u) - (MAGIC + 128.0); }
// 16 bytes at an even byte offset (five word loads, no divergence).
fn ld16(o: u32) -> vec4<u32> {
  let i = o >> 2u;
  let a = W[i]; let b = W[i + 1u]; let c = W[i + 2u]; let e = W[i + 3u]; let f = W[i + 4u];
  return select(vec4<u32>(mid(a, b), mid(b, c), mid(c, e), mid(e, f)), vec4<u32>(a, b, c, e), (o & 2u) == 0u);
}
// 12 bytes at an even byte offset.
fn ld12(o: u32) -> vec3<u32> {
  let i = o >> 2u;
  let a = W[i]; let b = W[i + 1u]; let c = W[i + 2u]; let e = W[i + 3u];
  return select(vec3<u32>(mid(a, b), mid(b, c), mid(c, e)), vec3<u32>(a, b, c), (o & 2u) == 0u);
}
// The u16 at an even byte offset.
fn ld2(o: u32) -> u32 { return (W[o >> 2u] >> ((o & 2u) * 8u)) & 0xffffu; }
{{- if or (eq .T "iq4_nl") (eq .T "iq4_xs")}}
// kvalues_iq4nl[n] for the four nibbles n in the low bits of a's bytes: the
// table plus 128 is 16 bytes, four words; pick the word by bits 2-3 of n,
// the byte by bits 0-1.
fn iq4x4(a: u32) -> vec4<f32> {
  let n = (vec4<u32>(a) >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(0xfu);
  let hi = (n & vec4<u32>(4u)) != vec4<u32>(0u);
  let w = select(select(vec4<u32>(0x3f2d1801u), vec4<u32>(0x766a5d4fu), hi),
                 select(vec4<u32>(0xa6998d81u), vec4<u32>(0xf1d9c5b5u), hi), n >= vec4<u32>(8u));
  let b = (w >> (8u * (n & vec4<u32>(3u)))) & vec4<u32>(0xffu);
  return bitcast<vec4<f32>>(b | vec4<u32>(0x4b000000u)) - (MAGIC + 128.0);
}
{{- end}}
// Spread the low 4 bits of h to bit 0 of each byte.
fn bits4(h: u32) -> u32 {
  return (h & 1u) | ((h & 2u) << 7u) | ((h & 4u) << 14u) | ((h & 8u) << 21u);
}

// --- piece decoders ---------------------------------------------------------
{{- if or (eq .T "q4_0") (eq .T "iq4_nl")}}
// block_q4_0 {d f16; qs[16]}: element j < 16 is the low nibble of qs[j],
// element j + 16 the high nibble; value (q - 8) * d. A piece is a block.
// block_iq4_nl has the same layout; its nibbles index kvalues_iq4nl.
struct St { q: vec4<u32>, d: f32 }
const G: u32 = 8u;
fn load(o: u32, sub: u32) -> St {
  let i = o >> 2u;
  let a0 = W[i]; let a1 = W[i + 1u]; let a2 = W[i + 2u]; let a3 = W[i + 3u]; let a4 = W[i + 4u];
  let al = (o & 2u) == 0u;
  return St(select(vec4<u32>(a1, a2, a3, a4), vec4<u32>(mid(a0, a1), mid(a1, a2), mid(a2, a3), mid(a3, a4)), al),
            f16f(select(hi16(a0), lo16(a0), al)));
}
fn gel(sub: u32, j: u32) -> u32 { return 4u * j; }
fn at16(r: u32) -> vec2<u32> { return vec2<u32>(0u, r >> 2u); }
fn grp(s: St, sub: u32, j: u32) -> vec4<f32> {
{{- if eq .T "iq4_nl"}}
  return iq4x4((s.q[j & 3u] >> (4u * (j >> 2u))) & 0x0f0f0f0fu) * s.d;
{{- else}}
  return (u8x4m((s.q[j & 3u] >> (4u * (j >> 2u))) & 0x0f0f0f0fu) - (MAGIC + 8.0)) * s.d;
{{- end}}
}
{{- else if eq .T "iq4_xs"}}
// block_iq4_xs {d f16; scales_h u16; scales_l[4]; qs[128]} (136 bytes: word
// aligned). Sub-block sb of 32 elements (a piece): 6-bit scale ls = nibble
// sb of scales_l | bits 2sb of scales_h << 4; nibbles of qs[16sb ..] laid
// out as in iq4_nl; value d * (ls - 32) * kvalues_iq4nl[q].
struct St { q: vec4<u32>, dl: f32 }
const G: u32 = 8u;
fn load(o: u32, sub: u32) -> St {
  let i = o >> 2u;
  let w0 = W[i];
  let ls = ((W[i + 1u] >> (4u * sub)) & 0xfu) | (((hi16(w0) >> (2u * sub)) & 3u) << 4u);
  let qi = i + 2u + 4u * sub;
  return St(vec4<u32>(W[qi], W[qi + 1u], W[qi + 2u], W[qi + 3u]), f16f(lo16(w0)) * f32(i32(ls) - 32));
}
fn gel(sub: u32, j: u32) -> u32 { return 32u * sub + 4u * j; }
fn at16(r: u32) -> vec2<u32> { return vec2<u32>(r >> 5u, 4u * ((r >> 4u) & 1u)); }
fn grp(s: St, sub: u32, j: u32) -> vec4<f32> {
  return iq4x4((s.q[j & 3u] >> (4u * (j >> 2u))) & 0x0f0f0f0fu) * s.dl;
}
{{- else if eq .T "mxfp4"}}
// block_mxfp4 {e E8M0; qs[16]} (17 bytes: any byte offset). Element j < 16
// is the low nibble of qs[j], j + 16 the high nibble: an E2M1 value, which
// ggml keeps doubled (kvalues_mxfp4) with the scale halved: 2^(e - 128),
// built from bits as ggml_e8m0_to_fp32_half builds it.
struct St { q: vec4<u32>, d: f32 }
const G: u32 = 8u;
fn load(o: u32, sub: u32) -> St {
  let i = o >> 2u;
  let a0 = W[i]; let a1 = W[i + 1u]; let a2 = W[i + 2u]; let a3 = W[i + 3u]; let a4 = W[i + 4u];
  let s = o & 3u;
  // qs starts s + 1 bytes into a0: a funnel shift of the five words, or
  // exactly a1..a4 when s = 3.
  let r = (8u * (s + 1u)) & 31u;
  let l = (32u - r) & 31u;
  let q = select(vec4<u32>((a0 >> r) | (a1 << l), (a1 >> r) | (a2 << l), (a2 >> r) | (a3 << l), (a3 >> r) | (a4 << l)),
                 vec4<u32>(a1, a2, a3, a4), s == 3u);
  let e = byte(a0, s);
  let d = bitcast<f32>(select((e - 1u) << 23u, 0x00200000u << e, e < 2u));
  return St(q, d);
}
fn gel(sub: u32, j: u32) -> u32 { return 4u * j; }
fn at16(r: u32) -> vec2<u32> { return vec2<u32>(0u, r >> 2u); }
fn grp(s: St, sub: u32, j: u32) -> vec4<f32> {
  // Four nibbles: magnitudes 0, 1, 2, 3, 4, 6, 8, 12 (nibble & 7) from one
  // packed word, sign bit 3 (nibble 8 is +0, as ggml's int8 0 is).
  let n = (vec4<u32>((s.q[j & 3u] >> (4u * (j >> 2u)))) >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(0xfu);
  let m = bitcast<vec4<f32>>(((vec4<u32>(0xc8643210u) >> (4u * (n & vec4<u32>(7u)))) & vec4<u32>(0xfu)) | vec4<u32>(0x4b000000u)) - MAGIC;
  return select(m, -m, n > vec4<u32>(8u)) * s.d;
}
{{- else if eq .T "q4_1"}}
// block_q4_1 {d, m f16; qs[16]} (20 bytes: always word aligned): q * d + m.
struct St { q: vec4<u32>, d: f32, m: f32 }
const G: u32 = 8u;
fn load(o: u32, sub: u32) -> St {
  let i = o >> 2u;
  let dm = W[i];
  return St(vec4<u32>(W[i + 1u], W[i + 2u], W[i + 3u], W[i + 4u]), f16f(lo16(dm)), f16f(hi16(dm)));
}
fn gel(sub: u32, j: u32) -> u32 { return 4u * j; }
fn at16(r: u32) -> vec2<u32> { return vec2<u32>(0u, r >> 2u); }
fn grp(s: St, sub: u32, j: u32) -> vec4<f32> {
  return (u8x4m((s.q[j & 3u] >> (4u * (j >> 2u))) & 0x0f0f0f0fu) - MAGIC) * s.d + s.m;
}
{{- else if eq .T "q5_0"}}
// block_q5_0 {d f16; qh u32; qs[16]}: bit 4 of element j is bit j of qh;
// value (q - 16) * d.
struct St { q: vec4<u32>, qh: u32, d: f32 }
const G: u32 = 8u;
fn load(o: u32, sub: u32) -> St {
  let i = o >> 2u;
  let a0 = W[i]; let a1 = W[i + 1u]; let a2 = W[i + 2u]; let a3 = W[i + 3u]; let a4 = W[i + 4u]; let a5 = W[i + 5u];
  let al = (o & 2u) == 0u;
  return St(select(vec4<u32>(a2, a3, a4, a5), vec4<u32>(mid(a1, a2), mid(a2, a3), mid(a3, a4), mid(a4, a5)), al),
            select(a1, mid(a0, a1), al), f16f(select(hi16(a0), lo16(a0), al)));
}
fn gel(sub: u32, j: u32) -> u32 { return 4u * j; }
fn at16(r: u32) -> vec2<u32> { return vec2<u32>(0u, r >> 2u); }
fn grp(s: St, sub: u32, j: u32) -> vec4<f32> {
  let h = bits4(s.qh >> (4u * j)) << 4u;
  return (u8x4m(((s.q[j & 3u] >> (4u * (j >> 2u))) & 0x0f0f0f0fu) | h) - (MAGIC + 16.0)) * s.d;
}
{{- else if eq .T "q5_1"}}
// block_q5_1 {d, m f16; qh u32; qs[16]} (24 bytes: word aligned): q * d + m.
struct St { q: vec4<u32>, qh: u32, d: f32, m: f32 }
const G: u32 = 8u;
fn load(o: u32, sub: u32) -> St {
  let i = o >> 2u;
  let dm = W[i];
  return St(vec4<u32>(W[i + 2u], W[i + 3u], W[i + 4u], W[i + 5u]), W[i + 1u], f16f(lo16(dm)), f16f(hi16(dm)));
}
fn gel(sub: u32, j: u32) -> u32 { return 4u * j; }
fn at16(r: u32) -> vec2<u32> { return vec2<u32>(0u, r >> 2u); }
fn grp(s: St, sub: u32, j: u32) -> vec4<f32> {
  let h = bits4(s.qh >> (4u * j)) << 4u;
  return (u8x4m(((s.q[j & 3u] >> (4u * (j >> 2u))) & 0x0f0f0f0fu) | h) - MAGIC) * s.d + s.m;
}
{{- else if eq .T "q8_0"}}
// block_q8_0 {d f16; qs[32] int8}: q * d.
struct St { qa: vec4<u32>, qb: vec4<u32>, d: f32 }
const G: u32 = 8u;
fn load(o: u32, sub: u32) -> St {
  let i = o >> 2u;
  let a0 = W[i]; let a1 = W[i + 1u]; let a2 = W[i + 2u]; let a3 = W[i + 3u]; let a4 = W[i + 4u];
  let a5 = W[i + 5u]; let a6 = W[i + 6u]; let a7 = W[i + 7u]; let a8 = W[i + 8u];
  let al = (o & 2u) == 0u;
  return St(select(vec4<u32>(a1, a2, a3, a4), vec4<u32>(mid(a0, a1), mid(a1, a2), mid(a2, a3), mid(a3, a4)), al),
            select(vec4<u32>(a5, a6, a7, a8), vec4<u32>(mid(a4, a5), mid(a5, a6), mid(a6, a7), mid(a7, a8)), al),
            f16f(select(hi16(a0), lo16(a0), al)));
}
fn gel(sub: u32, j: u32) -> u32 { return 4u * j; }
fn at16(r: u32) -> vec2<u32> { return vec2<u32>(0u, r >> 2u); }
fn grp(s: St, sub: u32, j: u32) -> vec4<f32> {
  return i8x4(select(s.qa[j & 3u], s.qb[j & 3u], j >= 4u)) * s.d;
}
{{- else if eq .T "q2_k"}}
// block_q2_K {scales[16]; qs[64]; d, dmin f16} (84 bytes: word aligned).
// Element e = 128h + 32t + l: (qs[32h + l] >> 2t) & 3, scaled by
// scales[e / 16] (low nibble * d, minus high nibble * dmin).
// Piece sub = (h, half of l): 64 elements; group j = (t, 4 values of l).
struct St { q: vec4<u32>, dl: vec4<f32>, ml: vec4<f32> }
const G: u32 = 16u;
fn load(o: u32, sub: u32) -> St {
  let i = o >> 2u;
  let h = sub >> 1u;
  let lh = sub & 1u;
  let dm = W[i + 20u];
  let dd = f16f(lo16(dm));
  let dmin = f16f(hi16(dm));
  let s0 = W[i + 2u * h]; let s1 = W[i + 2u * h + 1u]; // scales[8h .. 8h+7]
  let qi = i + 4u + 8u * h + 4u * lh;
  // scales[8h + 2t + lh] for t = 0..3
  let sc = vec4<u32>(byte(s0, lh), byte(s0, 2u + lh), byte(s1, lh), byte(s1, 2u + lh));
  return St(vec4<u32>(W[qi], W[qi + 1u], W[qi + 2u], W[qi + 3u]),
            dd * vec4<f32>(sc & vec4<u32>(0xfu)), dmin * vec4<f32>(sc >> vec4<u32>(4u)));
}
fn gel(sub: u32, j: u32) -> u32 { return 128u * (sub >> 1u) + 32u * (j >> 2u) + 16u * (sub & 1u) + 4u * (j & 3u); }
fn at16(r: u32) -> vec2<u32> { return vec2<u32>(2u * (r >> 7u) + ((r >> 4u) & 1u), 4u * ((r >> 5u) & 3u)); }
fn grp(s: St, sub: u32, j: u32) -> vec4<f32> {
  let t = j >> 2u;
  return s.dl[t] * (u8x4m((s.q[j & 3u] >> (2u * t)) & 0x03030303u) - MAGIC) - s.ml[t];
}
{{- else if eq .T "q3_k"}}
// block_q3_K {hmask[32]; qs[64]; scales[12]; d f16}. Element e = 128h + 32t
// + l: low bits (qs[32h + l] >> 2t) & 3, minus 4 unless bit 4h + t of
// hmask[l] is set; times d * (6-bit scale e / 16 - 32).
// Piece sub = (h, half of l): 64 elements; group j = (t, 4 values of l).
struct St { q: vec4<u32>, hm: vec4<u32>, dl: vec4<f32> }
const G: u32 = 16u;
fn load(o: u32, sub: u32) -> St {
  let h = sub >> 1u;
  let lh = sub & 1u;
  let hm = ld16(o + 16u * lh) >> vec4<u32>(4u * h);
  let q = ld16(o + 32u + 32u * h + 16u * lh);
  let sc = ld12(o + 96u);
  let dd = f16f(ld2(o + 108u));
  return St(q, hm, dd * vec4<f32>(scale_q3k(sc, h, lh, 0u), scale_q3k(sc, h, lh, 1u),
                                   scale_q3k(sc, h, lh, 2u), scale_q3k(sc, h, lh, 3u)));
}
// 6-bit scale s = 8h + 2t + lh, minus 32: low 4 bits from byte s % 8 (nibble
// s / 8 = h), high 2 bits from byte 8 + s % 4 (bits 2 * (s / 4)).
fn scale_q3k(sc: vec3<u32>, h: u32, lh: u32, t: u32) -> f32 {
  let b = 2u * t + lh;
  let lo = (select(sc.x, sc.y, t >= 2u) >> (8u * (b & 3u) + 4u * h)) & 0xfu;
  let hi = (sc.z >> (8u * (b & 3u) + 2u * (2u * h + (t >> 1u)))) & 3u;
  return f32(i32(lo | (hi << 4u)) - 32);
}
fn gel(sub: u32, j: u32) -> u32 { return 128u * (sub >> 1u) + 32u * (j >> 2u) + 16u * (sub & 1u) + 4u * (j & 3u); }
fn at16(r: u32) -> vec2<u32> { return vec2<u32>(2u * (r >> 7u) + ((r >> 4u) & 1u), 4u * ((r >> 5u) & 3u)); }
fn grp(s: St, sub: u32, j: u32) -> vec4<f32> {
  let t = j >> 2u;
  let k = j & 3u;
  let v = ((s.q[k] >> (2u * t)) & 0x03030303u) | (((s.hm[k] >> t) & 0x01010101u) << 2u);
  return s.dl[t] * (u8x4m(v) - (MAGIC + 4.0));
}
{{- else if or (eq .T "q4_k") (eq .T "q5_k")}}
// 6-bit scale and min j of the 12 packed bytes (ggml's get_scale_min_k4).
fn scale_min_k4(j: u32, s0: u32, s1: u32, s2: u32) -> vec2<f32> {
  // Branch-free: neighbouring lanes decode different j.
  let jj = j & 3u;
  let lo = vec2<u32>(byte(s0, jj) & 63u, byte(s1, jj) & 63u);
  let hi = vec2<u32>((byte(s2, jj) & 0xfu) | ((byte(s0, jj) >> 6u) << 4u),
                     (byte(s2, jj) >> 4u) | ((byte(s1, jj) >> 6u) << 4u));
  return vec2<f32>(select(hi, lo, j < 4u));
}
// Group j of piece (c, half lh of l): elements 64c + 32(j / 4) + 16lh + 4(j % 4).
fn gel(sub: u32, j: u32) -> u32 { return 64u * (sub >> 1u) + 32u * (j >> 2u) + 16u * (sub & 1u) + 4u * (j & 3u); }
fn at16(r: u32) -> vec2<u32> { return vec2<u32>(2u * (r >> 6u) + ((r >> 4u) & 1u), 4u * ((r >> 5u) & 1u)); }
const G: u32 = 8u;
{{- if eq .T "q4_k"}}
// block_q4_K {d, dmin f16; scales[12]; qs[128]} (144 bytes: 16-byte aligned).
// Sub-block sb = e / 32 of chunk c = e / 64: nibble sb & 1 of qs[32c + e % 32];
// value d * sc[sb] * q - dmin * m[sb]. Piece sub = (c, half of l): 32 elements.
struct St { q: vec4<u32>, d0: f32, m0: f32, d1: f32, m1: f32 }
fn load(o: u32, sub: u32) -> St {
  let i = o >> 2u;
  let c = sub >> 1u;
  let dm = W[i];
  let dd = f16f(lo16(dm));
  let dmin = f16f(hi16(dm));
  let s0 = W[i + 1u]; let s1 = W[i + 2u]; let s2 = W[i + 3u];
  let sm0 = scale_min_k4(2u * c, s0, s1, s2);
  let sm1 = scale_min_k4(2u * c + 1u, s0, s1, s2);
  let qi = i + 4u + 8u * c + 4u * (sub & 1u);
  return St(vec4<u32>(W[qi], W[qi + 1u], W[qi + 2u], W[qi + 3u]), dd * sm0.x, dmin * sm0.y, dd * sm1.x, dmin * sm1.y);
}
fn grp(s: St, sub: u32, j: u32) -> vec4<f32> {
  let hb = j >> 2u;
  return select(s.d0, s.d1, hb == 1u) * (u8x4m((s.q[j & 3u] >> (4u * hb)) & 0x0f0f0f0fu) - MAGIC) - select(s.m0, s.m1, hb == 1u);
}
{{- else}}
// block_q5_K {d, dmin f16; scales[12]; qh[32]; qs[128]} (176 bytes: 16-byte
// aligned). As q4_K, plus bit 4 of element 64c + l (l < 32) is bit 2c of qh[l]
// and of element 64c + 32 + l is bit 2c + 1.
struct St { q: vec4<u32>, qh: vec4<u32>, d0: f32, m0: f32, d1: f32, m1: f32 }
fn load(o: u32, sub: u32) -> St {
  let i = o >> 2u;
  let c = sub >> 1u;
  let lh = sub & 1u;
  let dm = W[i];
  let dd = f16f(lo16(dm));
  let dmin = f16f(hi16(dm));
  let s0 = W[i + 1u]; let s1 = W[i + 2u]; let s2 = W[i + 3u];
  let sm0 = scale_min_k4(2u * c, s0, s1, s2);
  let sm1 = scale_min_k4(2u * c + 1u, s0, s1, s2);
  let qi = i + 12u + 8u * c + 4u * lh;
  let hi = i + 4u + 4u * lh;
  return St(vec4<u32>(W[qi], W[qi + 1u], W[qi + 2u], W[qi + 3u]),
            vec4<u32>(W[hi], W[hi + 1u], W[hi + 2u], W[hi + 3u]) >> vec4<u32>(2u * c),
            dd * sm0.x, dmin * sm0.y, dd * sm1.x, dmin * sm1.y);
}
fn grp(s: St, sub: u32, j: u32) -> vec4<f32> {
  let hb = j >> 2u;
  let k = j & 3u;
  let v = ((s.q[k] >> (4u * hb)) & 0x0f0f0f0fu) | (((s.qh[k] >> hb) & 0x01010101u) << 4u);
  return select(s.d0, s.d1, hb == 1u) * (u8x4m(v) - MAGIC) - select(s.m0, s.m1, hb == 1u);
}
{{- end}}
{{- else if eq .T "q6_k"}}
// block_q6_K {ql[128]; qh[64]; scales[16] int8; d f16}. Element e = 128h +
// 32t + l: low 4 bits are nibble t / 2 of ql[64h + 32(t & 1) + l], high 2 bits
// are bits 2t of qh[32h + l]; value d * scales[e / 16] * (q - 32).
// Piece sub = (h, half of l): 64 elements; group j = (t, 4 values of l).
struct St { qa: vec4<u32>, qb: vec4<u32>, qh: vec4<u32>, dl: vec4<f32> }
const G: u32 = 16u;
fn load(o: u32, sub: u32) -> St {
  let h = sub >> 1u;
  let lh = sub & 1u;
  let sc = ld12(o + 192u + 8u * h); // scales[8h .. 8h+7] in .xy
  let dd = f16f(ld2(o + 208u));
  // scales[8h + 2t + lh], int8, for t = 0..3
  let sb = vec4<u32>(byte(sc.x, lh), byte(sc.x, 2u + lh), byte(sc.y, lh), byte(sc.y, 2u + lh));
  let si = (bitcast<vec4<i32>>(sb << vec4<u32>(24u))) >> vec4<u32>(24u);
  return St(ld16(o + 64u * h + 16u * lh), ld16(o + 64u * h + 32u + 16u * lh), ld16(o + 128u + 32u * h + 16u * lh),
            dd * vec4<f32>(si));
}
fn gel(sub: u32, j: u32) -> u32 { return 128u * (sub >> 1u) + 32u * (j >> 2u) + 16u * (sub & 1u) + 4u * (j & 3u); }
fn at16(r: u32) -> vec2<u32> { return vec2<u32>(2u * (r >> 7u) + ((r >> 4u) & 1u), 4u * ((r >> 5u) & 3u)); }
fn grp(s: St, sub: u32, j: u32) -> vec4<f32> {
  let t = j >> 2u;
  let k = j & 3u;
  let ql = select(s.qa[k], s.qb[k], (t & 1u) == 1u) >> (4u * (t >> 1u));
  let v = (ql & 0x0f0f0f0fu) | (((s.qh[k] >> (2u * t)) & 0x03030303u) << 4u);
  return s.dl[t] * (u8x4m(v) - (MAGIC + 32.0));
}
{{- else if eq .T "bf16"}}
// bf16 rows of any length at any element offset: o is the piece's first half
// in W; a piece is 8 values (groups past the row's end are skipped).
struct St { v: vec4<u32> }
const G: u32 = 2u;
fn load(o: u32, sub: u32) -> St {
  let wi = o >> 1u;
  let a0 = W[wi]; let a1 = W[wi + 1u]; let a2 = W[wi + 2u]; let a3 = W[wi + 3u]; let a4 = W[wi + 4u];
  return St(select(vec4<u32>(mid(a0, a1), mid(a1, a2), mid(a2, a3), mid(a3, a4)), vec4<u32>(a0, a1, a2, a3), (o & 1u) == 0u));
}
fn gel(sub: u32, j: u32) -> u32 { return 4u * j; }
fn grp(s: St, sub: u32, j: u32) -> vec4<f32> {
  let a = select(s.v.x, s.v.z, j == 1u);
  let b = select(s.v.y, s.v.w, j == 1u);
  return vec4<f32>(bitcast<f32>(a << 16u), bitcast<f32>(a & 0xffff0000u), bitcast<f32>(b << 16u), bitcast<f32>(b & 0xffff0000u));
}
{{- else if eq .T "f16"}}
// f16 rows (the experts kernel), as bf16: o is the piece's first half in W,
// a piece is 8 values, decoded exactly.
struct St { v: vec4<u32> }
const G: u32 = 2u;
fn load(o: u32, sub: u32) -> St {
  let wi = o >> 1u;
  let a0 = W[wi]; let a1 = W[wi + 1u]; let a2 = W[wi + 2u]; let a3 = W[wi + 3u]; let a4 = W[wi + 4u];
  return St(select(vec4<u32>(mid(a0, a1), mid(a1, a2), mid(a2, a3), mid(a3, a4)), vec4<u32>(a0, a1, a2, a3), (o & 1u) == 0u));
}
fn gel(sub: u32, j: u32) -> u32 { return 4u * j; }
fn grp(s: St, sub: u32, j: u32) -> vec4<f32> {
  let a = select(s.v.x, s.v.z, j == 1u);
  let b = select(s.v.y, s.v.w, j == 1u);
  return vec4<f32>(f16f(lo16(a)), f16f(hi16(a)), f16f(lo16(b)), f16f(hi16(b)));
}
{{- else if eq .T "f32"}}
// f32 rows (the experts kernel): o is the piece's first element, a piece is
// 4 values.
struct St { v: vec4<u32> }
const G: u32 = 1u;
fn load(o: u32, sub: u32) -> St { return St(vec4<u32>(W[o], W[o + 1u], W[o + 2u], W[o + 3u])); }
fn gel(sub: u32, j: u32) -> u32 { return 0u; }
fn grp(s: St, sub: u32, j: u32) -> vec4<f32> { return bitcast<vec4<f32>>(s.v); }
{{- end}}
{{- end}}
