package serve_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/wgllm/wgllm/serve"
	"github.com/wgllm/wgllm/serve/servetest"
)

// clientConn is a raw keep-alive connection from a chosen loopback
// address (127.0.0.N: each N is another client to the server).
type clientConn struct {
	c  net.Conn
	br *bufio.Reader
}

func dialFrom(t *testing.T, n int, addr string) (*clientConn, error) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(n))}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	return &clientConn{c: c, br: bufio.NewReader(c)}, nil
}

// get sends one request on the connection and returns the status (0 when
// the server closed the connection instead of answering).
func (cc *clientConn) get(path string) (int, string) {
	_ = cc.c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(cc.c, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", path); err != nil {
		return 0, err.Error()
	}
	resp, err := http.ReadResponse(cc.br, nil)
	if err != nil {
		return 0, err.Error()
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(body)
}

// TestConnectionCaps: one client's idle keep-alives took every descriptor
// and /health timed out, and one client's websockets locked the others
// out. Now a client gets max_connections_per_client connections, then a
// couple on reserved slots that answer only /health and /metrics (429
// too_many_connections otherwise), then none; with max_connections
// reached, /health and /metrics are still answered; a client gets
// ws_max_connections_per_client websockets and others still get theirs.
func TestConnectionCaps(t *testing.T) {
	ts := start(t, serve.Config{MaxConnections: 20, MaxConnectionsPerClient: 5, WSMaxConnectionsPerClient: 2,
		WSMaxConnections: 10}, &servetest.Options{})

	// One client opens 12 connections and keeps them.
	statuses := map[int]int{}
	var flood []*clientConn
	for range 12 {
		cc, err := dialFrom(t, 2, ts.addr)
		if err != nil {
			t.Fatal(err)
		}
		code, body := cc.get("/v1/models")
		statuses[code]++
		if code == http.StatusTooManyRequests && !strings.Contains(body, "too_many_connections") {
			t.Errorf("429 body %s", body)
		}
		if code == http.StatusOK {
			flood = append(flood, cc)
		}
	}
	// Beyond its 5, each connection is on a reserved slot, answered 429
	// and closed, which frees the slot for the next.
	if statuses[200] != 5 || statuses[429] != 7 {
		t.Fatalf("12 connections from one client: statuses %v; want 5×200, 7×429", statuses)
	}
	// The server closes each 429'd connection after its answer: wait until
	// it has, so the reserved slots are free again (asked on one of the
	// client's kept connections, which opens none).
	waitFor(t, "the 429'd connections' reserved slots freed", 5*time.Second, func() bool {
		code, body := flood[0].get("/metrics")
		return code == http.StatusOK && strings.Contains(body, `wgllm_http_connections{slot="reserved"} 0`)
	})
	// Two silent connections take the client's reserved slots: the next is
	// closed at accept; after they time out, /health is answered again.
	for range 2 {
		if _, err := dialFrom(t, 2, ts.addr); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(100 * time.Millisecond)
	if cc, err := dialFrom(t, 2, ts.addr); err == nil {
		if code, _ := cc.get("/health"); code != 0 {
			t.Errorf("beyond the cap and the reserved slots: %d, want the connection closed", code)
		}
	}
	waitFor(t, "reserved slots of silent connections freed", 10*time.Second, func() bool {
		cc, err := dialFrom(t, 2, ts.addr)
		if err != nil {
			return false
		}
		code, _ := cc.get("/health")
		return code == http.StatusOK
	})

	// Three more clients fill the server (20 connections in all).
	for n := 3; n <= 5; n++ {
		for range 5 {
			cc, err := dialFrom(t, n, ts.addr)
			if err != nil {
				t.Fatal(err)
			}
			if code, body := cc.get("/v1/models"); code != http.StatusOK {
				t.Fatalf("client %d: %d %s", n, code, body)
			}
			flood = append(flood, cc)
		}
	}
	for _, path := range []string{"/health", "/metrics"} {
		cc, err := dialFrom(t, 9, ts.addr)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if code, body := cc.get(path); code != http.StatusOK {
			t.Errorf("%s with every connection taken: %d %s", path, code, body)
		}
		t.Logf("%s with every connection taken: answered in %v", path, time.Since(start))
	}
	cc, err := dialFrom(t, 9, ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	if code, body := cc.get("/v1/models"); code != http.StatusTooManyRequests || !strings.Contains(body, "server.max_connections") {
		t.Errorf("API call with every connection taken: %d %s", code, body)
	}
	// The kept connections still work, and closing them frees the server.
	if code, _ := flood[0].get("/v1/models"); code != http.StatusOK {
		t.Errorf("a kept connection: %d", code)
	}
	for _, cc := range flood {
		cc.c.Close()
	}
	waitFor(t, "connections released", 5*time.Second, func() bool {
		cc, err := dialFrom(t, 9, ts.addr)
		if err != nil {
			return false
		}
		code, _ := cc.get("/v1/models")
		return code == http.StatusOK
	})

	// Websockets: two for one client, then 429; another client gets its own.
	wsFrom := func(n int) (*websocket.Conn, *http.Response, error) {
		d := websocket.Dialer{HandshakeTimeout: 5 * time.Second, NetDial: func(network, addr string) (net.Conn, error) {
			nd := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(n))}}
			return nd.Dial(network, addr)
		}}
		c, resp, err := d.Dial("ws://"+ts.addr+"/ws", nil)
		if c != nil {
			t.Cleanup(func() { c.Close() })
		}
		return c, resp, err
	}
	for i := range 2 {
		if _, _, err := wsFrom(6); err != nil {
			t.Fatalf("websocket %d of client 6: %v", i, err)
		}
	}
	if _, resp, err := wsFrom(6); err == nil {
		t.Error("third websocket of one client accepted")
	} else if resp == nil {
		t.Errorf("third websocket: %v without a response", err)
	} else {
		expectError(t, resp, http.StatusTooManyRequests, "too_many_connections", "")
	}
	if _, _, err := wsFrom(7); err != nil {
		t.Errorf("another client's websocket: %v", err)
	}
}

