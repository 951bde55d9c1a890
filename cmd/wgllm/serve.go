package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/wgllm/wgllm/runtime/chat"
	"github.com/wgllm/wgllm/runtime/engine"
	"github.com/wgllm/wgllm/runtime/model"
	"github.com/wgllm/wgllm/runtime/sample"
	"github.com/wgllm/wgllm/serve"
	"github.com/wgllm/wgllm/web"
)

func serveCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve [-m MODEL] [--addr HOST:PORT] [--config FILE]",
		Short: "Serve a model: browser chat page, websocket, OpenAI-compatible API",
		Long: `Serve a model over HTTP: the chat page at /, a websocket at /ws, the OpenAI-compatible
API at /v1 (chat/completions with tools and structured output, completions, models,
embeddings), request status at /v1/requests, llama.cpp's /tokenize, /detokenize and /props,
Ollama's API at /api (generate, chat, tags, ps, show, pull, delete, copy, create, version), /health
(503 while the default model loads) and /metrics (Prometheus). With models.serve_dir or models.list, a
request's "model" picks the model, loaded on demand and evicted least recently used first; models made
by /api/create and /api/copy (a name for a GGUF file with its own template, system prompt and
parameters, kept in the model store) are served so, or alone with -m NAME.

Configuration (configs/default.yaml, then --config FILE, then environment, then flags):
  server.addr             WGLLM_SERVER_ADDR             listen address (default 127.0.0.1:8080)
  server.api_key          WGLLM_SERVER_API_KEY          require "Authorization: Bearer KEY" on /v1 and /ws
  server.allowed_hosts    WGLLM_SERVER_ALLOWED_HOSTS    Host names served besides loopback and the listen address (403 otherwise)
  server.allowed_origins  WGLLM_SERVER_ALLOWED_ORIGINS  page origins allowed besides the server's own and loopback (403 otherwise)
  server.cors_origins     WGLLM_SERVER_CORS_ORIGINS     origins allowed to call /v1 from a browser
  server.max_body_bytes   WGLLM_SERVER_MAX_BODY_BYTES   request body limit
  server.ws_max_connections WGLLM_SERVER_WS_MAX_CONNECTIONS  open websockets before 429
  server.max_connections  WGLLM_SERVER_MAX_CONNECTIONS  open HTTP connections (also _PER_CLIENT; WS_MAX_CONNECTIONS_PER_CLIENT)
  server.shutdown_timeout WGLLM_SERVER_SHUTDOWN_TIMEOUT on SIGTERM, how long generations may finish (10s)
  server.wasm_dir         WGLLM_SERVER_WASM_DIR         the browser runtime (make wasm) served at /wasm/ (web/wasm/dist)
  model.path              WGLLM_MODEL_PATH              GGUF model (default: the bundled kjv model)
  model.context_length    WGLLM_MODEL_CONTEXT_LENGTH    tokens per sequence (0: the model's)
  engine.max_batch        WGLLM_ENGINE_MAX_BATCH        sequences decoded together
  engine.queue_limit      WGLLM_ENGINE_QUEUE_LIMIT      waiting requests before 429
  engine.step_tokens      WGLLM_ENGINE_STEP_TOKENS      tokens a step carries: decode first, then prompt chunks (512)
  engine.decode_tiled_rows WGLLM_ENGINE_DECODE_TILED_ROWS decode steps of this many sequences or more take the tiled matmul (0: never; tokens then never depend on the batch)
  engine.quant_matmul     WGLLM_ENGINE_QUANT_MATMUL     the tiled matmul reads quantised weights in place instead of an f16 copy (false)
  kv.dtype                WGLLM_KV_DTYPE                f16, f32 or q8_0 KV cache
  kernels.int8_dot        WGLLM_KERNELS_INT8_DOT        on: int8 dot products in quantised matvecs where the device has them (off)
  models.serve_dir        WGLLM_MODELS_SERVE_DIR        also serve every *.gguf here, by file name, loaded on demand
  models.list             (config file)                 also serve these: [{name: NAME, path: FILE.gguf}]
  models.gpu_memory_budget WGLLM_MODELS_GPU_MEMORY_BUDGET GPU memory for all loaded models (e.g. 20GB); 0: no limit
  models.max_loaded       WGLLM_MODELS_MAX_LOADED       models loaded at once; 0: no limit
  sampling.*              WGLLM_SAMPLING_TEMPERATURE …  defaults for requests that leave them out
  sampling.gpu            WGLLM_SAMPLING_GPU            draw tokens on the GPU for requests it takes (false)
  log.level, log.format   WGLLM_LOG_LEVEL, …            debug|info|warn|error; auto|console|json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// Unmarshal, unlike UnmarshalKey("server"), sees WGLLM_SERVER_*
			// environment variables.
			var whole struct {
				Server serve.Config `mapstructure:"server"`
			}
			if err := a.cfg.Unmarshal(&whole); err != nil {
				return fmt.Errorf("config server: %w", err)
			}
			cfg := whole.Server
			cfg.Static = web.FS()
			// The page's "in this browser" mode downloads the default
			// model's file; no other file is offered.
			if path, err := a.modelPath(cmd); err == nil {
				cfg.ModelFile = func(name string) (string, bool) { return path, name == "" }
			}
			cfg.Manager = storeManager{a}
			cfg.DefaultMaxTokens = a.cfg.GetInt("sampling.max_tokens")
			cfg.DefaultSampling = sample.DefaultParams()
			cfg.DefaultSampling.Temperature = float32(a.cfg.GetFloat64("sampling.temperature"))
			cfg.DefaultSampling.TopK = a.cfg.GetInt("sampling.top_k")
			cfg.DefaultSampling.TopP = float32(a.cfg.GetFloat64("sampling.top_p"))
			cfg.DefaultSampling.MinP = float32(a.cfg.GetFloat64("sampling.min_p"))
			cfg.DefaultSampling.RepeatPenalty = float32(a.cfg.GetFloat64("sampling.repeat_penalty"))
			srv := serve.New(cfg, a.log)

			ln, err := net.Listen("tcp", a.cfg.GetString("server.addr"))
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			fmt.Fprintf(os.Stdout, "wgllm: serving http://%s/ (chat page; OpenAI API at /v1)\n", ln.Addr())

			// The model loads while the server already answers /health (503).
			// The supervisor reloads it after a GPU device loss.
			loadErr := make(chan error, 1)
			closeBackend := make(chan func(), 1)
			go func() {
				b, closer, err := a.startBackend(cmd)
				if err != nil {
					loadErr <- err
					stop()
					return
				}
				closeBackend <- closer
				srv.SetBackend(b)
				a.log.Info().Str("model", b.ModelName()).Msg("ready")
			}()
			err = srv.Serve(ctx, ln)
			select {
			case lerr := <-loadErr:
				return lerr
			case closer := <-closeBackend:
				closer()
			default:
				// Still loading: the process exits without waiting for it.
			}
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		},
	}
	cmd.Flags().StringP("model", "m", "", "GGUF model file (default: model.path from the config)")
	cmd.Flags().String("addr", "", "listen address, HOST:PORT (default: server.addr, 127.0.0.1:8080)")
	return cmd
}

// startEngineAt loads the model at path with room for the configured
// batch and wraps it in an engine, named name, with the chat template
// template ("": the model's own).
func (a *app) startEngineAt(path, name, template string) (*loaded, *engine.Engine, error) {
	seqs := max(1, a.cfg.GetInt("engine.max_batch"))
	l, err := a.loadFile(path, model.Options{CtxLen: a.cfg.GetInt("model.context_length"), Seqs: seqs})
	if err != nil {
		return nil, nil, err
	}
	tmpl, err := chat.FromGGUFSource(l.file, template, chat.Options{})
	if err != nil {
		l.Close()
		return nil, nil, err
	}
	eng, err := engine.NewEngine(l.m, l.tok, engine.Options{
		ChatStop:     tmpl.StopStrings(),
		MaxBatch:     seqs,
		QueueLimit:   a.cfg.GetInt("engine.queue_limit"),
		StepTokens:   a.cfg.GetInt("engine.step_tokens"),
		GPUSampling:  a.cfg.GetBool("sampling.gpu"),
		KeepFinished: a.cfg.GetInt("engine.keep_finished"),
		// Capped at 1 GiB, so the int conversion cannot overflow.
		KeepFinishedBytes: int(min(a.cfg.GetSizeInBytes("engine.keep_finished_bytes"), 1<<30)),
		DefaultMaxTokens:  a.cfg.GetInt("sampling.max_tokens"),
		Name:              name,
		Log:               a.log,
		RenderChat:        engine.TemplateRenderer(tmpl),
	})
	if err != nil {
		l.Close()
		return nil, nil, err
	}
	return l, eng, nil
}
