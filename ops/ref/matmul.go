package ref

// MatVec: dst[m, n] = sum_k w[n, k] * x[m, k], for w [n, k] and x [rows, k].
func MatVec(dst, w, x []float64, rows, n, k int) {
	for m := 0; m < rows; m++ {
		for j := 0; j < n; j++ {
			s := 0.0
			for i := 0; i < k; i++ {
				s += w[j*k+i] * x[m*k+i]
			}
			dst[m*n+j] = s
		}
	}
}

// MatMul: dst[b, m, n] = sum_k a[b, m, k] * B[b, k, n] over batch b. B is
// bm stored [n, k] when transB and [k, n] otherwise; when broadcastB one
// bm serves every batch.
func MatMul(dst, a, bm []float64, batch, m, n, k int, transB, broadcastB bool) {
	for bi := 0; bi < batch; bi++ {
		ab := a[bi*m*k:]
		bb := bm
		if !broadcastB {
			bb = bm[bi*n*k:]
		}
		db := dst[bi*m*n:]
		for r := 0; r < m; r++ {
			for c := 0; c < n; c++ {
				s := 0.0
				for i := 0; i < k; i++ {
					bv := bb[i*n+c]
					if transB {
						bv = bb[c*k+i]
					}
					s += ab[r*k+i] * bv
				}
				db[r*n+c] = s
			}
		}
	}
}
