package serve

import (
	"os"
	"strings"
	"testing"
)

// TestHostPolicyFollowsTheListenAddress: on loopback or a specific
// address only that address and loopback names; on every interface (the
// operator wants remote access) any IP literal and the host name too, but
// still no other name (that is what a rebinding attack uses).
func TestHostPolicyFollowsTheListenAddress(t *testing.T) {
	hostname, _ := os.Hostname()
	hostname = strings.ToLower(hostname)
	for _, c := range []struct {
		addr  string
		hosts map[string]bool
	}{
		{"127.0.0.1:8080", map[string]bool{"localhost:8080": true, "127.0.0.1:8080": true, "192.168.1.5:8080": false, "evil.example": false}},
		{"192.168.1.5:8080", map[string]bool{"192.168.1.5:8080": true, "localhost": true, "10.1.1.1:8080": false, "evil.example": false}},
		{"0.0.0.0:8080", map[string]bool{"192.168.1.5:8080": true, "[fe80::1]:8080": true, "localhost": true, hostname + ":8080": hostname != "", "evil.example:8080": false}},
		{"[::]:8080", map[string]bool{"10.0.0.2": true, "evil.example": false}},
		{":8080", map[string]bool{"10.0.0.2": true, "evil.example": false}},
	} {
		p := newHostPolicy(Config{}, c.addr)
		for host, want := range c.hosts {
			if got := p.hostAllowed(host); got != want {
				t.Errorf("listening on %s, Host %s: allowed %v, want %v", c.addr, host, got, want)
			}
		}
	}
}
