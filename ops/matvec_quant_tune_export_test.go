package ops

// TuneMatVecQuant sets the quantised matvec's workgroup shape for the
// tuning benchmark; the returned function restores the defaults.
func TuneMatVecQuant(tpr, rpt, wg, u int, noStage, ahead bool) (restore func()) {
	if noStage || ahead {
		u = 0
	}
	matVecQuantTuning = &matVecQuantShapeOverride{TPR: tpr, RPT: rpt, WG: wg, U: u, Ahead: ahead}
	return func() { matVecQuantTuning = nil }
}
