package gpu

import "sync"

// The registry maps the token handed to device callbacks (C userdata, or a
// closure in the browser) to its Context, so a callback that runs after
// Close finds nothing rather than a freed Context.
var (
	registryMu sync.Mutex
	registry   = map[uintptr]*Context{}
	nextToken  uintptr
)

func register(c *Context) uintptr {
	registryMu.Lock()
	defer registryMu.Unlock()
	nextToken++
	registry[nextToken] = c
	return nextToken
}

func lookup(token uintptr) *Context {
	registryMu.Lock()
	defer registryMu.Unlock()
	return registry[token]
}

func unregister(token uintptr) {
	registryMu.Lock()
	defer registryMu.Unlock()
	delete(registry, token)
}
