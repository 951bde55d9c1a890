// Package wasm_test runs the browser build of the runtime (cmd/wgllm-wasm)
// in headless Chromium on the browser's own WebGPU (SwiftShader, a software
// adapter), and checks that it writes the same greedy text as the native
// runtime for the same model and prompt.
package wasm_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/runtime/engine"
	"github.com/wgllm/wgllm/runtime/gguf"
	"github.com/wgllm/wgllm/runtime/gpu"
	"github.com/wgllm/wgllm/runtime/model"
	"github.com/wgllm/wgllm/runtime/sample"
	"github.com/wgllm/wgllm/runtime/tokenizer"
)

const (
	modelPath = "../../models/kjv-30m-q4_k_m.gguf"
	prompt    = "In the beginning God created"
	maxTokens = 8 // SwiftShader decodes ~0.3 tok/s here: the test stays near a minute
	ctxSize   = 128
)

func findChromium() string {
	if p := os.Getenv("WGLLM_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// buildWasm builds cmd/wgllm-wasm as `make wasm` does (same flags, so the
// build cache makes this quick after it) and copies Go's loader beside it.
func buildWasm(t *testing.T, dir string) {
	t.Helper()
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	cmd := exec.Command(goBin, "build", "-trimpath", "-o", filepath.Join(dir, "wgllm.wasm"), "../../cmd/wgllm-wasm")
	cmd.Env = append(os.Environ(), "GOOS=js", "GOARCH=wasm")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the wasm runtime: %v\n%s", err, out)
	}
	loader, err := os.ReadFile(filepath.Join(runtime.GOROOT(), "lib", "wasm", "wasm_exec.js"))
	if err != nil {
		t.Fatalf("Go's wasm_exec.js: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "wasm_exec.js"), loader, 0o644); err != nil {
		t.Fatal(err)
	}
}

const page = `<!doctype html><meta charset="utf-8"><title>wgllm wasm</title>
<script src="wasm_exec.js"></script>
<script>
window.onWgllmReady = () => { window.wgllmReady = true; };
const go = new Go();
WebAssembly.instantiateStreaming(fetch("wgllm.wasm"), go.importObject)
  .then(r => go.run(r.instance))
  .catch(e => { window.wgllmFailed = String(e); });
</script>`

// nativeGreedy is the native runtime's text for the prompt, as `wgllm run
// --temp 0` writes it.
func nativeGreedy(t *testing.T) (string, engine.Stats) {
	t.Helper()
	f, err := gguf.Open(modelPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tok, err := tokenizer.FromGGUF(f)
	if err != nil {
		t.Fatal(err)
	}
	ctx, err := gpu.New(gpu.OptionsFromEnv())
	if err == gpu.ErrNoAdapter {
		t.Skip("no native WebGPU adapter to compare with:", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer ctx.Close()
	m, err := model.Load(ctx, f, model.Options{CtxLen: ctxSize, KVType: ops.F16})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	gen, err := engine.New(m, tok)
	if err != nil {
		t.Fatal(err)
	}
	var text strings.Builder
	st, err := gen.Generate(engine.Request{Prompt: prompt, MaxTokens: maxTokens, Sampling: sample.Greedy()}, func(s string) error {
		text.WriteString(s)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return text.String(), st
}

type browserResult struct {
	Error   string
	Adapter struct {
		Name      string
		Type      string
		ShaderF16 bool
	}
	Info struct {
		Arch    string
		CtxSize int
	}
	Text  string
	Times []float64 // when each piece of text arrived, ms
	Stats struct {
		PromptTokens, CompletionTokens int
		FinishReason                   string
		PrefillMs, DecodeMs            float64
	}
	Cancelled struct {
		CompletionTokens int
		FinishReason     string
	}
}

func TestBrowserGreedyMatchesNative(t *testing.T) {
	bin := findChromium()
	if bin == "" {
		t.Skip("no Chromium binary found (looked for $WGLLM_CHROMIUM, /usr/bin/chromium, chromium, chromium-browser, google-chrome); install the Debian package chromium to run the browser tests")
	}
	want, nst := nativeGreedy(t)
	t.Logf("native (%d tokens, %.1f tok/s decode): %q", nst.CompletionTokens, float64(nst.CompletionTokens)/nst.Decode.Seconds(), want)

	dir := t.TempDir()
	buildWasm(t, dir)
	mux := http.NewServeMux()
	mux.Handle("/", http.FileServer(http.Dir(dir)))
	mux.HandleFunc("/index.html", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, page)
	})
	mux.HandleFunc("/model.gguf", func(w http.ResponseWriter, r *http.Request) { http.ServeFile(w, r, modelPath) })
	srv := httptest.NewServer(mux)
	defer srv.Close()

	logFile, err := os.Create(filepath.Join(t.TempDir(), "chromium.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.NoFirstRun,
		// WebGPU in headless Chromium: SwiftShader's Vulkan.
		chromedp.Flag("enable-unsafe-webgpu", true),
		chromedp.Flag("enable-features", "Vulkan,WebGPUService"),
		chromedp.Flag("use-vulkan", "native"),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.CombinedOutput(logFile),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	tab, cancelTab := chromedp.NewContext(allocCtx)
	defer cancelTab()
	ctx, cancel := context.WithTimeout(tab, 5*time.Minute)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/index.html")); err != nil {
		t.Fatalf("opening the page: %v (browser log: %s)", err, logFile.Name())
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void]("window.wgllmReady || window.wgllmFailed",
		chromedp.WithPollingTimeout(2*time.Minute))); err != nil {
		t.Fatalf("waiting for the wasm runtime: %v", err)
	}
	var failed string
	if raw, err := chromedp.Run(ctx, chromedp.Evaluate[[]byte]("window.wgllmFailed || ''")); err == nil {
		_ = json.Unmarshal(raw, &failed)
	}
	if failed != "" {
		t.Fatalf("starting the wasm runtime: %s", failed)
	}
	if raw, err := chromedp.Run(ctx, chromedp.Evaluate[[]byte]("!!(navigator.gpu) && navigator.gpu.requestAdapter().then(a => !!a)", chromedp.EvalAwaitPromise)); err != nil || string(raw) != "true" {
		t.Skipf("this Chromium has no WebGPU adapter (navigator.gpu.requestAdapter: %s, %v); the flags tried are in the test", raw, err)
	}

	script := fmt.Sprintf(`(async () => {
  const out = {};
  try {
    out.adapter = await wgllm.adapter();
    const buf = await (await fetch("/model.gguf")).arrayBuffer();
    out.info = await wgllm.load(buf, {ctxSize: %d});
    out.text = "";
    out.times = [];
    out.stats = await wgllm.generate({prompt: %q, maxTokens: %d, temperature: 0}, s => { out.text += s; out.times.push(performance.now()); });
    // cancel() from the first piece of text stops the generation early.
    out.cancelled = await wgllm.generate({prompt: %[2]q, maxTokens: %[3]d, temperature: 0}, s => { wgllm.cancel(); });
    await wgllm.unload();
  } catch (e) { out.error = String(e && e.stack || e); }
  return out;
})()`, ctxSize, prompt, maxTokens)
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[[]byte](script, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("running the model in the page: %v", err)
	}
	var got browserResult
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatalf("decoding %s: %v", raw, err)
	}
	if got.Error != "" {
		t.Fatalf("in the page: %s", got.Error)
	}
	t.Logf("browser adapter %q (%s, shader-f16 %v), %s, context %d", got.Adapter.Name, got.Adapter.Type, got.Adapter.ShaderF16, got.Info.Arch, got.Info.CtxSize)
	decodeTPS := float64(got.Stats.CompletionTokens) / (got.Stats.DecodeMs / 1000)
	t.Logf("browser (%d tokens, %.1f tok/s decode, prefill %.0f ms): %q", got.Stats.CompletionTokens, decodeTPS, got.Stats.PrefillMs, got.Text)
	if n := len(got.Times); n > 2 { // past the first steps, which compile pipelines
		t.Logf("browser steady decode: %.2f tok/s over the last %d pieces", float64(n-2)/((got.Times[n-1]-got.Times[1])/1000), n-2)
	}
	if got.Info.CtxSize != ctxSize {
		t.Errorf("page's context %d, asked for %d", got.Info.CtxSize, ctxSize)
	}
	if got.Stats.CompletionTokens != nst.CompletionTokens || got.Stats.FinishReason != nst.FinishReason {
		t.Errorf("browser: %d tokens (%s); native: %d tokens (%s)", got.Stats.CompletionTokens, got.Stats.FinishReason, nst.CompletionTokens, nst.FinishReason)
	}
	if got.Text != want {
		t.Errorf("greedy text differs:\nbrowser %q\nnative  %q", got.Text, want)
	}
	if got.Cancelled.FinishReason != "cancelled" || got.Cancelled.CompletionTokens >= got.Stats.CompletionTokens {
		t.Errorf("cancel: finish %q after %d tokens (uncancelled: %d)", got.Cancelled.FinishReason, got.Cancelled.CompletionTokens, got.Stats.CompletionTokens)
	}
}
