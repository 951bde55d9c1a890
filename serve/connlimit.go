package serve

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"
)

// Connection caps. Without them one client's 20,000 idle keep-alives used
// up the process's file descriptors (accept4: too many open files) and
// /health timed out; 256 websockets from one client locked every other
// websocket user out.
//
// The listener counts open connections, in all and per client address. A
// connection beyond either cap still gets one of a few reserved slots (at
// most reservedPerClient of them per client), on which only /health and
// /metrics are answered, each once, so probes and scrapers keep working
// under a flood; every other request there gets 429 too_many_connections.
// With no reserved slot left the connection is closed at once, so it
// holds no descriptor.

// reservedConns are the slots beyond MaxConnections for /health and
// /metrics; reservedPerClient bounds one client's share of them.
const (
	reservedConns     = 16
	reservedPerClient = 2
)

// connLimiter counts a listener's open connections.
type connLimiter struct {
	max, perClient int

	mu        sync.Mutex
	open      int            // counted connections (not reserved)
	reserved  int            // connections on reserved slots
	byClient  map[string]int // counted connections per client
	resClient map[string]int // reserved slots per client
	wsClient  map[string]int // websockets per client
	refused   func()         // counts a connection closed at accept
}

type limitedListener struct {
	net.Listener
	l *connLimiter
}

// limitedConn is a connection the limiter counts; release runs once on
// Close.
type limitedConn struct {
	net.Conn
	l          *connLimiter
	client     string
	restricted bool      // on a reserved slot: /health and /metrics only
	readBy     time.Time // restricted: reads end by then, whatever the server sets
	once       sync.Once
}

// SetReadDeadline keeps a reserved slot's reads within reservedIdle of
// its accept, so a client cannot hold the slot by sending nothing (the
// HTTP server sets its own, longer, header deadline per request).
func (c *limitedConn) SetReadDeadline(t time.Time) error {
	if c.restricted && (t.IsZero() || t.After(c.readBy)) {
		t = c.readBy
	}
	return c.Conn.SetReadDeadline(t)
}

func (c *limitedConn) SetDeadline(t time.Time) error {
	if err := c.Conn.SetWriteDeadline(t); err != nil {
		return err
	}
	return c.SetReadDeadline(t)
}

func (c *limitedConn) Close() error {
	c.once.Do(func() { c.l.release(c) })
	return c.Conn.Close()
}

// clientKey is the address a connection comes from, without its port.
func clientKey(addr net.Addr) string {
	if tcp, ok := addr.(*net.TCPAddr); ok {
		return tcp.IP.String()
	}
	host, _, err := net.SplitHostPort(addr.String())
	if err != nil {
		return addr.String()
	}
	return host
}

func (l *limitedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if lc := l.l.admit(c); lc != nil {
			return lc, nil
		}
		c.Close()
		if l.l.refused != nil {
			l.l.refused()
		}
	}
}

// admit counts c, on a normal or a reserved slot, or returns nil when it
// must be closed.
func (l *connLimiter) admit(c net.Conn) *limitedConn {
	key := clientKey(c.RemoteAddr())
	l.mu.Lock()
	defer l.mu.Unlock()
	lc := &limitedConn{Conn: c, l: l, client: key}
	switch {
	case l.open < l.max && (l.perClient <= 0 || l.byClient[key] < l.perClient):
		l.open++
		l.byClient[key]++
	case l.reserved < reservedConns && l.resClient[key] < reservedPerClient:
		l.reserved++
		l.resClient[key]++
		lc.restricted = true
		lc.readBy = time.Now().Add(reservedIdle)
		_ = c.SetReadDeadline(lc.readBy)
	default:
		return nil
	}
	return lc
}

func (l *connLimiter) release(c *limitedConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if c.restricted {
		l.reserved--
		decrement(l.resClient, c.client)
		return
	}
	l.open--
	decrement(l.byClient, c.client)
}

func decrement(m map[string]int, key string) {
	if m[key] <= 1 {
		delete(m, key)
		return
	}
	m[key]--
}

// takeWebsocket reserves one of client's websocket places (false: it has
// limit open); the returned func gives it back.
func (l *connLimiter) takeWebsocket(client string, limit int) (func(), bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if limit > 0 && l.wsClient[client] >= limit {
		return nil, false
	}
	l.wsClient[client]++
	return func() {
		l.mu.Lock()
		decrement(l.wsClient, client)
		l.mu.Unlock()
	}, true
}

// counts reports the open connections (normal and reserved), for tests
// and metrics.
func (l *connLimiter) counts() (open, reserved int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open, l.reserved
}

func newConnLimiter(cfg Config) *connLimiter {
	return &connLimiter{max: cfg.MaxConnections, perClient: cfg.MaxConnectionsPerClient,
		byClient: map[string]int{}, resClient: map[string]int{}, wsClient: map[string]int{}}
}

type restrictedKey struct{}

// connContext marks the requests of a connection on a reserved slot
// (http.Server.ConnContext).
func connContext(ctx context.Context, c net.Conn) context.Context {
	if lc, ok := c.(*limitedConn); ok && lc.restricted {
		return context.WithValue(ctx, restrictedKey{}, true)
	}
	return ctx
}

// withConnLimit answers on a reserved slot only /health and /metrics, and
// closes the connection after the answer.
func (s *Server) withConnLimit(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if restricted, _ := r.Context().Value(restrictedKey{}).(bool); restricted {
			w.Header().Set("Connection", "close")
			if !hostCheckExempt(r.URL.Path) {
				w.Header().Set("Retry-After", "1")
				writeError(w, &apiError{Status: http.StatusTooManyRequests, Type: "rate_limit_error", Code: codeTooManyConns,
					Message: fmt.Sprintf("too many open connections (server.max_connections %d, server.max_connections_per_client %d); close idle ones or try again later",
						s.cfg.MaxConnections, s.cfg.MaxConnectionsPerClient)})
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// wsClientLimit takes a websocket place for r's client, or answers 429.
func (s *Server) wsClientLimit(w http.ResponseWriter, r *http.Request) (release func(), ok bool) {
	client := r.RemoteAddr
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		client = host
	}
	release, ok = s.limiter.takeWebsocket(client, s.cfg.WSMaxConnectionsPerClient)
	if !ok {
		reqLog(r).Warn().Str("client", client).Int("limit", s.cfg.WSMaxConnectionsPerClient).Msg("websocket refused: too many from this client")
		w.Header().Set("Retry-After", "1")
		writeError(w, &apiError{Status: http.StatusTooManyRequests, Type: "rate_limit_error", Code: codeTooManyConns,
			Message: fmt.Sprintf("too many websockets from this client (server.ws_max_connections_per_client %d); close one first", s.cfg.WSMaxConnectionsPerClient)})
	}
	return release, ok
}

// reservedIdle is how long a connection on a reserved slot may take to
// send its request.
const reservedIdle = 2 * time.Second
