package ops

// TuneMatVecQuant sets the quantised matvec's workgroup shape for the
// tuning benchmark; the returned function restores the defaults.
func TuneMatVecQuant(tpr, rpt, wg, u int, noStage bool) (restore func()) {
	matVecQuantTuning = &struct {
		TPR, RPT, WG, U int
		NoStage         bool
	}{tpr, rpt, wg, u, noStage}
	return func() { matVecQuantTuning = nil }
}
