// Softmax over rows with explicit row strides; entries equal to -inf are
// masked (they get 0; a row of only -inf gets zeros, never NaN). One
// workgroup per row: each thread keeps a running (max, sum) over its
// columns (online softmax), the pairs are merged by a fixed tree, then
// every column is written once. Columns between cols and the stride are
// never touched. In-place variant: x and d are the same binding.
struct Params {
  rows: u32, cols: u32,
  x_off: u32, x_stride: u32,
  d_off: u32, d_stride: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
{{- if .InPlace}}
@group(0) @binding(1) var<storage, read_write> d: array<f32>;
fn ld(i: u32) -> f32 { return d[i]; }
{{- else}}
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> d: array<f32>;
fn ld(i: u32) -> f32 { return x[i]; }
{{- end}}

const WG: u32 = {{.WG}}u;
// "Nothing seen yet": finite, so differences with it never produce NaN.
const LOW: f32 = -3.0e38;
var<workgroup> part_m: array<f32, WG>;
var<workgroup> part_s: array<f32, WG>;

// Bit test rather than a float compare: robust to fast-math assumptions.
fn is_masked(v: f32) -> bool { return bitcast<u32>(v) == 0xff800000u; }

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
  let row = wid.y * nwg.x + wid.x;
  if (row >= p.rows) { return; }  // uniform per workgroup: barriers stay valid
  let xb = p.x_off + row * p.x_stride;
  let db = p.d_off + row * p.d_stride;
  var m = LOW;
  var s = 0.0;
  for (var c = lid.x; c < p.cols; c += WG) {
    let v = ld(xb + c);
    if (!is_masked(v)) {
      if (v > m) {
        s = s * exp(m - v) + 1.0;
        m = v;
      } else {
        s += exp(v - m);
      }
    }
  }
  part_m[lid.x] = m;
  part_s[lid.x] = s;
  workgroupBarrier();
  for (var k = WG / 2u; k > 0u; k >>= 1u) {
    if (lid.x < k) {
      let m1 = part_m[lid.x];
      let m2 = part_m[lid.x + k];
      let mm = max(m1, m2);
      part_s[lid.x] = part_s[lid.x] * exp(m1 - mm) + part_s[lid.x + k] * exp(m2 - mm);
      part_m[lid.x] = mm;
    }
    workgroupBarrier();
  }
  let mx = part_m[0];
  let sum = part_s[0];
  for (var c = lid.x; c < p.cols; c += WG) {
    let v = ld(xb + c);
    var y = 0.0;
    if (sum > 0.0 && !is_masked(v)) {
      y = exp(v - mx) / sum;
    }
    d[db + c] = y;
  }
}
