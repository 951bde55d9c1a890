// GGUF block-quantised weights read in place, and four kernels built on one
// set of block decoders (ops/matvec_quant.go, ops/matvec_experts.go,
// ops/dequant.go):
//   matvec : dst[m, n] = sum_k w[n, k] x[m, k] for x rows m < M (decode)
//   experts: the matvec of each routed slot by its expert's matrix (MoE)
//   dequant: dst[r, :] = decode(src[r, :])          (prefill weights)
//   embed  : dst[t, :] = decode(table[ids[t], :])   (token embeddings)
//
// The weight binding is array<u32>; blocks sit at arbitrary even byte offsets
// (18, 22, 34, 110, 210-byte blocks; any byte offset for mxfp4's 17), so
// every block read assembles its bytes from whole words. A block is cut into
// PPB "pieces" (one lane's work: 32 or 64 elements, or 8 bf16 values). Each
// type defines
//   St                  what one piece's loads leave in registers,
//   load(o, sub) -> St  the loads of piece sub of the block at W byte o,
//   grp(st, sub, j)     the four weights of group j < G of the piece,
//   gel(sub, j)         where group j's four consecutive elements start in
//                       the block,
// The matvec on GPUs calls grp with constant j (the template unrolls the
// groups, so the selects on j fold away); elsewhere j is a loop. Decoding
// follows ggml's dequantize_row_* in float32; every product it forms is exact
// in float32 (at most 24 significant bits), so fused multiply-adds cannot
// change a value and the dequantised values match the CPU reference bit for
// bit.
struct Params {
  rows: u32,        // output rows handled by this dispatch
  k: u32,           // elements per row
  np: u32,          // pieces per row
  w_off: u32,       // where row 0 starts in W: bytes (quantised) or halves (bf16)
  w_row: u32,       // row stride in W, same unit as w_off
  x_off: u32,       // matvec: first x element; embed: first id
  x_stride: u32,    // matvec: elements between x rows
  d_off: u32,       // first dst element
  d_stride: u32,    // matvec: elements between dst rows (N); dequant/embed: per output row
  id_lo: u32,       // embed: table rows [id_lo, id_hi) are in this dispatch's W window
  id_hi: u32,
  vocab: u32,       // embed: table rows; ids >= vocab give zero rows
  zero_oob: u32,    // embed: this dispatch writes the zero rows of out-of-range ids
  // matvec fusions (ops.MatVecOpts; the same as in matvec.wgsl):
  pair_off: u32,    // Pair: rows from gate row n to up row n
  seg1: u32, seg2: u32, d_off1: u32, d_rs1: u32, d_off2: u32, d_rs2: u32, // Segs
  g_off: u32,       // Norm: first element of g
  eps: f32,
  // experts (ops.MatVecExperts):
  e_stride: u32,    // W units from one expert's matrix to the next
  x_per: u32,       // slots per x row
  b_off: u32,       // first bias element
  r_off: u32,       // first element of the routing table R
  n_exp: u32,       // experts
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> W: array<u32>;
{{- if .Rowwise}}
{{- if .Q8}}
// Q8 (the matvec only): x is ops.QuantizeQ8's rows of x_stride words (x_off
// and x_stride multiples of 4): K/4 words of packed int8, K/32 scales (f32),
// K/16 sums of 16 quants (f32), 1 / rms(x).
@group(0) @binding(2) var<storage, read> x: array<vec4<u32>>;
{{- else}}
@group(0) @binding(2) var<storage, read> x: array<{{if .XVec}}vec4<f32>{{else}}f32{{end}}>;
{{- end}}
@group(0) @binding(3) var<storage, read_write> d: array<f32>;
{{- if and .Norm (not .Q8)}}
@group(0) @binding(4) var<storage, read> g: array<{{if .XVec}}vec4<f32>{{else}}f32{{end}}>;
{{- end}}
{{- if .Experts}}
@group(0) @binding(4) var<storage, read> R: array<u32>;
{{- if .Bias}}
@group(0) @binding(5) var<storage, read> bias: array<f32>;
{{- end}}
{{- end}}
{{- else if eq .Kernel "embed"}}
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> d: array<{{if .DstF16}}u32{{else}}f32{{end}}>;
{{- else}}
@group(0) @binding(2) var<storage, read_write> d: array<{{if .DstF16}}u32{{else}}f32{{end}}>;
{{- end}}

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

{{- if and (eq .Kernel "matvec") .Q8}}

// --- int8 accessors (the Q8 matvec) -----------------------------------------
// grpq(st, sub, j): group j's four weight quants as packed int8 (without
// the type's offset); a piece's G groups form NSG scale groups of G / NSG
// consecutive groups (16 or 32 consecutive elements, inside one x block);
// qsc(st, sub, t) = (a, b) with weight = a * quant - b in scale group t, so
// the group adds dx * (a * sum(quant * xq) - b * sum(xq)).
{{- if or (eq .T "q4_0") (eq .T "q4_1")}}
const NSG: u32 = 1u;
fn grpq(s: St, sub: u32, j: u32) -> u32 { return (s.q[j & 3u] >> (4u * (j >> 2u))) & 0x0f0f0f0fu; }
{{- if eq .T "q4_0"}}
fn qsc(s: St, sub: u32, t: u32) -> vec2<f32> { return vec2<f32>(s.d, 8.0 * s.d); }
{{- else}}
fn qsc(s: St, sub: u32, t: u32) -> vec2<f32> { return vec2<f32>(s.d, -s.m); }
{{- end}}
{{- else if or (eq .T "q5_0") (eq .T "q5_1")}}
const NSG: u32 = 1u;
fn grpq(s: St, sub: u32, j: u32) -> u32 {
  return ((s.q[j & 3u] >> (4u * (j >> 2u))) & 0x0f0f0f0fu) | (bits4(s.qh >> (4u * j)) << 4u);
}
{{- if eq .T "q5_0"}}
fn qsc(s: St, sub: u32, t: u32) -> vec2<f32> { return vec2<f32>(s.d, 16.0 * s.d); }
{{- else}}
fn qsc(s: St, sub: u32, t: u32) -> vec2<f32> { return vec2<f32>(s.d, -s.m); }
{{- end}}
{{- else if eq .T "q8_0"}}
const NSG: u32 = 1u;
fn grpq(s: St, sub: u32, j: u32) -> u32 { return select(s.qa[j & 3u], s.qb[j & 3u], j >= 4u); }
fn qsc(s: St, sub: u32, t: u32) -> vec2<f32> { return vec2<f32>(s.d, 0.0); }
{{- else if or (eq .T "q4_k") (eq .T "q5_k")}}
const NSG: u32 = 2u;
fn grpq(s: St, sub: u32, j: u32) -> u32 {
  let hb = j >> 2u;
{{- if eq .T "q4_k"}}
  return (s.q[j & 3u] >> (4u * hb)) & 0x0f0f0f0fu;
{{- else}}
  return ((s.q[j & 3u] >> (4u * hb)) & 0x0f0f0f0fu) | (((s.qh[j & 3u] >> hb) & 0x01010101u) << 4u);
{{- end}}
}
fn qsc(s: St, sub: u32, t: u32) -> vec2<f32> { return select(vec2<f32>(s.d0, s.m0), vec2<f32>(s.d1, s.m1), t == 1u); }
{{- else if eq .T "q6_k"}}
const NSG: u32 = 4u;
fn grpq(s: St, sub: u32, j: u32) -> u32 {
  let t = j >> 2u;
  let k = j & 3u;
  let ql = select(s.qa[k], s.qb[k], (t & 1u) == 1u) >> (4u * (t >> 1u));
  return (ql & 0x0f0f0f0fu) | (((s.qh[k] >> (2u * t)) & 0x03030303u) << 4u);
}
fn qsc(s: St, sub: u32, t: u32) -> vec2<f32> { return vec2<f32>(s.dl[t], 32.0 * s.dl[t]); }
{{- else if eq .T "q2_k"}}
const NSG: u32 = 4u;
fn grpq(s: St, sub: u32, j: u32) -> u32 { return (s.q[j & 3u] >> (2u * (j >> 2u))) & 0x03030303u; }
fn qsc(s: St, sub: u32, t: u32) -> vec2<f32> { return vec2<f32>(s.dl[t], s.ml[t]); }
{{- else if eq .T "q3_k"}}
const NSG: u32 = 4u;
fn grpq(s: St, sub: u32, j: u32) -> u32 {
  let t = j >> 2u;
  return ((s.q[j & 3u] >> (2u * t)) & 0x03030303u) | (((s.hm[j & 3u] >> t) & 0x01010101u) << 2u);
}
fn qsc(s: St, sub: u32, t: u32) -> vec2<f32> { return vec2<f32>(s.dl[t], 4.0 * s.dl[t]); }
{{- end}}
const GS: u32 = G / NSG; // groups per scale group
{{- end}}

// --- kernels ----------------------------------------------------------------
{{- if .Rowwise}}
// matvec and experts. A lane computes RPT rows at once (x is loaded once
// for all of them); the TPR lanes of a row group take pieces lane, lane +
// TPR, ... in that order, and their partial sums meet in a fixed tree. So a
// row's result depends on neither M, RPT nor the other rows: only on TPR,
// which the weight's type and K fix.
//
// experts: for each slot s that the routing table R (ops.MoERoute) gives
// expert e, d[s, row] = sum_k W[e, row, k] x[s / x_per, k] (+ bias[e, row]).
// Workgroup (wid.x, u) is a block of rows of the u-th used expert; it takes
// the expert's slots M at a time (a slot in place of each x row of the
// matvec), an expert's last single slot alone in a body of one. The weight
// rows are read from memory once for all of the expert's slots, and a
// slot's value depends only on its expert and x row: not on the other
// slots, nor on M or how the slots are grouped.
const WG: u32 = {{.WG}}u;
const TPR: u32 = {{.TPR}}u;
const RPT: u32 = {{.RPT}}u;
const NACC: u32 = {{.NAcc}}u;
const RED: u32 = NACC * WG;
// Accumulators acc<r * M + m>: plain scalars (an array indexed in a loop
// would live in slow local memory).
{{- range .Accs}}
var<private> acc{{.}}: f32;
{{- end}}
{{- if .WGRed}}
var<workgroup> red: array<f32, RED>;
{{- end}}
{{- if .StageX}}
// StageX: each pass of the piece loop first copies the slice of x its
// pieces use (CV vec4 per x row, times g under Norm) into workgroup memory
// with coalesced loads, because the TPR lanes of a row read x BS/PPB
// elements apart: straight from global memory every vec4 load of a warp
// touches 32 cache lines. One vec4 of padding per 8 keeps the lanes' reads
// on different banks. The products are the same, in the same order.
const U: u32 = {{len .Us}}u;     // pieces per lane per pass
const CV: u32 = {{.CV}}u;       // vec4 of one x row per pass (U pieces per lane)
const CVP: u32 = CV + CV / 8u;  // with padding
var<workgroup> xs: array<vec4<f32>, {{.XSLen}}>;
var<private> xbase: u32;        // first element of x staged
{{- end}}
{{- if .Experts}}
const PAIRS: u32 = {{if .Pair}}2u{{else}}1u{{end}};
var<workgroup> head: vec4<u32>;              // used, expert, first and end slot
var<workgroup> tslot: array<u32, {{.M}}>;  // the tile's slots (dst rows)
var<workgroup> txrow: array<u32, {{.M}}>;  // and their x rows
{{- end}}

{{- if .Q8}}
// Row m of the quantised x: the quants of elements e .. e + 15 (e a
// multiple of 16), element e's block scale, the sum of scale group e's
// quants (16 or 32 from e), 1 / rms.
fn xword(i: u32) -> u32 { return x[i >> 2u][i & 3u]; }
fn xqv(m: u32, e: u32) -> vec4<u32> { return x[(p.x_off + m * p.x_stride + (e >> 2u)) >> 2u]; }
fn xqd(m: u32, e: u32) -> f32 { return bitcast<f32>(xword(p.x_off + m * p.x_stride + p.k / 4u + (e >> 5u))); }
fn xqs(m: u32, e: u32) -> f32 {
  let i = p.x_off + m * p.x_stride + p.k / 4u + p.k / 32u + (e >> 4u);
  return select(bitcast<f32>(xword(i)), bitcast<f32>(xword(i)) + bitcast<f32>(xword(i + 1u)), GS == 8u);
}
{{- else}}
fn xraw(m: u32, e: u32) -> vec4<f32> {
  let i = p.x_off + {{if .Experts}}txrow[m]{{else}}m{{end}} * p.x_stride + e;
{{- if .XVec}}
  return x[i >> 2u];
{{- else}}
  // Not vec4-aligned; elements past the row (a bf16 tail) read as zero.
  return vec4<f32>(select(0.0, x[i], e < p.k), select(0.0, x[i + 1u], e + 1u < p.k),
                   select(0.0, x[i + 2u], e + 2u < p.k), select(0.0, x[i + 3u], e + 3u < p.k));
{{- end}}
}
{{- if .Norm}}
fn gv(e: u32) -> vec4<f32> {
  let i = p.g_off + e;
{{- if .XVec}}
  return g[i >> 2u];
{{- else}}
  return vec4<f32>(select(0.0, g[i], e < p.k), select(0.0, g[i + 1u], e + 1u < p.k),
                   select(0.0, g[i + 2u], e + 2u < p.k), select(0.0, g[i + 3u], e + 3u < p.k));
{{- end}}
}
{{- end}}
fn xv(m: u32, e: u32) -> vec4<f32> {
{{- if .StageX}}
  let v = (e - xbase) >> 2u;
  return xs[m * CVP + v + v / 8u];
{{- else}}
  return xraw(m, e){{if .Norm}} * gv(e){{end}};
{{- end}}
}
{{- end}}
{{- if .Norm}}
var<private> nscale: array<f32, {{len .Ms}}>; // Norm: 1 / rms of each x row
{{- end}}
{{- range .Bodies}}
{{template "consume" .}}
{{- end}}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>{{if .SG}},
        @builtin(subgroup_size) sg_size: u32{{end}}) {
  let lane = lid.x % TPR;
{{- if and .Norm .Q8}}
  // ops.QuantizeQ8 computed each row's 1 / rms beside its quants.
{{- range $m := .Ms}}
  nscale[{{$m}}u] = bitcast<f32>(xword(p.x_off + {{$m}}u * p.x_stride + p.k / 4u + p.k / 32u + p.k / 16u));
{{- end}}
{{- else if .Norm}}
  // Sum of squares of each x row over the whole workgroup: thread partials
  // in a fixed order, then a fixed tree, the same in every workgroup.
{{- range $m := .Ms}}
  {
    var ss = 0.0;
    for (var e = lid.x * 4u; e < p.k; e += WG * 4u) {
      let v = xraw({{$m}}u, e);
      ss += dot(v, v);
    }
    red[{{$m}}u * WG + lid.x] = ss;
  }
{{- end}}
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid.x < s) {
      for (var m = 0u; m < {{len .Ms}}u; m++) { red[m * WG + lid.x] += red[m * WG + lid.x + s]; }
    }
    workgroupBarrier();
  }
{{- range $m := .Ms}}
  nscale[{{$m}}u] = inverseSqrt(red[{{$m}}u * WG] / f32(p.k) + p.eps);
{{- end}}
  workgroupBarrier();
{{- end}}
{{- if .Experts}}
  // The u-th used expert and its slots (uniform: the early exit and the
  // tile loop below are the whole workgroup's).
  if (lid.x == 0u) {
    let used = R[p.r_off];
    let uu = min(wid.y, max(used, 1u) - 1u);
    head = vec4<u32>(used, min(R[p.r_off + 1u + uu], p.n_exp - 1u),
                     R[p.r_off + 1u + p.n_exp + uu], R[p.r_off + 2u + p.n_exp + uu]);
  }
  let h = workgroupUniformLoad(&head);
  if (wid.y >= h.x) { return; }
  let wbase = p.w_off + h.y * p.e_stride;
  let blockid = wid.x;
{{- else}}
  let wbase = p.w_off;
  let blockid = wid.y * nwg.x + wid.x;
{{- end}}
{{- if .Pair}}
  // Rows 0..RPT/2-1 of a lane are gate rows, the rest the matching up rows.
  let row0 = (blockid * (WG / TPR) + lid.x / TPR) * (RPT / 2u);
{{- else}}
  let row0 = (blockid * (WG / TPR) + lid.x / TPR) * RPT;
{{- end}}
  // Rows past the end re-read the last row; they are not written.
{{- range .Rs}}
{{- if $.Pair}}
  let rb{{.}} = wbase + (min(row0 + {{.}}u % (RPT / 2u), p.rows - 1u) + ({{.}}u / (RPT / 2u)) * p.pair_off) * p.w_row;
{{- else}}
  let rb{{.}} = wbase + min(row0 + {{.}}u, p.rows - 1u) * p.w_row;
{{- end}}
{{- end}}
{{- if .Experts}}
  let lb = p.r_off + 2u + 2u * p.n_exp;
  var t = h.z;
  loop {
    if (t >= h.w) { break; }
    let left = h.w - t;  // slots still to compute (uniform)
    if (lid.x < {{.M}}u) {
      // A tile past the last slot repeats it; those copies are not written.
      let s = R[lb + min(t + lid.x, h.w - 1u)];
      tslot[lid.x] = s;
      txrow[lid.x] = s / p.x_per;
    }
    workgroupBarrier();
{{- if gt .M 1}}
    if (left == 1u) {
{{- template "body" index .Bodies 1}}
      t += 1u;
    } else {
{{- template "body" index .Bodies 0}}
      t += {{.M}}u;
    }
{{- else}}
{{- template "body" index .Bodies 0}}
    t += 1u;
{{- end}}
    workgroupBarrier();  // the tile is done with red, tslot and txrow
  }
{{- else}}
{{- template "body" index .Bodies 0}}
{{- end}}
}
{{- else}}
var<private> dbase: u32;