// metricValue reads one sample of the server's /metrics from client n.
func metricValue(t *testing.T, ts *testServer, n int, sample string) float64 {
	t.Helper()
	cc, err := dialFrom(t, n, ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	code, body := cc.get("/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	cc.c.Close()
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			var f float64
			fmt.Sscan(v, &f)
			return f
		}
	}
	t.Fatalf("no %s in /metrics", sample)
	return 0
}

// TestConnectionFloodKeepsHealth: 2,000 connections from one client that
// send nothing, with the default caps. The server keeps at most its
// per-client cap and two reserved slots, closes the rest at accept, and
// another client's /health is answered at once.
func TestConnectionFloodKeepsHealth(t *testing.T) {
	ts := start(t, serve.Config{}, &servetest.Options{})
	def := serve.DefaultConfig()
	const flood = 2000
	for range flood {
		if _, err := dialFrom(t, 2, ts.addr); err != nil {
			t.Fatal(err)
		}
	}
	var open, reserved, refused float64
	waitFor(t, "every flood connection accepted or refused", 10*time.Second, func() bool {
		refused = metricValue(t, ts, 3, "wgllm_http_connections_refused_total")
		open = metricValue(t, ts, 3, `wgllm_http_connections{slot="normal"}`)
		reserved = metricValue(t, ts, 3, `wgllm_http_connections{slot="reserved"}`)
		return open+reserved+refused >= flood
	})
	// open also counts this test's /metrics connections the server has not
	// yet seen closed (at most the three of the last round).
	if open > float64(def.MaxConnectionsPerClient)+3 || reserved > 2 {
		t.Errorf("one client holds %v connections and %v reserved slots; the cap is %d (+2 reserved)", open, reserved, def.MaxConnectionsPerClient)
	}
	cc, err := dialFrom(t, 4, ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if code, body := cc.get("/health"); code != http.StatusOK {
		t.Fatalf("/health under the flood: %d %s", code, body)
	}
	t.Logf("%d idle connections from one client: %v open (with /metrics'), %v on reserved slots, %v refused at accept; /health from another client answered in %v",
		flood, open, reserved, refused, time.Since(start))
}
