package gpu

import (
	"sync"

	"github.com/wgllm/wgllm/runtime/gpu/internal/hal"
)

// The registry maps the token handed to device callbacks (C userdata, or a
// closure in the browser) to its Context's events, so a callback that runs
// after Close finds nothing rather than a freed Context.
var (
	registryMu sync.Mutex
	registry   = map[uintptr]hal.Events{}
	nextToken  uintptr
)

func register(c hal.Events) uintptr {
	registryMu.Lock()
	defer registryMu.Unlock()
	nextToken++
	registry[nextToken] = c
	return nextToken
}

func lookup(token uintptr) hal.Events {
	registryMu.Lock()
	defer registryMu.Unlock()
	return registry[token]
}

func unregister(token uintptr) {
	registryMu.Lock()
	defer registryMu.Unlock()
	delete(registry, token)
}
