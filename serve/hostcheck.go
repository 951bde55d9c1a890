package serve

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
)

// Host and Origin checks keep web pages from driving the server.
//
// DNS rebinding: a page on http://evil.example:8080 whose name the attacker
// re-points at 127.0.0.1 talks to this server as its own origin; the only
// trace is the Host header, which still says evil.example. So a request's
// Host must be a name the server is known by: loopback names and addresses,
// the address it listens on, and server.allowed_hosts. An IP literal cannot
// be rebound, so when the server listens on every interface (0.0.0.0 or
// ::, the operator wants remote access) any IP literal and the machine's
// host name are accepted too; other names need allowed_hosts.
//
// Cross-site requests: a form or fetch with Content-Type text/plain needs
// no CORS preflight, so without a check any page could start generations.
// Browsers send Origin with them; a request whose Origin is not this
// server's own (same scheme-less host and port as its Host), a loopback
// page, server.allowed_origins or server.cors_origins is refused. Requests
// without Origin (curl, SDKs) are not from a page and pass.

// hostPolicy decides which Host headers and Origins are accepted.
type hostPolicy struct {
	any      bool            // allowed_hosts holds "*"
	names    map[string]bool // exact host names, lower case
	suffixes []string        // ".example.com" entries: any subdomain
	anyIP    bool            // listening on every interface
	origins  []string        // allowed_origins and cors_origins
}

// newHostPolicy builds the policy for a server listening on addr.
func newHostPolicy(cfg Config, addr string) *hostPolicy {
	p := &hostPolicy{names: map[string]bool{"localhost": true}}
	p.origins = append(append(p.origins, cfg.AllowedOrigins...), cfg.CORSOrigins...)
	for _, h := range cfg.AllowedHosts {
		h = strings.ToLower(strings.TrimSpace(h))
		switch {
		case h == "*":
			p.any = true
		case strings.HasPrefix(h, "."):
			p.suffixes = append(p.suffixes, h)
		case h != "":
			p.names[stripPort(h)] = true
		}
	}
	host := stripPort(addr)
	if ip, err := netip.ParseAddr(strings.Trim(host, "[]")); (err == nil && ip.IsUnspecified()) || host == "" {
		p.anyIP = true
		if name, err := os.Hostname(); err == nil && name != "" {
			p.names[strings.ToLower(name)] = true
		}
	} else {
		p.names[strings.ToLower(strings.Trim(host, "[]"))] = true
	}
	return p
}

// stripPort drops ":port" from host[:port] or [v6]:port.
func stripPort(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return strings.Trim(hostport, "[]")
}

// hostAllowed reports whether a Host header's name is one the server is
// known by.
func (p *hostPolicy) hostAllowed(hostHeader string) bool {
	if p.any {
		return true
	}
	host := strings.ToLower(strings.TrimSuffix(stripPort(hostHeader), "."))
	if isLoopbackName(host) || p.names[host] {
		return true
	}
	if _, err := netip.ParseAddr(host); err == nil && p.anyIP {
		return true
	}
	for _, s := range p.suffixes {
		if strings.HasSuffix(host, s) {
			return true
		}
	}
	return false
}

// isLoopbackName: localhost, *.localhost (RFC 6761 keeps them on the
// machine) and loopback addresses.
func isLoopbackName(host string) bool {
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// originAllowed reports whether a request's Origin header is acceptable:
// absent, the request's own origin, a page on a loopback host, or listed.
func (p *hostPolicy) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	if originAllowed(p.origins, origin) {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return false // "null" (sandboxed frames, file://) and the like
	}
	if strings.EqualFold(u.Host, r.Host) && p.hostAllowed(r.Host) {
		return true // same origin
	}
	return isLoopbackName(strings.ToLower(stripPort(u.Host)))
}

// hostCheckExempt are paths probes and scrapers reach by whatever name
// the cluster gives the server; they reveal nothing a page could use.
func hostCheckExempt(path string) bool { return path == "/health" || path == "/metrics" }

// withHostCheck refuses (403) requests whose Host the server is not known
// by and requests from pages of other sites, on every endpoint.
func (s *Server) withHostCheck(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := s.hosts.Load()
		if !hostCheckExempt(r.URL.Path) && !p.hostAllowed(r.Host) {
			reqLog(r).Warn().Str("host", r.Host).Str("path", r.URL.Path).Msg("host not allowed")
			writeError(w, &apiError{Status: http.StatusForbidden, Type: "invalid_request_error", Code: codeHostNotAllowed,
				Message: fmt.Sprintf("host %q is not allowed: this server answers to loopback names and the address it listens on; add the name to server.allowed_hosts (WGLLM_SERVER_ALLOWED_HOSTS) to serve it", stripPort(r.Host))})
			return
		}
		if !p.originAllowed(r) {
			reqLog(r).Warn().Str("origin", r.Header.Get("Origin")).Str("path", r.URL.Path).Msg("origin not allowed")
			writeError(w, &apiError{Status: http.StatusForbidden, Type: "invalid_request_error", Code: codeForbidden,
				Message: fmt.Sprintf("origin %q is not allowed: add it to server.allowed_origins (WGLLM_SERVER_ALLOWED_ORIGINS), or to server.cors_origins for browser calls to the API", r.Header.Get("Origin"))})
			return
		}
		next.ServeHTTP(w, r)
	})
}
