package ops

// SetMatVecSubgroups chooses, where the device has subgroups, whether MatVec
// reduces with them (the default) or through workgroup memory, so tests
// cover both on one device; it returns the restore.
func SetMatVecSubgroups(on bool) (restore func()) {
	old := matVecNoSubgroups
	matVecNoSubgroups = !on
	return func() { matVecNoSubgroups = old }
}

// SetMatVecQuantUnroll unrolls the quantised matvec's group loops on
// software adapters as on GPUs; it returns the restore.
func SetMatVecQuantUnroll(on bool) (restore func()) {
	old := matVecQuantUnroll
	matVecQuantUnroll = on
	return func() { matVecQuantUnroll = old }
}
