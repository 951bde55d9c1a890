// GGUF block-quantised weights read in place, and three kernels built on one
// set of block decoders (ops/matvec_quant.go, ops/dequant.go):
//   matvec : dst[m, n] = sum_k w[n, k] x[m, k] for x rows m < M (decode)
//   dequant: dst[r, :] = decode(src[r, :])          (prefill weights)
//   embed  : dst[t, :] = decode(table[ids[t], :])   (token embeddings)
//
// The weight binding is array<u32>; blocks sit at arbitrary even byte offsets
// (18, 22, 34, 110, 210-byte blocks), so every block read assembles its bytes
// from whole words. A block is cut into PPB "pieces" (one lane's work: 32 or
// 64 elements, or 8 bf16 values); a piece decoder calls sink(e, w) for runs of
// four consecutive elements e..e+3 of the row, and the kernel decides what the
// sink does (multiply-accumulate with x, or store). Decoding follows ggml's
// dequantize_row_* in float32; every product it forms is exact in float32
// (at most 24 significant bits), so fused multiply-adds cannot change a value
// and the dequantised values match the CPU reference bit for bit.
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
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> W: array<u32>;
{{- if eq .Kernel "matvec"}}
@group(0) @binding(2) var<storage, read> x: array<{{if .XVec}}vec4<f32>{{else}}f32{{end}}>;
@group(0) @binding(3) var<storage, read_write> d: array<f32>;
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
// The four bytes of a word as values.
fn u8x4(a: u32) -> vec4<f32> {
  return vec4<f32>(vec4<u32>(a & 0xffu, (a >> 8u) & 0xffu, (a >> 16u) & 0xffu, a >> 24u));
}
fn i8x4(a: u32) -> vec4<f32> {
  let v = bitcast<i32>(a);
  return vec4<f32>(vec4<i32>((v << 24u) >> 24u, (v << 16u) >> 24u, (v << 8u) >> 24u, v >> 24u));
}
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
// Spread the low 4 bits of h to bit 0 of each byte.
fn bits4(h: u32) -> u32 {
  return (h & 1u) | ((h & 2u) << 7u) | ((h & 4u) << 14u) | ((h & 8u) << 21u);
}

// --- the sink: what happens to each decoded run of four elements ----------
{{- if eq .Kernel "matvec"}}
var<private> acc: array<f32, {{.M}}>;

fn xv(m: u32, e: u32) -> vec4<f32> {
  let i = p.x_off + m * p.x_stride + e;
{{- if .XVec}}
  return x[i >> 2u];
{{- else}}
  return vec4<f32>(x[i], x[i + 1u], x[i + 2u], x[i + 3u]);
{{- end}}
}
fn sink(e: u32, w: vec4<f32>) {
{{- range .Ms}}
  acc[{{.}}] += dot(w, xv({{.}}u, e));
{{- end}}
}
// A run that may cross the end of the row (bf16 rows of any length): the
// elements past k count as zero and x past the row is not read.
fn sink_tail(e: u32, w: vec4<f32>) {
  let ok = vec4<bool>(e < p.k, e + 1u < p.k, e + 2u < p.k, e + 3u < p.k);
{{- range .Ms}}
  {
    let i = p.x_off + {{.}}u * p.x_stride + e;
    var xs = vec4<f32>(0.0);
    for (var j = 0u; j < 4u; j++) {
      if (ok[j]) { xs[j] = {{if $.XVec}}x[(i + j) >> 2u][(i + j) & 3u]{{else}}x[i + j]{{end}}; }
    }
    acc[{{.}}] += dot(select(vec4<f32>(0.0), w, ok), xs);
  }
{{- end}}
}
{{- else}}
var<private> dbase: u32;

fn sink(e: u32, w: vec4<f32>) {
  let i = dbase + e;
{{- if .DstF16}}
  // dst starts at an even element and rows are whole blocks: i is even.
  d[i >> 1u] = pack2x16float(w.xy);
  d[(i >> 1u) + 1u] = pack2x16float(w.zw);
{{- else}}
  d[i] = w.x; d[i + 1u] = w.y; d[i + 2u] = w.z; d[i + 3u] = w.w;
{{- end}}
}
{{- end}}

