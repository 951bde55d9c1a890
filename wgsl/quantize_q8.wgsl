// QuantizeQ8 (ops/quantize_q8.go): each block of 32 elements of an x row
// (times g under Norm) becomes 32 int8 quants q = round(127 * x / amax),
// ties away from zero, computed exactly in integers, and the scale
// d = amax * f32(1/127), as ggml's q8_1 for the int8 matvec. Row m of dst
// (d_stride words from d_off) holds K/4 words of packed quants, K/32 scales,
// K/16 sums of 16 quants (f32, exact) and 1 / rms(x) (Norm; else 1).
struct Params {
  k: u32,
  x_off: u32, x_stride: u32,
  d_off: u32, d_stride: u32,
  g_off: u32,
  eps: f32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> d: array<u32>;
{{- if .Norm}}
@group(0) @binding(3) var<storage, read> g: array<f32>;
{{- end}}

const WG: u32 = {{.WG}}u;
const INV127: f32 = {{.Inv127}}; // f32(1/127), written exactly

// The nearest integer to 127 * |v| / amax (|v| <= amax), ties away from
// zero, with v's sign: both as mantissa * 2^exponent (subnormals without
// the implicit bit), so the quotient is an exact integer division.
fn q8(v: f32, amax: u32) -> i32 {
  let vb = bitcast<u32>(v);
  let ab = vb & 0x7fffffffu;
  let ex = ab >> 23u;
  let ea = amax >> 23u;
  let sh = max(ea, 1u) - max(ex, 1u);
  if (ab == 0u || sh >= 9u) { return 0; } // 127 |v| / amax < 0.5
  let mx = select((ab & 0x7fffffu) | 0x800000u, ab & 0x7fffffu, ex == 0u);
  let ma = select((amax & 0x7fffffu) | 0x800000u, amax & 0x7fffffu, ea == 0u);
  let num = mx * 127u;
  let den = ma << sh;
  var q = num / den;
  let r = num - q * den;
  if (r >= den - r) { q += 1u; }
  return select(i32(q), -i32(q), (vb >> 31u) != 0u);
}

fn xin(m: u32, e: u32) -> f32 {
  return x[p.x_off + m * p.x_stride + e]{{if .Norm}} * g[p.g_off + e]{{end}};
}
{{- if .Norm}}
var<workgroup> red: array<f32, WG>;
{{- end}}

// Workgroup (x, y): blocks x*WG .. of row y, one block per thread.
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let m = wid.y;
  let base = p.d_off + m * p.d_stride;
  let nb = p.k / 32u;
{{- if .Norm}}
  // 1 / rms(x) as the fused matvec computes it: thread partials over vec4
  // steps, then a fixed tree.
  var ss = 0.0;
  for (var e = lid.x * 4u; e < p.k; e += WG * 4u) {
    let i = p.x_off + m * p.x_stride + e;
    let v = vec4<f32>(x[i], x[i + 1u], x[i + 2u], x[i + 3u]);
    ss += dot(v, v);
  }
  red[lid.x] = ss;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid.x < s) { red[lid.x] += red[lid.x + s]; }
    workgroupBarrier();
  }
  let ns = inverseSqrt(red[0] / f32(p.k) + p.eps);
{{- else}}
  let ns = 1.0;
{{- end}}
  if (wid.x == 0u && lid.x == 0u) {
    d[base + p.k / 4u + nb + 2u * nb] = bitcast<u32>(ns);
  }
  let b = wid.x * WG + lid.x;
  if (b >= nb) { return; }
  let e0 = 32u * b;
  var amax = 0u;
  for (var i = 0u; i < 32u; i++) {
    amax = max(amax, bitcast<u32>(xin(m, e0 + i)) & 0x7fffffffu);
  }
  var sum0 = 0i;
  var sum1 = 0i;
  for (var w = 0u; w < 8u; w++) {
    var word = 0u;
    for (var i = 0u; i < 4u; i++) {
      let q = q8(xin(m, e0 + 4u * w + i), amax);
      word |= (bitcast<u32>(q) & 0xffu) << (8u * i);
      if (w < 4u) { sum0 += q; } else { sum1 += q; }
    }
    d[base + 8u * b + w] = word;
  }
  d[base + p.k / 4u + b] = bitcast<u32>(bitcast<f32>(amax) * INV127);
  d[base + p.k / 4u + nb + 2u * b] = bitcast<u32>(f32(sum0));
  d[base + p.k / 4u + nb + 2u * b + 1u] = bitcast<u32>(f32(sum1));
}
