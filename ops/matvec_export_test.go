package ops

// SetMatVecSubgroups chooses, where the device has subgroups, whether MatVec,
// MatVecQuant and MatVecExperts reduce with them (the default) or through workgroup memory, so tests
// cover both on one device; it returns the restore.
func SetMatVecSubgroups(on bool) (restore func()) {
	old := matVecNoSubgroups
	matVecNoSubgroups = !on
	return func() { matVecNoSubgroups = old }
}

// SetExpertTiling caps the experts kernel's tile at m slots, turns its
// staging of x off (stage false) and forces the wide shape (four rows a
// lane, 128 lanes, x unstaged) on any adapter, so tests can check that
// none changes a value; it returns the restore.
func SetExpertTiling(m int, stage, wide bool) (restore func()) {
	old := expertTuning
	expertTuning.MaxTile, expertTuning.NoStage, expertTuning.Wide = m, !stage, wide
	return func() { expertTuning = old }
}

// SetMatVecQuantUnroll unrolls the quantised matvec's group loops on
// software adapters as on GPUs; it returns the restore.
func SetMatVecQuantUnroll(on bool) (restore func()) {
	old := matVecQuantUnroll
	matVecQuantUnroll = on
	return func() { matVecQuantUnroll = old }
}
