package serve

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/wgllm/wgllm/runtime/sample"
)

// Config sets the server up. The zero value of every field means its
// default (see DefaultConfig); the defaults are the safe choice: loopback
// only, no CORS, websocket from the page's own origin only, bounded bodies.
type Config struct {
	// Addr is where ListenAndServe listens. Default 127.0.0.1:8080: loopback
	// only unless you mean it.
	Addr string `mapstructure:"addr"`
	// APIKey, when set, is required by /v1/*, /ws and /v1/requests as
	// "Authorization: Bearer <key>" (the websocket also takes it as
	// ?api_key= or a "bearer.<key>" subprotocol: browsers cannot set
	// headers on a websocket). /health, /metrics and the page stay open.
	APIKey string `mapstructure:"api_key"`
	// AllowedHosts are the Host names the server answers to besides
	// loopback names and addresses and the address it listens on (when
	// that is 0.0.0.0 or ::, also any IP literal and the machine's host
	// name): "chat.example.org", ".example.org" for every subdomain, "*"
	// for any (e.g. behind a proxy that checks Host). Other Host headers
	// get 403 (host_not_allowed), which stops DNS rebinding. /health and
	// /metrics are not checked.
	AllowedHosts []string `mapstructure:"allowed_hosts"`
	// AllowedOrigins are the page origins accepted besides the server's
	// own and loopback pages, on every endpoint and the websocket
	// ("https://app.example:8443"; "*" accepts any); others get 403
	// (origin_not_allowed). A request without an Origin header (curl, an
	// SDK: not a page) is always accepted.
	AllowedOrigins []string `mapstructure:"allowed_origins"`
	// CORSOrigins are the origins whose pages may call /v1 from a browser
	// ("*" for any). Empty (the default): no CORS headers at all.
	CORSOrigins []string `mapstructure:"cors_origins"`
	// MaxBodyBytes bounds a request body (413 beyond). Default 1 MiB.
	MaxBodyBytes int64 `mapstructure:"max_body_bytes"`
	// MaxPromptBytes bounds a prompt, after a chat is rendered with the
	// model's template (413 beyond). Default 256 KiB.
	MaxPromptBytes int `mapstructure:"max_prompt_bytes"`
	// DefaultMaxTokens is max_tokens when a request gives none. Default 256.
	DefaultMaxTokens int `mapstructure:"default_max_tokens"`
	// MaxTokensLimit is the largest max_tokens accepted. Default 4096.
	MaxTokensLimit int `mapstructure:"max_tokens_limit"`
	// DefaultSampling fills the sampling fields a request leaves out. The
	// zero value means sample.DefaultParams(). A request without a seed
	// gets a random one.
	DefaultSampling sample.Params `mapstructure:"-"`
	// WriteTimeout bounds every single write to a client (a whole
	// non-streaming response, one streamed chunk, one websocket message).
	// Default 10s. Streams as a whole have no deadline.
	WriteTimeout time.Duration `mapstructure:"write_timeout"`
	// ReadHeaderTimeout bounds reading request headers. Default 10s.
	ReadHeaderTimeout time.Duration `mapstructure:"read_header_timeout"`
	// ReadTimeout bounds reading a whole request (headers and body).
	// Default 30s.
	ReadTimeout time.Duration `mapstructure:"read_timeout"`
	// IdleTimeout closes idle keep-alive connections. Default 120s.
	IdleTimeout time.Duration `mapstructure:"idle_timeout"`
	// ShutdownTimeout is how long Serve lets in-flight generations finish
	// after its context ends before it cancels them. Default 10s.
	ShutdownTimeout time.Duration `mapstructure:"shutdown_timeout"`
	// WSReadLimit bounds one incoming websocket message; a larger one
	// closes the connection (close code 1009). Default MaxBodyBytes.
	WSReadLimit int64 `mapstructure:"ws_read_limit"`
	// WSSendQueue is the number of outgoing messages a websocket may have
	// queued. A client too slow to keep it from overflowing has its jobs
	// cancelled and is disconnected, so it never stalls the engine.
	// Default 1024.
	WSSendQueue int `mapstructure:"ws_send_queue"`
	// WSMaxInFlight bounds the generations one websocket may run at once.
	// Default 16.
	WSMaxInFlight int `mapstructure:"ws_max_in_flight"`
	// WSMaxConnections bounds the open websockets; an upgrade beyond it
	// gets 429 (too_many_connections, Retry-After). Default 256.
	WSMaxConnections int `mapstructure:"ws_max_connections"`
	// WSMaxConnectionsPerClient bounds the open websockets of one client
	// address; beyond it the upgrade gets 429 too_many_connections.
	// Default 32.
	WSMaxConnectionsPerClient int `mapstructure:"ws_max_connections_per_client"`
	// MaxConnections bounds the open HTTP connections (websockets
	// included); keep it below the process's file descriptor limit. A few
	// slots beyond it stay for /health and /metrics. Default 1024.
	MaxConnections int `mapstructure:"max_connections"`
	// MaxConnectionsPerClient bounds the open connections of one client
	// address (raise it behind a proxy, whose address all clients share).
	// A connection beyond either cap is closed, or answers only /health
	// and /metrics (429 too_many_connections otherwise). Default 128.
	MaxConnectionsPerClient int `mapstructure:"max_connections_per_client"`
	// WSPingInterval is how often the server pings a websocket; a client
	// that has not answered (pong or any message) within twice this is
	// dropped. Default 30s.
	WSPingInterval time.Duration `mapstructure:"ws_ping_interval"`
	// Static, if not nil, is served at / (index.html for /): the browser
	// chat page.
	Static fs.FS `mapstructure:"-"`
	// WasmDir is the directory whose wgllm.wasm and wasm_exec.js (built by
	// `make wasm`) are served at /wasm/, for the page's "in this browser"
	// mode. Empty: /wasm/ answers 404.
	WasmDir string `mapstructure:"wasm_dir"`
	// ModelFile, if set, names the GGUF file that GET
	// /v1/models/{model}/file sends ("" asks for the default model's);
	// ok false: the model's file is not offered. Only files it returns are
	// ever served.
	ModelFile func(name string) (path string, ok bool) `mapstructure:"-"`
	// Manager, if set, serves Ollama's /api/pull and /api/delete (the
	// model store); without one they answer 501.
	Manager ModelManager `mapstructure:"-"`
}

