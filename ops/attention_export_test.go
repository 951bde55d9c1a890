package ops

// SetAttentionSplitTarget sets the workgroups per sequence the split-K
// chunk count aims at (0: the device's default), so tests on a software
// adapter also run a GPU's chunking; it returns the restore.
func SetAttentionSplitTarget(n int) (restore func()) {
	old := attnSplitTarget
	attnSplitTarget = n
	return func() { attnSplitTarget = old }
}