// --- piece decoders: o = the block's offset in W, sub = which piece, eb =
// the block's first element within its row ----------------------------------
{{- if eq .T "q4_0"}}
// block_q4_0 {d f16; qs[16]}: element j is the low nibble of qs[j], j+16 the
// high nibble; value (q - 8) * d. One piece = one block.
fn piece(o: u32, sub: u32, eb: u32) {
  let i = o >> 2u;
  let a0 = W[i]; let a1 = W[i + 1u]; let a2 = W[i + 2u]; let a3 = W[i + 3u]; let a4 = W[i + 4u];
  let al = (o & 2u) == 0u;
  let dd = f16f(select(hi16(a0), lo16(a0), al));
  let q = select(vec4<u32>(a1, a2, a3, a4), vec4<u32>(mid(a0, a1), mid(a1, a2), mid(a2, a3), mid(a3, a4)), al);
  for (var k = 0u; k < 4u; k++) {
    sink(eb + 4u * k, (u8x4(q[k] & 0x0f0f0f0fu) - 8.0) * dd);
    sink(eb + 16u + 4u * k, (u8x4((q[k] >> 4u) & 0x0f0f0f0fu) - 8.0) * dd);
  }
}
{{- else if eq .T "q4_1"}}
// block_q4_1 {d, m f16; qs[16]} (20 bytes: always word aligned): q * d + m.
fn piece(o: u32, sub: u32, eb: u32) {
  let i = o >> 2u;
  let dm = W[i];
  let dd = f16f(lo16(dm));
  let mm = f16f(hi16(dm));
  for (var k = 0u; k < 4u; k++) {
    let q = W[i + 1u + k];
    sink(eb + 4u * k, u8x4(q & 0x0f0f0f0fu) * dd + mm);
    sink(eb + 16u + 4u * k, u8x4((q >> 4u) & 0x0f0f0f0fu) * dd + mm);
  }
}
{{- else if eq .T "q5_0"}}
// block_q5_0 {d f16; qh u32; qs[16]}: bit 4 of element j is bit j of qh;
// value (q - 16) * d.
fn piece(o: u32, sub: u32, eb: u32) {
  let i = o >> 2u;
  let a0 = W[i]; let a1 = W[i + 1u]; let a2 = W[i + 2u]; let a3 = W[i + 3u]; let a4 = W[i + 4u]; let a5 = W[i + 5u];
  let al = (o & 2u) == 0u;
  let dd = f16f(select(hi16(a0), lo16(a0), al));
  let qh = select(a1, mid(a0, a1), al);
  let q = select(vec4<u32>(a2, a3, a4, a5), vec4<u32>(mid(a1, a2), mid(a2, a3), mid(a3, a4), mid(a4, a5)), al);
  for (var k = 0u; k < 4u; k++) {
    let h0 = bits4(qh >> (4u * k)) << 4u;
    let h1 = bits4(qh >> (16u + 4u * k)) << 4u;
    sink(eb + 4u * k, (u8x4((q[k] & 0x0f0f0f0fu) | h0) - 16.0) * dd);
    sink(eb + 16u + 4u * k, (u8x4(((q[k] >> 4u) & 0x0f0f0f0fu) | h1) - 16.0) * dd);
  }
}
{{- else if eq .T "q5_1"}}
// block_q5_1 {d, m f16; qh u32; qs[16]} (24 bytes: word aligned): q * d + m.
fn piece(o: u32, sub: u32, eb: u32) {
  let i = o >> 2u;
  let dm = W[i];
  let qh = W[i + 1u];
  let dd = f16f(lo16(dm));
  let mm = f16f(hi16(dm));
  for (var k = 0u; k < 4u; k++) {
    let q = W[i + 2u + k];
    let h0 = bits4(qh >> (4u * k)) << 4u;
    let h1 = bits4(qh >> (16u + 4u * k)) << 4u;
    sink(eb + 4u * k, u8x4((q & 0x0f0f0f0fu) | h0) * dd + mm);
    sink(eb + 16u + 4u * k, u8x4(((q >> 4u) & 0x0f0f0f0fu) | h1) * dd + mm);
  }
}
{{- else if eq .T "q8_0"}}
// block_q8_0 {d f16; qs[32] int8}: q * d.
fn piece(o: u32, sub: u32, eb: u32) {
  let i = o >> 2u;
  let al = (o & 2u) == 0u;
  var a = W[i];
  let dd = f16f(select(hi16(a), lo16(a), al));
  for (var k = 0u; k < 8u; k++) {
    let b = W[i + 1u + k];
    sink(eb + 4u * k, i8x4(select(b, mid(a, b), al)) * dd);
    a = b;
  }
}
{{- else if eq .T "q2_k"}}
// block_q2_K {scales[16]; qs[64]; d, dmin f16} (84 bytes: word aligned).
// Element e = 128h + 32j + l: (qs[32h + l] >> 2j) & 3, scaled by
// scales[e / 16] (low nibble * d, minus high nibble * dmin).
// One piece = (h, 16 values of l) = 64 elements.
fn piece(o: u32, sub: u32, eb: u32) {
  let i = o >> 2u;
  let h = sub >> 1u;
  let lh = sub & 1u;
  let dm = W[i + 20u];
  let dd = f16f(lo16(dm));
  let dmin = f16f(hi16(dm));
  let sc = vec2<u32>(W[i + 2u * h], W[i + 2u * h + 1u]); // scales[8h .. 8h+7]
  let q = vec4<u32>(W[i + 4u + 8u * h + 4u * lh], W[i + 5u + 8u * h + 4u * lh],
                    W[i + 6u + 8u * h + 4u * lh], W[i + 7u + 8u * h + 4u * lh]);
  for (var j = 0u; j < 4u; j++) {
    let s = byte(sc[j >> 1u], 2u * (j & 1u) + lh);
    let dl = dd * f32(s & 0xfu);
    let ml = dmin * f32(s >> 4u);
    for (var k = 0u; k < 4u; k++) {
      sink(eb + 128u * h + 32u * j + 16u * lh + 4u * k, dl * u8x4((q[k] >> (2u * j)) & 0x03030303u) - ml);
    }
  }
}
{{- else if eq .T "q3_k"}}
// block_q3_K {hmask[32]; qs[64]; scales[12]; d f16}. Element e = 128h + 32j
// + l: low bits (qs[32h + l] >> 2j) & 3, minus 4 unless bit 4h + j of
// hmask[l] is set; times d * (6-bit scale e / 16 - 32).
// One piece = (h, 16 values of l) = 64 elements.
fn piece(o: u32, sub: u32, eb: u32) {
  let h = sub >> 1u;
  let lh = sub & 1u;
  let hm = ld16(o + 16u * lh);
  let q = ld16(o + 32u + 32u * h + 16u * lh);
  let sc = ld12(o + 96u);
  let dd = f16f(ld2(o + 108u));
  for (var j = 0u; j < 4u; j++) {
    // scale index s = 8h + 2j + lh: low 4 bits from byte s % 8 (nibble s / 8),
    // high 2 bits from byte 8 + s % 4 (bits 2 * (s / 4)).
    let b = 2u * j + lh;
    let lo = (select(sc.x, sc.y, j >= 2u) >> (8u * (b & 3u) + 4u * h)) & 0xfu;
    let hi = (sc.z >> (8u * (b & 3u) + 2u * (2u * h + (j >> 1u)))) & 3u;
    let dl = dd * f32(i32(lo | (hi << 4u)) - 32);
    for (var k = 0u; k < 4u; k++) {
      let v = ((q[k] >> (2u * j)) & 0x03030303u) | (((hm[k] >> (4u * h + j)) & 0x01010101u) << 2u);
      sink(eb + 128u * h + 32u * j + 16u * lh + 4u * k, dl * (u8x4(v) - 4.0));
    }
  }
}
{{- else if or (eq .T "q4_k") (eq .T "q5_k")}}
// 6-bit scale and min j of the 12 packed bytes (ggml's get_scale_min_k4).
fn scale_min_k4(j: u32, s0: u32, s1: u32, s2: u32) -> vec2<f32> {
  if (j < 4u) {
    return vec2<f32>(f32(byte(s0, j) & 63u), f32(byte(s1, j) & 63u));
  }
  let jj = j - 4u;
  return vec2<f32>(f32((byte(s2, jj) & 0xfu) | ((byte(s0, jj) >> 6u) << 4u)),
                   f32((byte(s2, jj) >> 4u) | ((byte(s1, jj) >> 6u) << 4u)));
}
{{- if eq .T "q4_k"}}
// block_q4_K {d, dmin f16; scales[12]; qs[128]} (144 bytes: 16-byte aligned).
// Sub-block sb = e / 32 of chunk c = e / 64: nibble sb & 1 of qs[32c + e % 32];
// value d * sc[sb] * q - dmin * m[sb]. One piece = (c, 16 values of l): 32
// elements.
fn piece(o: u32, sub: u32, eb: u32) {
  let i = o >> 2u;
  let c = sub >> 1u;
  let lh = sub & 1u;
  let dm = W[i];
  let dd = f16f(lo16(dm));
  let dmin = f16f(hi16(dm));
  let s0 = W[i + 1u]; let s1 = W[i + 2u]; let s2 = W[i + 3u];
  let sm0 = scale_min_k4(2u * c, s0, s1, s2);
  let sm1 = scale_min_k4(2u * c + 1u, s0, s1, s2);
  let d0 = dd * sm0.x; let m0 = dmin * sm0.y;
  let d1 = dd * sm1.x; let m1 = dmin * sm1.y;
  let qi = i + 4u + 8u * c + 4u * lh;
  for (var k = 0u; k < 4u; k++) {
    let q = W[qi + k];
    let e = eb + 64u * c + 16u * lh + 4u * k;
    sink(e, d0 * u8x4(q & 0x0f0f0f0fu) - m0);
    sink(e + 32u, d1 * u8x4((q >> 4u) & 0x0f0f0f0fu) - m1);
  }
}
{{- else}}
// block_q5_K {d, dmin f16; scales[12]; qh[32]; qs[128]} (176 bytes: 16-byte
// aligned). As q4_K, plus bit 4 of element 64c + l (l < 32) is bit 2c of qh[l]
// and of element 64c + 32 + l is bit 2c + 1.
fn piece(o: u32, sub: u32, eb: u32) {
  let i = o >> 2u;
  let c = sub >> 1u;
  let lh = sub & 1u;
  let dm = W[i];
  let dd = f16f(lo16(dm));
  let dmin = f16f(hi16(dm));
  let s0 = W[i + 1u]; let s1 = W[i + 2u]; let s2 = W[i + 3u];
  let sm0 = scale_min_k4(2u * c, s0, s1, s2);
  let sm1 = scale_min_k4(2u * c + 1u, s0, s1, s2);
  let d0 = dd * sm0.x; let m0 = dmin * sm0.y;
  let d1 = dd * sm1.x; let m1 = dmin * sm1.y;
  let qi = i + 12u + 8u * c + 4u * lh;
  let hi = i + 4u + 4u * lh;
  for (var k = 0u; k < 4u; k++) {
    let q = W[qi + k];
    let qh = W[hi + k];
    let e = eb + 64u * c + 16u * lh + 4u * k;
    sink(e, d0 * u8x4((q & 0x0f0f0f0fu) | (((qh >> (2u * c)) & 0x01010101u) << 4u)) - m0);
    sink(e + 32u, d1 * u8x4(((q >> 4u) & 0x0f0f0f0fu) | (((qh >> (2u * c + 1u)) & 0x01010101u) << 4u)) - m1);
  }
}
{{- end}}
{{- else if eq .T "q6_k"}}
// block_q6_K {ql[128]; qh[64]; scales[16] int8; d f16}. Element e = 128h +
// 32t + l: low 4 bits are nibble t / 2 of ql[64h + 32(t & 1) + l], high 2 bits
// are bits 2t of qh[32h + l]; value d * scales[e / 16] * (q - 32).
// One piece = (h, 16 values of l) = 64 elements.
fn piece(o: u32, sub: u32, eb: u32) {
  let h = sub >> 1u;
  let lh = sub & 1u;
  let qa = ld16(o + 64u * h + 16u * lh);
  let qb = ld16(o + 64u * h + 32u + 16u * lh);
  let qh = ld16(o + 128u + 32u * h + 16u * lh);
  let sc = ld16(o + 192u + 8u * h).xy; // scales[8h .. 8h+7]
  let dd = f16f(ld2(o + 208u));
  for (var t = 0u; t < 4u; t++) {
    // scales[8h + 2t + lh], int8
    let s = bitcast<i32>(byte(sc[t >> 1u], 2u * (t & 1u) + lh) << 24u) >> 24u;
    let dl = dd * f32(s);
    for (var k = 0u; k < 4u; k++) {
      let ql = select(qa[k], qb[k], (t & 1u) == 1u) >> (4u * (t >> 1u));
      let v = (ql & 0x0f0f0f0fu) | (((qh[k] >> (2u * t)) & 0x03030303u) << 4u);
      sink(eb + 128u * h + 32u * t + 16u * lh + 4u * k, dl * (u8x4(v) - 32.0));
    }
  }
}
{{- else if eq .T "bf16"}}
// bf16 rows of any length at any element offset: o is the piece's first half
// in W; a piece is 8 values (sink_tail past the row's end).
fn piece(o: u32, sub: u32, eb: u32) {
  let wi = o >> 1u;
  let a0 = W[wi]; let a1 = W[wi + 1u]; let a2 = W[wi + 2u]; let a3 = W[wi + 3u]; let a4 = W[wi + 4u];
  let al = (o & 1u) == 0u;
  let v = select(vec4<u32>(mid(a0, a1), mid(a1, a2), mid(a2, a3), mid(a3, a4)), vec4<u32>(a0, a1, a2, a3), al);
  let lo = vec4<f32>(bitcast<f32>(v.x << 16u), bitcast<f32>(v.x & 0xffff0000u),
                     bitcast<f32>(v.y << 16u), bitcast<f32>(v.y & 0xffff0000u));
  let hi = vec4<f32>(bitcast<f32>(v.z << 16u), bitcast<f32>(v.z & 0xffff0000u),
                     bitcast<f32>(v.w << 16u), bitcast<f32>(v.w & 0xffff0000u));
  if (eb + 8u <= p.k) {
    sink(eb, lo);
    sink(eb + 4u, hi);
  } else {
    sink_tail(eb, lo);
    sink_tail(eb + 4u, hi);
  }
}
{{- end}}

