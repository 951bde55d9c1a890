//go:build !js

package gpu

import (
	"errors"

	"github.com/wgllm/wgllm/runtime/gpu/internal/hal"
)

func dawnAdapters(Options, Backend) ([]hal.Adapter, error) { return nil, errors.New("todo") }
