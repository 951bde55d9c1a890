package ops

import "github.com/wgllm/wgllm/runtime/gpu"

// MatMulQuantTiles is how many tiles MatMulQuant chooses from.
var MatMulQuantTiles = len(matMulQuantTiles)

// MatMulPairTiles is how many tiles MatMulExpertsGated chooses from.
var MatMulPairTiles = len(matMulPairTiles)

// SetMatMulQuantTile makes MatMulQuant and MatMulExperts use tile i of their
// list (MatMulExpertsGated: of its own list) wherever it fits the device
// (-1: their own choice), so tests and benchmarks cover each tile; it
// returns the restore.
func SetMatMulQuantTile(i int) (restore func()) {
	old := matMulQuantForce
	matMulQuantForce = i
	return func() { matMulQuantForce = old }
}

// MatMulQuantTileName is tile i as BMxBNxBK.
func MatMulQuantTileName(i int) string { return matMulQuantTiles[i].String() }

// MatMulQuantTileFor is the tile MatMulQuant picks for an [m, n] output, as BMxBNxBK.
func MatMulQuantTileFor(ctx *gpu.Context, m, n int) string {
	return matMulQuantPick(ctx, m, n, 1, 0).String()
}
