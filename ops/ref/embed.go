package ref

// Embed: dst[t, :] = table[ids[t], :] for a table of vocab rows of dim;
// ids outside the table give rows of zeros.
func Embed(dst, table []float64, ids []uint32, vocab, dim int) {
	for t, id := range ids {
		for c := 0; c < dim; c++ {
			v := 0.0
			if int(id) < vocab {
				v = table[int(id)*dim+c]
			}
			dst[t*dim+c] = v
		}
	}
}