// DefaultConfig returns the configuration that the zero Config stands for.
func DefaultConfig() Config {
	var c Config
	return c.withDefaults()
}

func (c Config) withDefaults() Config {
	if c.Addr == "" {
		c.Addr = "127.0.0.1:8080"
	}
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = 1 << 20
	}
	if c.MaxPromptBytes <= 0 {
		c.MaxPromptBytes = 256 << 10
	}
	if c.DefaultMaxTokens <= 0 {
		c.DefaultMaxTokens = 256
	}
	if c.MaxTokensLimit <= 0 {
		c.MaxTokensLimit = 4096
	}
	if c.DefaultSampling == (sample.Params{}) {
		c.DefaultSampling = sample.DefaultParams()
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.ReadHeaderTimeout <= 0 {
		c.ReadHeaderTimeout = 10 * time.Second
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = 30 * time.Second
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 120 * time.Second
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = 10 * time.Second
	}
	if c.WSReadLimit <= 0 {
		c.WSReadLimit = c.MaxBodyBytes
	}
	if c.WSSendQueue <= 0 {
		c.WSSendQueue = 1024
	}
	if c.WSMaxInFlight <= 0 {
		c.WSMaxInFlight = 16
	}
	if c.WSMaxConnections <= 0 {
		c.WSMaxConnections = 256
	}
	if c.WSMaxConnectionsPerClient <= 0 {
		c.WSMaxConnectionsPerClient = 32
	}
	if c.MaxConnections <= 0 {
		c.MaxConnections = 1024
	}
	if c.MaxConnectionsPerClient <= 0 {
		c.MaxConnectionsPerClient = 128
	}
	if c.WSPingInterval <= 0 {
		c.WSPingInterval = 30 * time.Second
	}
	return c
}

