package ops

// SetEmbedChunkBytes caps the table bytes one Embed dispatch binds, so
// tests reach the chunked path with small tables; it returns the restore.
func SetEmbedChunkBytes(n uint64) (restore func()) {
	old := embedChunkBytes
	embedChunkBytes = n
	return func() { embedChunkBytes = old }
}
