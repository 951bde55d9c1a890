package main

import (
	"fmt"
	"os"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/runtime/engine"
	"github.com/wgllm/wgllm/runtime/gguf"
	"github.com/wgllm/wgllm/runtime/gpu"
	"github.com/wgllm/wgllm/runtime/model"
	"github.com/wgllm/wgllm/runtime/tokenizer"
)

// loaded is a model on the GPU with its tokenizer.
type loaded struct {
	ctx  *gpu.Context
	file *gguf.File
	m    *model.Model
	tok  *tokenizer.Tokenizer
	gen  *engine.Generator
}

func (l *loaded) Close() {
	if l.m != nil {
		l.m.Close()
	}
	if l.ctx != nil {
		ops.ReleaseAttentionScratch(l.ctx)
		ops.ReleaseQ8Scratch(l.ctx)
		l.ctx.Close()
	}
	if l.file != nil {
		l.file.Close()
	}
}

func addModelFlags(cmd *cobra.Command) {
	cmd.Flags().StringP("model", "m", "", "GGUF model file (default: model.path from the config)")
	cmd.Flags().IntP("ctx-size", "c", 0, "context length in tokens (0: the model's)")
}

// modelPath is -m, else the configured model.path: a file, or the name
// of a model in the store (see resolveModel).
func (a *app) modelPath(cmd *cobra.Command) (string, error) {
	if p, _ := cmd.Flags().GetString("model"); p != "" {
		return a.resolveModel(p)
	}
	if p := a.cfg.GetString("model.path"); p != "" {
		return a.resolveModel(p)
	}
	return "", fmt.Errorf("no model: pass -m MODEL.gguf or set model.path")
}

func kvType(s string) (ops.DType, error) {
	switch s {
	case "f16", "":
		return ops.F16, nil
	case "f32":
		return ops.F32, nil
	case "q8_0":
		return ops.Q8_0, nil
	}
	return 0, fmt.Errorf("kv.dtype %q: want f16, f32 or q8_0", s)
}

// load opens the model file, the GPU, and uploads the weights, showing a
// progress bar on stderr when it is a terminal.
func (a *app) load(cmd *cobra.Command, ctxLen int) (*loaded, error) {
	return a.loadWith(cmd, model.Options{CtxLen: ctxLen})
}

// loadWith is load with the model's allocation options (sequence slots,
// batch, KV pool); the KV type comes from the configuration.
func (a *app) loadWith(cmd *cobra.Command, opt model.Options) (*loaded, error) {
	path, err := a.modelPath(cmd)
	if err != nil {
		return nil, err
	}
	return a.loadFile(path, opt)
}

// loadFile is loadWith for a model file.
func (a *app) loadFile(path string, opt model.Options) (*loaded, error) {
	var err error
	l := &loaded{}
	ok := false
	defer func() {
		if !ok {
			l.Close()
		}
	}()
	if l.file, err = gguf.Open(path); err != nil {
		return nil, err
	}
	tok, err := tokenizer.FromGGUF(l.file)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for _, w := range tok.Warnings() {
		a.log.Warn().Str("model", path).Msg(w)
	}
	if l.ctx, err = a.openGPU(a.gpuOptions()); err != nil {
		return nil, err
	}
	kt, err := kvType(a.cfg.GetString("kv.dtype"))
	if err != nil {
		return nil, err
	}
	opt.KVType = kt
	opt.DecodeTiledRows = a.cfg.GetInt("engine.decode_tiled_rows")
	opt.QuantMatMul = a.cfg.GetBool("engine.quant_matmul")
	if isatty.IsTerminal(os.Stderr.Fd()) {
		bar := progressbar.NewOptions64(1, progressbar.OptionSetWriter(os.Stderr), progressbar.OptionShowBytes(true),
			progressbar.OptionSetDescription("loading"), progressbar.OptionClearOnFinish(), progressbar.OptionThrottle(100*time.Millisecond))
		opt.Progress = func(done, total uint64) {
			bar.ChangeMax64(int64(total))
			_ = bar.Set64(int64(done))
		}
		defer bar.Finish()
	}
	t0 := time.Now()
	if l.m, err = model.Load(l.ctx, l.file, opt); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	w, k, s := l.m.Memory()
	a.log.Info().Str("model", path).Str("arch", l.m.Cfg.Arch).Str("adapter", l.ctx.Adapter.Name).
		Uint64("weights_bytes", w).Uint64("kv_bytes", k).Uint64("scratch_bytes", s).
		Dur("load", time.Since(t0)).Msg("model loaded")
	l.tok = tok
	if l.gen, err = engine.New(l.m, tok); err != nil {
		return nil, err
	}
	ok = true
	return l, nil
}
