package ops

// TuneMatVecQuant sets the quantised matvec's workgroup shape for the
// tuning benchmark; the returned function restores the defaults.
func TuneMatVecQuant(tpr, rpt, wg, u int, noStage, ahead bool) (restore func()) {
	matVecQuantTuning = &struct {
		TPR, RPT, WG, U int
		NoStage, Ahead  bool
	}{tpr, rpt, wg, u, noStage || ahead, ahead}
	return func() { matVecQuantTuning = nil }
}