fn store(e: u32, w: vec4<f32>) {
  let i = dbase + e;
{{- if .DstF16}}
  // dst starts at an even element and rows are whole blocks: i is even.
  d[i >> 1u] = pack2x16float(w.xy);
  d[(i >> 1u) + 1u] = pack2x16float(w.zw);
{{- else}}
  d[i] = w.x; d[i + 1u] = w.y; d[i + 2u] = w.z; d[i + 3u] = w.w;
{{- end}}
}

// One thread per piece of the output.
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
  let g = (wid.y * nwg.x + wid.x) * 256u + lid.x;
  let row = g / p.np;
  if (row >= p.rows) { return; }
  let r = g % p.np;
  let blk = r / PPB;
  let sub = r % PPB;
  let eb = blk * BS;
  dbase = p.d_off + row * p.d_stride + eb;
{{- if eq .Kernel "embed"}}
  let id = ids[p.x_off + row];
  if (id < p.id_lo || id >= p.id_hi) {
    if (p.zero_oob != 0u && id >= p.vocab) {
      // No such table row: this piece's share of the output row is zero.
      for (var e = sub * (BS / PPB); e < (sub + 1u) * (BS / PPB); e += 4u) {
        store(e, vec4<f32>(0.0));
      }
    }
    return;
  }
  let s = load(p.w_off + (id - p.id_lo) * p.w_row + blk * BB, sub);
{{- else}}
  let s = load(p.w_off + row * p.w_row + blk * BB, sub);
{{- end}}
  for (var j = 0u; j < G; j++) {
    store(gel(sub, j), grp(s, sub, j));
  }
}
{{- end}}

