package ops

import "fmt"

// MatMulQuantTiles is how many tiles MatMulQuant chooses from.
var MatMulQuantTiles = len(matMulQuantTiles)

// SetMatMulQuantTile makes MatMulQuant use tile i of its list wherever it
// fits the device (-1: its own choice), so tests and benchmarks cover each
// tile; it returns the restore.
func SetMatMulQuantTile(i int) (restore func()) {
	old := matMulQuantForce
	matMulQuantForce = i
	return func() { matMulQuantForce = old }
}

// MatMulQuantTileName is tile i as BMxBN.
func MatMulQuantTileName(i int) string {
	t := matMulQuantTiles[i]
	return fmt.Sprintf("%dx%d", t.bm(), t.bn())
}
