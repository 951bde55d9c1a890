package quant

// Exported for the tests.
var (
	BestIndexIQ4       = bestIndexIQ4
	BestIndexIQ4Search = bestIndexIQ4Search
	IQ4Thresholds      = iq4Thresholds
)