{{- /* Multiply-accumulate one piece of each of the RPT rows, for a body of M
x rows (slots). On GPUs the groups are unrolled here (constant j); software
adapters get the loop, which compiles much faster and computes the same
values. */}}
{{- define "consume"}}
fn consume_m{{.M}}({{range .Rs}}s{{.}}: St, {{end}}eb: u32, sub: u32) {
{{- if .Q8}}
  // Per scale group: integer dot products of the weight and x quants, then
  // one scaling per row pair (r, m).
{{- if not .UnrollJ}}
  for (var t = 0u; t < NSG; t++) {
{{- end}}
{{- range $tg := .TGroups}}
  {
    let e0 = eb + gel(sub, {{$tg.T}} * GS);
{{- range $.Ms}}
    let xd{{.}} = xqd({{.}}u, e0);
    let xs{{.}} = xqs({{.}}u, e0);
{{- end}}
{{- range $.RMs}}{{range .}}
    var is{{.I}} = 0i;
{{- end}}{{end}}
    // Four groups (16 consecutive elements) at a time: one vec4 of x.
{{- if not $.UnrollJ}}
    for (var jq = 0u; jq < GS; jq += 4u) {
{{- end}}
{{- range $q := $tg.Quads}}
    {
      let e = eb + gel(sub, {{$q.J0}});
{{- range $.Ms}}
      let x{{.}} = xqv({{.}}u, e);
{{- end}}
{{- if not $.UnrollJ}}
      for (var i = 0u; i < 4u; i++) {
{{- end}}
{{- range $c, $je := $q.Js}}
{{- range $r := $.Rs}}
      {
        let w = grpq(s{{$r}}, sub, {{$je}});
{{- range index $.RMs $r}}
        is{{.I}} += dot4I8Packed(w, x{{.M}}[{{index $q.Cs $c}}]);
{{- end}}
      }
{{- end}}
{{- end}}
{{- if not $.UnrollJ}}
      }
{{- end}}
    }
{{- end}}
{{- if not $.UnrollJ}}
    }
{{- end}}
{{- range $r := $.Rs}}
    {
      let sc = qsc(s{{$r}}, sub, {{$tg.T}});
{{- range index $.RMs $r}}
      acc{{.I}} += xd{{.M}} * (sc.x * f32(is{{.I}}) - sc.y * xs{{.M}});
{{- end}}
    }
{{- end}}
  }
{{- end}}
{{- if not .UnrollJ}}
  }
{{- end}}
{{- else}}
{{- if not .UnrollJ}}
  for (var j = 0u; j < G; j++) {
{{- end}}
{{- range $je := .JExprs}}
  {
    let e = eb + gel(sub, {{$je}});
{{- if $.Tail}}
    if (e < p.k) {
{{- end}}
{{- range $.Ms}}
    let x{{.}} = xv({{.}}u, e);
{{- end}}
{{- range $r := $.Rs}}
    {
      let w = grp(s{{$r}}, sub, {{$je}});
{{- range index $.RMs $r}}
      acc{{.I}} += dot(w, x{{.M}});
{{- end}}
    }
{{- end}}
{{- if $.Tail}}
    }
{{- end}}
  }
{{- end}}
{{- if not .UnrollJ}}
  }
{{- end}}
{{- end}}
}
{{- end}}

