//go:build !js && cgo && (linux || darwin)

package gpu

import (
	"github.com/wgllm/wgllm/runtime/gpu/internal/dawn"
	"github.com/wgllm/wgllm/runtime/gpu/internal/hal"
)

// dawnAdapters loads Dawn (once) and asks it for its adapter.
func dawnAdapters(opts Options, b Backend) ([]hal.Adapter, error) {
	dawn.SetWarn(opts.Warn)
	if _, err := dawn.Load(opts.DawnLib); err != nil {
		return nil, err
	}
	setRuntimeDirIfUnset()
	dawn.SetWarn(opts.Warn)
	return dawn.Adapters(string(b), opts.ForceFallback)
}

// DawnLibrary is the path Dawn's library loaded from (loading it if it has
// not been), or why it does not load.
func DawnLibrary(opts Options) (string, error) { return dawn.Load(opts.DawnLib) }