// Validate reports the invalid settings of c. (New takes any Config:
// it replaces negative sizes and durations by the defaults too; Serve
// refuses a Config that does not validate.)
func (c Config) Validate() error {
	var errs []error
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"max_body_bytes", c.MaxBodyBytes}, {"max_prompt_bytes", int64(c.MaxPromptBytes)},
		{"default_max_tokens", int64(c.DefaultMaxTokens)}, {"max_tokens_limit", int64(c.MaxTokensLimit)},
		{"ws_read_limit", c.WSReadLimit}, {"ws_send_queue", int64(c.WSSendQueue)}, {"ws_max_in_flight", int64(c.WSMaxInFlight)},
		{"ws_max_connections", int64(c.WSMaxConnections)}, {"ws_max_connections_per_client", int64(c.WSMaxConnectionsPerClient)},
		{"max_connections", int64(c.MaxConnections)}, {"max_connections_per_client", int64(c.MaxConnectionsPerClient)},
	} {
		if f.v < 0 {
			errs = append(errs, fmt.Errorf("%s %d must be positive (0: the default)", f.name, f.v))
		}
	}
	for _, f := range []struct {
		name string
		d    time.Duration
	}{
		{"write_timeout", c.WriteTimeout}, {"read_header_timeout", c.ReadHeaderTimeout}, {"read_timeout", c.ReadTimeout},
		{"idle_timeout", c.IdleTimeout}, {"shutdown_timeout", c.ShutdownTimeout}, {"ws_ping_interval", c.WSPingInterval},
	} {
		if f.d < 0 {
			errs = append(errs, fmt.Errorf("%s %v must be positive (0: the default)", f.name, f.d))
		}
	}
	c = c.withDefaults()
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		errs = append(errs, fmt.Errorf("addr %q: %v", c.Addr, err))
	}
	if c.DefaultMaxTokens > c.MaxTokensLimit {
		errs = append(errs, fmt.Errorf("default_max_tokens %d exceeds max_tokens_limit %d", c.DefaultMaxTokens, c.MaxTokensLimit))
	}
	if err := c.DefaultSampling.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("default sampling: %w", err))
	}
	for _, list := range [][]string{c.AllowedOrigins, c.CORSOrigins} {
		for _, o := range list {
			if o == "*" {
				continue
			}
			if _, ok := normalizeOrigin(o); !ok {
				errs = append(errs, fmt.Errorf("origin %q: want scheme://host[:port] or *", o))
			}
		}
	}
	for _, h := range c.AllowedHosts {
		if h == "" || strings.ContainsAny(h, "/@ ") {
			errs = append(errs, fmt.Errorf("allowed_hosts entry %q: want a host name, an address, .domain or *", h))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("serve: config: %w", err)
	}
	return nil
}

// normalizeOrigin lower-cases an origin's scheme and host and drops a
// default port, so that configured and received origins compare equal.
func normalizeOrigin(origin string) (string, bool) {
	u, err := url.Parse(origin)
	if err != nil || u.Scheme == "" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		return "", false
	}
	scheme := strings.ToLower(u.Scheme)
	host := strings.ToLower(u.Host)
	if (scheme == "http" && strings.HasSuffix(host, ":80")) || (scheme == "https" && strings.HasSuffix(host, ":443")) {
		host = host[:strings.LastIndexByte(host, ':')]
	}
	return scheme + "://" + host, true
}

// originAllowed reports whether origin is in list (already normalised
// entries or "*").
func originAllowed(list []string, origin string) bool {
	norm, ok := normalizeOrigin(origin)
	for _, o := range list {
		if o == "*" {
			return true
		}
		if ok {
			if want, _ := normalizeOrigin(o); want == norm {
				return true
			}
		}
	}
	return false
}