{{- /* The products of the M x rows (slots) of a body, their tree over the
TPR lanes and the stores: inside main, after the row bases rb<r>. */}}
{{- define "body"}}
  {
{{- range .Accs}}
  acc{{.}} = 0.0;
{{- end}}
{{- if .StageX}}
  // Each pass covers U pieces per lane (pieces gp + u*TPR + lane): every
  // lane issues all their weight loads before any arithmetic, so U blocks
  // per row are in flight across each pass's barriers. A lane still
  // consumes its pieces in the order lane, lane + TPR, ...
  for (var gp = 0u; gp < p.np; gp += TPR * U) {  // uniform: every lane stages
    xbase = gp / PPB * BS;
    workgroupBarrier();  // the last pass is done with xs
    for (var i = lid.x; i < {{len .Ms}}u * CV; i += WG) {
      let m = i / CV;
      let v = i % CV;
      let e = xbase + 4u * v;
      var val = vec4<f32>(0.0);
      if (e < p.k) {
        val = xraw(m, e){{if .Norm}} * gv(e){{end}};
      }
      xs[m * CVP + v + v / 8u] = val;
    }
    workgroupBarrier();
    if (row0 < p.rows) {
{{- range $u := .Us}}
      let g{{$u}} = min(gp + {{$u}}u * TPR + lane, p.np - 1u);
{{- range $.Rs}}
      let s{{.}}_{{$u}} = load(rb{{.}} + (g{{$u}} / PPB) * BB, g{{$u}} % PPB);
{{- end}}
{{- end}}
{{- range $u := .Us}}
      if (gp + {{$u}}u * TPR + lane < p.np) {
        consume_m{{$.M}}({{range $.Rs}}s{{.}}_{{$u}}, {{end}}(g{{$u}} / PPB) * BS, g{{$u}} % PPB);
      }
{{- end}}
    }
  }
{{- else if .Ahead}}
  // Two pieces per row in flight: every row's loads of pieces g and
  // g + TPR first, then their arithmetic in the order g, g + TPR.
  if (row0 < p.rows) {
    for (var g = lane; g < p.np; g += 2u * TPR) {
      let g1 = min(g + TPR, p.np - 1u);
{{- range .Rs}}
      let s{{.}} = load(rb{{.}} + (g / PPB) * BB, g % PPB);
      let t{{.}} = load(rb{{.}} + (g1 / PPB) * BB, g1 % PPB);
{{- end}}
      consume_m{{.M}}({{range .Rs}}s{{.}}, {{end}}(g / PPB) * BS, g % PPB);
      if (g + TPR < p.np) {
        consume_m{{.M}}({{range .Rs}}t{{.}}, {{end}}(g1 / PPB) * BS, g1 % PPB);
      }
    }
  }
{{- else}}
  if (row0 < p.rows) {
    for (var g = lane; g < p.np; g += TPR) {
      let blk = g / PPB;
      let sub = g % PPB;
      // Every row's loads first, then the arithmetic.
{{- range .Rs}}
      let s{{.}} = load(rb{{.}} + blk * BB, sub);
{{- end}}
      consume_m{{.M}}({{range .Rs}}s{{.}}, {{end}}blk * BS, sub);
    }
  }
{{- end}}
  // The TPR lanes of a row meet in a fixed tree: at level s (TPR/2 down to
  // 1) lane l < s adds lane l + s.
{{- if .SG}}
  // Subgroups: levels at or above the subgroup size go through workgroup
  // memory (none when subgroups hold a whole row), the rest by
  // subgroupShuffleXor within the row's first subgroup (subgroups are
  // aligned runs of lanes, which gpu checks when it opens the device, and
  // TPR and the subgroup size are powers of two, so a row's lanes are one
  // aligned run inside a subgroup or whole subgroups). For l < s,
  // l ^ s = l + s, so every level adds the same two values in the same
  // order as the tree: the same bits as the plain kernel.
  var lvl = TPR / 2u;
{{- if .WGRed}}
  if (sg_size < TPR) {
{{- template "tree" .}}
  }
{{- end}}
  for (; lvl > 0u; lvl >>= 1u) {
{{- range .Accs}}
    acc{{.}} += subgroupShuffleXor(acc{{.}}, lvl);
{{- end}}
  }
{{- else}}
  var lvl = TPR / 2u;
{{- template "tree" .}}
{{- end}}
  if (lane == 0u) {
{{- if .Pair}}
{{- range $r, $ps := .Pairs}}
    if (row0 + {{$r}}u < p.rows) {
{{- range $ps}}
{{- if $.Experts}}
      if ({{.M}}u < left) {
        let row = row0 + {{$r}}u;
        let i = p.d_off + tslot[{{.M}}u] * p.d_stride + row;
        var gs = acc{{.G}};
        var us = acc{{.U}};
{{- if $.Bias}}
        gs += bias[p.b_off + h.y * PAIRS * p.rows + row];
        us += bias[p.b_off + h.y * PAIRS * p.rows + p.rows + row];
{{- end}}
        d[i] = act_{{$.Act}}(gs, us);
      }
{{- else}}
      {
        let i = p.d_off + {{.M}}u * p.d_stride + row0 + {{$r}}u;
        let gs = acc{{.G}}{{if $.Norm}} * nscale[{{.M}}u]{{end}};
        let us = acc{{.U}}{{if $.Norm}} * nscale[{{.M}}u]{{end}};
        d[i] = {{if $.Acc}}d[i] + {{end}}act_{{$.Act}}(gs, us);
      }
{{- end}}
{{- end}}
    }
{{- end}}
{{- else}}
{{- range $r := .Rs}}
    if (row0 + {{$r}}u < p.rows) {
      let row = row0 + {{$r}}u;
{{- range index $.RMs $r}}
{{- if $.Experts}}
      if ({{.M}}u < left) {
        d[p.d_off + tslot[{{.M}}u] * p.d_stride + row] = acc{{.I}}{{if $.Bias}} + bias[p.b_off + h.y * p.rows + row]{{end}};
      }
{{- else}}
      {
{{- if $.Segs}}
        var i = p.d_off + {{.M}}u * p.d_stride + row;
        if (row >= p.seg2) {
          i = p.d_off2 + {{.M}}u * p.d_rs2 + (row - p.seg2);
        } else if (row >= p.seg1) {
          i = p.d_off1 + {{.M}}u * p.d_rs1 + (row - p.seg1);
        }
{{- else}}
        let i = p.d_off + {{.M}}u * p.d_stride + row;
{{- end}}
        d[i] = {{if $.Acc}}d[i] + {{end}}acc{{.I}}{{if $.Norm}} * nscale[{{.M}}u]{{end}};
      }
{{- end}}
{{- end}}
    }
{{- end}}
{{- end}}
  }
  }
{{- end}}

{{- /* The tree's levels lvl down to the subgroup size (sg_size; to 1
without subgroups) in workgroup memory, leaving each lane's sums in its
accumulators. */}}
{{- define "tree"}}
{{- range .Accs}}
  red[{{.}}u * WG + lid.x] = acc{{.}};
{{- end}}
  workgroupBarrier();
  for (; lvl >= {{if .SG}}sg_size{{else}}1u{{end}}; lvl >>= 1u) {
    if (lane < lvl) {
      for (var i = 0u; i < {{.NAcc}}u; i++) { red[i * WG + lid.x] += red[i * WG + lid.x + lvl]; }
    }
    workgroupBarrier();
  }
{{- range .Accs}}
  acc{{.}} = red[{{.}}u * WG + lid.x];
{{- end}}
{{- end}}
