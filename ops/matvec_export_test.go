package ops

// SetMatVecSubgroups chooses, where the device has subgroups, whether MatVec
// reduces with them (the default) or through workgroup memory, so tests
// cover both on one device; it returns the restore.
func SetMatVecSubgroups(on bool) (restore func()) {
	old := matVecNoSubgroups
	matVecNoSubgroups = !on
	return func() { matVecNoSubgroups = old }
}

// SetExpertTiling caps the experts kernel's tile at m slots and turns its
// staging of x off (stage false), so tests can check that neither changes
// a value; it returns the restore.
func SetExpertTiling(m int, stage bool) (restore func()) {
	oldM, oldStage := expertTileMax, expertNoStage
	expertTileMax, expertNoStage = m, !stage
	return func() { expertTileMax, expertNoStage = oldM, oldStage }
}