// --- kernels ----------------------------------------------------------------
{{- if eq .Kernel "matvec"}}
// A workgroup computes R = WG / TPR rows; the TPR lanes of a row take pieces
// lane, lane + TPR, ... and their partial sums meet in a fixed tree, so a
// row's result depends on neither M nor which other rows are computed.
const WG: u32 = {{.WG}}u;
const TPR: u32 = {{.TPR}}u;
const R: u32 = WG / TPR;
const RED: u32 = {{.M}}u * WG;
var<workgroup> red: array<f32, RED>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
  let lane = lid.x % TPR;
  let row = (wid.y * nwg.x + wid.x) * R + lid.x / TPR;
{{- range .Ms}}
  acc[{{.}}] = 0.0;
{{- end}}
  if (row < p.rows) {
    let rb = p.w_off + row * p.w_row;
{{- if eq .Unroll 2}}
    for (var g = lane; g < p.np; g += 2u * TPR) {
      let blk = g / PPB;
      piece(rb + blk * BB, g % PPB, blk * BS);
      let g2 = g + TPR;
      if (g2 < p.np) {
        let blk2 = g2 / PPB;
        piece(rb + blk2 * BB, g2 % PPB, blk2 * BS);
      }
    }
{{- else}}
    for (var g = lane; g < p.np; g += TPR) {
      let blk = g / PPB;
      piece(rb + blk * BB, g % PPB, blk * BS);
    }
{{- end}}
  }
{{- range .Ms}}
  red[{{.}}u * WG + lid.x] = acc[{{.}}];
{{- end}}
  workgroupBarrier();
  for (var s = TPR / 2u; s > 0u; s >>= 1u) {
    if (lane < s) {
{{- range .Ms}}
      red[{{.}}u * WG + lid.x] += red[{{.}}u * WG + lid.x + s];
{{- end}}
    }
    workgroupBarrier();
  }
  if (lane == 0u && row < p.rows) {
{{- range .Ms}}
    d[p.d_off + {{.}}u * p.d_stride + row] = red[{{.}}u * WG + lid.x];
{{- end}}
  }
}
{{- else}}
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
  dbase = p.d_off + row * p.d_stride;
{{- if eq .Kernel "embed"}}
  let id = ids[p.x_off + row];
  if (id < p.id_lo || id >= p.id_hi) {
    if (p.zero_oob != 0u && id >= p.vocab) {
      // No such table row: this piece's share of the output row is zero.
      let n = BS / PPB;
      for (var e = blk * BS + sub * n; e < blk * BS + (sub + 1u) * n; e += 4u) {
        sink(e, vec4<f32>(0.0));
      }
    }
    return;
  }
  piece(p.w_off + (id - p.id_lo) * p.w_row + blk * BB, sub, blk * BS);
{{- else}}
  piece(p.w_off + row * p.w_row + blk * BB, sub, blk * BS);
{{- end}}
}
{{- end}}
