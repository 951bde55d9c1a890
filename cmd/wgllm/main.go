// Command wgllm runs GGUF language models on any GPU through WebGPU.
package main

import (
	"fmt"
	"os"
	"sync/atomic"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
	"github.com/wgllm/wgllm/internal/config"
	"github.com/wgllm/wgllm/internal/logx"
	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/runtime/gpu"
)

// app is what every subcommand shares: the layered configuration and the logger.
type app struct {
	configFile string
	cfg        *viper.Viper
	log        zerolog.Logger
	// catalog is the models `serve` serves, once it has read them (the
	// ModelManager resolves names in it).
	catalog atomic.Pointer[modelCatalog]
}

func main() {
	a := &app{}
	root := &cobra.Command{
		Use:           "wgllm",
		Short:         "Run GGUF language models on any GPU through WebGPU",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	pf := root.PersistentFlags()
	pf.StringVar(&a.configFile, "config", "", "config file (YAML) layered over configs/default.yaml")
	pf.String("log-level", "", "log level: debug, info, warn, error")
	pf.String("log-format", "", "log format: auto, console, json")
	pf.String("adapter", "", "GPU adapter: index or name substring (see `wgllm devices`)")
	pf.String("models-dir", "", "model store directory (default: models.dir, else <user cache dir>/wgllm/models)")
	pf.String("backend", "", "GPU backend: vulkan, metal, dx12 or gl (default: the platform's primary ones)")
	pf.String("gpu-impl", "", "WebGPU implementation: wgpu, dawn or auto (default auto: Dawn where its library loads and finds an adapter, else wgpu-native)")
	pf.String("dawn-lib", "", "path of Dawn's libwebgpu_wrapper.so (default: beside the binary, else third_party/dawn/)")
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		return a.setup(cmd.Flags())
	}
	root.AddCommand(devicesCmd(a), runCmd(a), tokenizeCmd(a), perplexityCmd(a), infoCmd(a), benchCmd(a), serveCmd(a))
	root.AddCommand(pullCmd(a), listCmd(a), rmCmd(a), quantizeCmd(a))
	root.AddCommand(versionCmd(a))
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "wgllm:", err)
		os.Exit(1)
	}
}

func (a *app) setup(flags *pflag.FlagSet) error {
	bind := map[string]*pflag.Flag{}
	for key, name := range map[string]string{
		"log.level": "log-level", "log.format": "log-format", "gpu.adapter": "adapter", "gpu.backend": "backend",
		"gpu.impl": "gpu-impl", "gpu.dawn_lib": "dawn-lib",
		"model.path": "model", "server.addr": "addr",
		"models.dir": "models-dir", "hub.url": "hub-url",
	} {
		if f := flags.Lookup(name); f != nil && f.Changed {
			bind[key] = f
		}
	}
	cfg, err := config.Load(a.configFile, bind)
	if err != nil {
		return err
	}
	a.cfg = cfg
	a.log, err = logx.New(os.Stderr, cfg.GetString("log.level"), cfg.GetString("log.format"))
	return err
}

// openGPU opens a device for opts with the kernel variants config
// kernels.* switches on.
func (a *app) openGPU(opts gpu.Options) (*gpu.Context, error) {
	ko, err := a.kernelOptions()
	if err != nil {
		return nil, err
	}
	ctx, err := gpu.New(opts)
	if err != nil {
		return nil, err
	}
	ops.SetKernelOptions(ctx, ko)
	return ctx, nil
}

// kernelOptions are config kernels.*.
func (a *app) kernelOptions() (ops.KernelOptions, error) {
	int8, err := ops.ParseInt8Dot(a.cfg.GetString("kernels.int8_dot"))
	return ops.KernelOptions{Int8Dot: int8}, err
}

// gpuOptions is the adapter choice from config, environment and flags.
func (a *app) gpuOptions() gpu.Options {
	return gpu.Options{Adapter: a.cfg.GetString("gpu.adapter"), ForceFallback: a.cfg.GetBool("gpu.force_fallback"),
		Backend: a.cfg.GetString("gpu.backend"), Impl: a.cfg.GetString("gpu.impl"), DawnLib: a.cfg.GetString("gpu.dawn_lib"),
		Warn: func(msg string) { a.log.Debug().Str("impl", "dawn").Str("said", msg).Msg("gpu implementation message") }}
}
