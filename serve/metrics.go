package serve

import (
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/wgllm/wgllm/runtime/engine"
)

// rateWindow is the span over which wgllm_tokens_per_second is measured.
const rateWindow = 10 * time.Second

// metrics is the server's Prometheus registry (its own, so several
// servers in one process do not collide).
type metrics struct {
	srv      *Server
	registry *prometheus.Registry
	handler  http.Handler

	requests *prometheus.CounterVec // by endpoint and outcome
	refused  prometheus.Counter     // connections closed at accept (every cap reached)
	ttft     prometheus.Histogram

	rateMu  sync.Mutex
	samples []tokenSample // TokensGenerated over time, oldest first
}

type tokenSample struct {
	at     time.Time
	tokens uint64
}

var (
	descQueueDepth   = prometheus.NewDesc("wgllm_queue_depth", "Generation requests waiting for a sequence slot.", nil, nil)
	descQueueLimit   = prometheus.NewDesc("wgllm_queue_limit", "Queue length beyond which requests are refused (429).", nil, nil)
	descActive       = prometheus.NewDesc("wgllm_active_sequences", "Sequences being generated now.", nil, nil)
	descKVUsed       = prometheus.NewDesc("wgllm_kv_blocks_used", "KV cache blocks in use.", nil, nil)
	descKVTotal      = prometheus.NewDesc("wgllm_kv_blocks_total", "KV cache blocks in all.", nil, nil)
	descTokens       = prometheus.NewDesc("wgllm_tokens_generated_total", "Tokens generated since start.", nil, nil)
	descPromptTokens = prometheus.NewDesc("wgllm_prompt_tokens_total", "Prompt tokens processed since start.", nil, nil)
	descFinished     = prometheus.NewDesc("wgllm_engine_requests_finished_total", "Requests the engine finished since start.", nil, nil)
	descRate         = prometheus.NewDesc("wgllm_tokens_per_second", "Tokens generated per second over the last 10 seconds.", nil, nil)
	descReady        = prometheus.NewDesc("wgllm_model_loaded", "1 once the model is loaded and the API serves.", nil, nil)
	descWebsockets   = prometheus.NewDesc("wgllm_websocket_connections", "Open websocket connections.", nil, nil)
	descInFlight     = prometheus.NewDesc("wgllm_server_in_flight_requests", "Generations this server has submitted that have not ended.", nil, nil)
	descConns        = prometheus.NewDesc("wgllm_http_connections", "Open HTTP connections (websockets included); slot is normal, or reserved (beyond a cap: /health and /metrics only).", []string{"slot"}, nil)
)

func newMetrics(s *Server) *metrics {
	m := &metrics{srv: s, registry: prometheus.NewRegistry()}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wgllm_requests_total",
		Help: "Generation requests by endpoint (chat, completions, requests, ws, ollama_generate, ollama_chat) and outcome (stop, length, cancelled, failed, busy, unavailable, rejected).",
	}, []string{"endpoint", "outcome"})
	m.ttft = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "wgllm_time_to_first_token_seconds",
		Help:    "Time from submission to the first generated token.",
		Buckets: []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60},
	})
	m.refused = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "wgllm_http_connections_refused_total",
		Help: "Connections closed at accept because the connection caps and their reserved slots were all taken.",
	})
	m.registry.MustRegister(m, m.requests, m.ttft, m.refused,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.handler = promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
	return m
}

// observeDone records a finished job's outcome and time to first token.
func (m *metrics) observeDone(endpoint string, ev engine.Event) {
	outcome := ev.FinishReason
	if ev.Err != nil {
		outcome = "failed"
	}
	switch outcome {
	case "stop", "length", "cancelled", "failed":
	default:
		outcome = "other"
	}
	m.requests.WithLabelValues(endpoint, outcome).Inc()
	if ev.Usage.CompletionTokens > 0 && ev.Timings.TimeToFirstMS > 0 {
		m.ttft.Observe(ev.Timings.TimeToFirstMS / 1000)
	}
}

// sampleRate records the engine's token counter now and returns the rate
// over the window (over the oldest sample when there is less history).
func (m *metrics) sampleRate() float64 {
	b := m.srv.currentBackend()
	if b == nil {
		return 0
	}
	return m.addSample(time.Now(), b.Metrics().TokensGenerated)
}

func (m *metrics) addSample(now time.Time, tokens uint64) float64 {
	m.rateMu.Lock()
	defer m.rateMu.Unlock()
	if n := len(m.samples); n > 0 && tokens < m.samples[n-1].tokens {
		m.samples = m.samples[:0] // the counter restarted (a new backend)
	}
	m.samples = append(m.samples, tokenSample{now, tokens})
	// Keep one sample at or before the window's start as the baseline.
	cut := 0
	for cut+1 < len(m.samples) && !m.samples[cut+1].at.After(now.Add(-rateWindow)) {
		cut++
	}
	m.samples = m.samples[cut:]
	first := m.samples[0]
	dt := now.Sub(first.at).Seconds()
	if dt <= 0 {
		return 0
	}
	return float64(tokens-first.tokens) / dt
}

// Describe and Collect make metrics a collector of the engine's snapshot,
// taken once per scrape.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descQueueDepth, descQueueLimit, descActive, descKVUsed, descKVTotal,
		descTokens, descPromptTokens, descFinished, descRate, descReady, descWebsockets, descInFlight, descConns} {
		ch <- d
	}
}

func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	counter := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v)
	}
	gauge(descWebsockets, float64(m.srv.conns.count()))
	gauge(descInFlight, float64(m.srv.jobs.count()))
	open, reserved := m.srv.limiter.counts()
	ch <- prometheus.MustNewConstMetric(descConns, prometheus.GaugeValue, float64(open), "normal")
	ch <- prometheus.MustNewConstMetric(descConns, prometheus.GaugeValue, float64(reserved), "reserved")
	b := m.srv.currentBackend()
	if b == nil {
		gauge(descReady, 0)
		return
	}
	e := b.Metrics()
	rate := m.addSample(time.Now(), e.TokensGenerated)
	gauge(descReady, 1)
	gauge(descQueueDepth, float64(e.QueueDepth))
	gauge(descQueueLimit, float64(e.QueueLimit))
	gauge(descActive, float64(e.ActiveSequences))
	gauge(descKVUsed, float64(e.KVBlocksUsed))
	gauge(descKVTotal, float64(e.KVBlocksTotal))
	counter(descTokens, float64(e.TokensGenerated))
	counter(descPromptTokens, float64(e.PromptTokens))
	counter(descFinished, float64(e.RequestsFinished))
	gauge(descRate, rate)
}
