// Elementwise f32 ops ({{.Op}}): one thread per output element; workgroups
// are spread over x and y (ctx.Grid) and recombined into a linear index.
struct Params {
  n: u32,
  a_off: u32, b_off: u32, d_off: u32,
  cols: u32,   // add_row: bias length
  scale: f32,  // scale: the factor; softcap: the cap
  inv: f32,    // softcap: 1/cap
}
@group(0) @binding(0) var<uniform> p: Params;
// An input in dst's binding window (SameA/SameB: in place, or a disjoint view
// of the same buffer) is not bound: it is read through d, as Dawn (natively
// and in browsers) rejects overlapping writable bindings.
{{- if not .SameA}}
@group(0) @binding({{.BindA}}) var<storage, {{if .AliasA}}read_write{{else}}read{{end}}> a: array<f32>;
{{- end}}
{{- if and .HasB (not .SameB)}}
@group(0) @binding({{.BindB}}) var<storage, {{if .AliasB}}read_write{{else}}read{{end}}> b: array<f32>;
{{- end}}
@group(0) @binding({{.BindD}}) var<storage, read_write> d: array<f32>;

const WG: u32 = {{.WG}}u;


@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * WG + lid;
  if (i >= p.n) { return; }
  let x = {{if .SameA}}d{{else}}a{{end}}[p.a_off + i];
{{- if eq .Op "add"}}
  d[p.d_off + i] = x + {{if .SameB}}d{{else}}b{{end}}[p.b_off + i];
{{- else if eq .Op "mul"}}
  d[p.d_off + i] = x * {{if .SameB}}d{{else}}b{{end}}[p.b_off + i];
{{- else if eq .Op "silu_mul"}}
  d[p.d_off + i] = act_silu(x, {{if .SameB}}d{{else}}b{{end}}[p.b_off + i]);
{{- else if eq .Op "gelu_mul"}}
  d[p.d_off + i] = act_gelu(x, {{if .SameB}}d{{else}}b{{end}}[p.b_off + i]);
{{- else if eq .Op "swiglu_oai_mul"}}
  d[p.d_off + i] = act_swiglu_oai(x, {{if .SameB}}d{{else}}b{{end}}[p.b_off + i]);
{{- else if eq .Op "softcap"}}
  d[p.d_off + i] = p.scale * tanh_stable(x * p.inv);
{{- else if eq .Op "add_row"}}
  d[p.d_off + i] = x + {{if .SameB}}d{{else}}b{{end}}[p.b_off + i % p.cols];
{{- else if eq .Op "scale"}}
  d[p.d_off + i] = x * p.scale;
{{- end}}
}
