// f16 / bf16 source rows to f32 or f16 output, one output word per thread:
// Dequantize of half-precision weights and EmbedQuant of half-precision
// tables (ops/dequant.go). Rows may have any length and views any offset, so
// an f16 output word may hold one element of this op and one of a
// neighbouring tensor; that word is read, patched and written back.
struct Params {
  n: u32,           // output elements
  k: u32,           // elements per row
  s_off: u32,       // first source element (halves) of row 0 in S
  d_off: u32,       // first output element
  x_off: u32,       // embed: first id
  id_lo: u32,       // embed: table rows [id_lo, id_hi) are in this dispatch's S window
  id_hi: u32,
  vocab: u32,
  zero_oob: u32,    // embed: this dispatch writes the zero rows of out-of-range ids
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> S: array<u32>;
{{- if .Embed}}
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> d: array<{{if .DstF16}}u32{{else}}f32{{end}}>;
{{- else}}
@group(0) @binding(2) var<storage, read_write> d: array<{{if .DstF16}}u32{{else}}f32{{end}}>;
{{- end}}

fn f16f(h: u32) -> f32 {
  let s = (h & 0x8000u) << 16u;
  let e = (h >> 10u) & 0x1fu;
  let m = h & 0x3ffu;
  let sub = f32(m) * 5.9604644775390625e-8;
  let normal = bitcast<f32>(s | ((e + 112u) << 23u) | (m << 13u));
  let special = bitcast<f32>(s | 0x7f800000u | (m << 13u));
  return select(select(normal, special, e == 31u), select(sub, -sub, s != 0u), e == 0u);
}

// Source half number i.
fn half(i: u32) -> u32 { return (S[i >> 1u] >> ((i & 1u) * 16u)) & 0xffffu; }

// Output element j (0 <= j < n): its value and whether this dispatch writes it.
fn value(j: u32) -> vec2<f32> {
  let row = j / p.k;
  let col = j % p.k;
{{- if .Embed}}
  let id = ids[p.x_off + row];
  if (id < p.id_lo || id >= p.id_hi) {
    return vec2<f32>(0.0, select(0.0, 1.0, p.zero_oob != 0u && id >= p.vocab));
  }
  let h = half(p.s_off + (id - p.id_lo) * p.k + col);
{{- else}}
  let h = half(p.s_off + row * p.k + col);
{{- end}}
{{- if .BF16}}
  return vec2<f32>(bitcast<f32>(h << 16u), 1.0);
{{- else}}
  return vec2<f32>(f16f(h), 1.0);
{{- end}}
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
  let t = (wid.y * nwg.x + wid.x) * 256u + lid.x;
{{- if .DstF16}}
  // Output word t covers output elements j0, j0 + 1.
  let j0 = 2u * t - (p.d_off & 1u);
  let w = (p.d_off >> 1u) + t;
  let in0 = t > 0u || (p.d_off & 1u) == 0u;
  let in1 = j0 + 1u < p.n;
  if (!in1 && (!in0 || j0 >= p.n)) { return; }
  var a = vec2<f32>(0.0);
  var b = vec2<f32>(0.0);
  if (in0 && j0 < p.n) { a = value(j0); }
  if (in1) { b = value(j0 + 1u); }
  let mask = select(0u, 0xffffu, a.y != 0.0) | select(0u, 0xffff0000u, b.y != 0.0);
  if (mask == 0u) { return; }
  let packed = pack2x16float(vec2<f32>(a.x, b.x));
  if (mask == 0xffffffffu) {
    d[w] = packed;
    return;
  }
  // Keep the other half's bits exactly as they are.
  d[w] = (packed & mask) | (d[w] & ~mask);
{{- else}}
  if (t >= p.n) { return; }
  let v = value(t);
  if (v.y != 0.0) { d[p.d_off + t] = v.x; }
{{- end}}
}
