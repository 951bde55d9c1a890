// Package config layers the configuration: the embedded configs/default.yaml,
// then an optional file, then WGLLM_* environment variables, then flags.
package config

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
	"github.com/wgllm/wgllm/configs"
)

// Load builds the configuration. file may be empty. flags maps config keys to
// flags that override them when set on the command line.
func Load(file string, flags map[string]*pflag.Flag) (*viper.Viper, error) {
	v := viper.New()
	v.SetConfigType("yaml")
	if err := v.ReadConfig(bytes.NewReader(configs.Default)); err != nil {
		return nil, fmt.Errorf("config: embedded defaults: %w", err)
	}
	if file != "" {
		v.SetConfigFile(file)
		if err := v.MergeInConfig(); err != nil {
			return nil, fmt.Errorf("config: reading %s: %w", file, err)
		}
	}
	v.SetEnvPrefix("WGLLM")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	// Short names kept for the GPU choice, as documented.
	_ = v.BindEnv("gpu.adapter", "WGLLM_GPU_ADAPTER", "WGLLM_ADAPTER")
	_ = v.BindEnv("gpu.force_fallback", "WGLLM_GPU_FORCE_FALLBACK", "WGLLM_FORCE_FALLBACK")
	_ = v.BindEnv("gpu.backend", "WGLLM_GPU_BACKEND", "WGLLM_BACKEND")
	_ = v.BindEnv("gpu.impl", "WGLLM_GPU_IMPL")
	_ = v.BindEnv("gpu.dawn_lib", "WGLLM_GPU_DAWN_LIB", "WGLLM_DAWN_LIB")
	for key, f := range flags {
		if f != nil {
			if err := v.BindPFlag(key, f); err != nil {
				return nil, err
			}
		}
	}
	return v, nil
}
