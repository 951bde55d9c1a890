package serve

import (
	"math"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

func TestTokenRateWindow(t *testing.T) {
	m := New(Config{}, zerolog.Nop()).metrics
	t0 := time.Unix(1000, 0)
	if r := m.addSample(t0, 100); r != 0 {
		t.Errorf("one sample: rate %v, want 0", r)
	}
	// 50 tokens/s for 4 s.
	var r float64
	for i := 1; i <= 4; i++ {
		r = m.addSample(t0.Add(time.Duration(i)*time.Second), uint64(100+50*i))
	}
	if math.Abs(r-50) > 1e-9 {
		t.Errorf("steady 50/s: %v", r)
	}
	// Then idle for the whole window: the rate falls to 0 once the busy
	// seconds leave the window.
	for i := 5; i <= 20; i++ {
		r = m.addSample(t0.Add(time.Duration(i)*time.Second), 300)
	}
	if r != 0 {
		t.Errorf("idle for longer than the window: %v", r)
	}
	if len(m.samples) > int(rateWindow/time.Second)+2 {
		t.Errorf("%d samples kept", len(m.samples))
	}
	// Sparse scrapes (every 30 s) measure over the gap.
	r = m.addSample(t0.Add(50*time.Second), 300+30*10)
	if math.Abs(r-10) > 1e-9 {
		t.Errorf("sparse: %v, want 10", r)
	}
	// A counter that goes back (a new backend) restarts the history.
	if r = m.addSample(t0.Add(51*time.Second), 5); r != 0 {
		t.Errorf("after a reset: %v", r)
	}
}
