// Causal mask in place on a block of scores: query i of the block sits at
// absolute position q_offset+i and sees keys 0..q_offset+i; every later key
// of its row becomes -inf. The mask is computed from indices: no n×n mask
// exists anywhere. A workgroup covers CHUNK columns of one (head, query)
// row and returns at once when all of them are visible.
struct Params {
  heads: u32, queries: u32, keys: u32,
  off: u32, row_stride: u32, head_stride: u32,
  q_offset: u32,
  chunks: u32,     // column chunks per row
  neg_inf: f32,    // -inf from the host (WGSL has no infinity literal)
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> s: array<f32>;

const WG: u32 = {{.WG}}u;
const CHUNK: u32 = {{.Chunk}}u;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
  let id = wid.y * nwg.x + wid.x;
  let row = id / p.chunks;
  if (row >= p.heads * p.queries) { return; }
  let h = row / p.queries;
  let i = row % p.queries;
  let first_masked = p.q_offset + i + 1u;
  let c0 = (id % p.chunks) * CHUNK;
  if (c0 + CHUNK <= first_masked) { return; }
  let base = p.off + h * p.head_stride + i * p.row_stride;
  for (var c = c0 + lid.x; c < min(c0 + CHUNK, p.keys); c += WG) {
    if (c >= first_masked) {
      s[base + c] = p.neg_inf;
    }
  }
}
