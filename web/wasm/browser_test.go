// Package wasm_test runs the browser build of the runtime (cmd/wgllm-wasm)
// in headless Chromium on the browser's own WebGPU (SwiftShader, a software
// adapter), and checks that it writes the same greedy text as the native
// runtime for the same model and prompt; then, in the same browser, that
// the chat page's "in this browser" mode downloads the model from the
// server, streams the native runtime's greedy chat reply and stops on Stop.
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
	"github.com/rs/zerolog"
	"github.com/wgllm/wgllm/internal/ggufedit"
	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/runtime/chat"
	"github.com/wgllm/wgllm/runtime/engine"
	"github.com/wgllm/wgllm/runtime/gguf"
	"github.com/wgllm/wgllm/runtime/gpu"
	"github.com/wgllm/wgllm/runtime/model"
	"github.com/wgllm/wgllm/runtime/sample"
	"github.com/wgllm/wgllm/runtime/tokenizer"
	"github.com/wgllm/wgllm/serve"
	"github.com/wgllm/wgllm/serve/servetest"
	"github.com/wgllm/wgllm/web"
)

const (
	modelPath = "../../models/kjv-30m-q4_k_m.gguf"
	prompt    = "In the beginning God created"
	maxTokens = 8 // SwiftShader decodes ~0.3 tok/s here: the test stays near a minute
	// The page's chat: a few tokens, for the same reason.
	chatMaxTokens = 3
	ctxSize       = 128
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
// --temp 0` writes it, and for the prompt as the one message of a chat
// (rendered as `wgllm serve` renders it, with the file's template or
// ChatML) in chatMaxTokens tokens.
func nativeGreedy(t *testing.T) (string, engine.Stats, string) {
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

	tmpl, err := chat.FromGGUF(f)
	if err != nil {
		t.Fatal(err)
	}
	rendered, err := tmpl.Render([]chat.Message{{Role: "user", Content: prompt}}, true)
	if err != nil {
		t.Fatal(err)
	}
	chatText := chatReply(t, gen, rendered)
	if tmpl.IsFallback() { // ChatML's turn markers end the reply, as in wgllm serve
		for _, stop := range []string{"<|im_end|>", "<|im_start|>"} {
			if i := strings.Index(chatText, stop); i >= 0 {
				chatText = chatText[:i]
			}
		}
	}
	return text.String(), st, chatText
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
}

func TestBrowserGreedyMatchesNative(t *testing.T) {
	bin := findChromium()
	if bin == "" {
		t.Skip("no Chromium binary found (looked for $WGLLM_CHROMIUM, /usr/bin/chromium, chromium, chromium-browser, google-chrome); install the Debian package chromium to run the browser tests")
	}
	want, nst, wantChat := nativeGreedy(t)
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
	thinkModel := filepath.Join(t.TempDir(), "kjv-think.gguf")
	ggufedit.CopyWithTemplate(t, modelPath, thinkModel, ggufedit.ThinkTemplate, nil)
	mux.HandleFunc("/think.gguf", func(w http.ResponseWriter, r *http.Request) { http.ServeFile(w, r, thinkModel) })
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

	reasoningInBrowser(t, ctx, thinkModel)
	chatPageInBrowser(t, ctx, dir, wantChat)
}

// reasoningInBrowser: a chat with a template that opens <think> (Qwen3's
// way) streams the reply split as the server splits it: the reasoning to
// onReasoning, the answer to onText, no markers in either, the same parts
// as runtime/chat's parser makes of the native greedy reply.
func reasoningInBrowser(t *testing.T, ctx context.Context, thinkModel string) {
	f, err := gguf.Open(thinkModel)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tmpl, err := chat.FromGGUF(f)
	if err != nil {
		t.Fatal(err)
	}
	rendered, err := tmpl.Render([]chat.Message{{Role: "user", Content: prompt}}, true)
	if err != nil {
		t.Fatal(err)
	}
	native := nativeReply(t, f, rendered)
	parser := chat.NewOutputParser(tmpl.Format(), false, tmpl.Format().OpensThinking(rendered))
	var wantText, wantReasoning strings.Builder
	for _, p := range append(parser.Feed(native), parser.Finish()...) {
		wantText.WriteString(p.Content)
		wantReasoning.WriteString(p.Reasoning)
	}
	if wantReasoning.Len() == 0 {
		t.Fatalf("the native reply %q has no reasoning to split", native)
	}
	script := fmt.Sprintf(`(async () => {
  const out = {text: "", reasoning: ""};
  try {
    const buf = await (await fetch("/think.gguf")).arrayBuffer();
    await wgllm.load(buf, {ctxSize: %d});
    out.stats = await wgllm.generate({messages: [{role: "user", content: %q}], maxTokens: %d, temperature: 0},
      s => { out.text += s; }, s => { out.reasoning += s; });
    await wgllm.unload();
  } catch (e) { out.error = String(e && e.stack || e); }
  return out;
})()`, ctxSize, prompt, chatMaxTokens)
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[[]byte](script, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("running the think model in the page: %v", err)
	}
	var got struct{ Text, Reasoning, Error string }
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatalf("decoding %s: %v", raw, err)
	}
	if got.Error != "" {
		t.Fatalf("in the page: %s", got.Error)
	}
	if got.Text != wantText.String() || got.Reasoning != wantReasoning.String() {
		t.Errorf("browser split: text %q reasoning %q; native, parsed: text %q reasoning %q", got.Text, got.Reasoning, wantText.String(), wantReasoning.String())
	}
	if strings.Contains(got.Text+got.Reasoning, "<think>") || strings.Contains(got.Text+got.Reasoning, "</think>") {
		t.Errorf("a think marker reached the page: text %q reasoning %q", got.Text, got.Reasoning)
	}
}

// nativeReply is the greedy chat reply of chatMaxTokens tokens to the
// rendered prompt on the native runtime, as the page would generate it.
func nativeReply(t *testing.T, f *gguf.File, rendered string) string {
	tok, err := tokenizer.FromGGUF(f)
	if err != nil {
		t.Fatal(err)
	}
	ctx, err := gpu.New(gpu.OptionsFromEnv())
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
	return chatReply(t, gen, rendered)
}

// chatReply is gen's greedy reply of chatMaxTokens tokens to a rendered
// chat, with a BOS the template printed not doubled (as the page does).
func chatReply(t *testing.T, gen *engine.Generator, rendered string) string {
	t.Helper()
	tok := gen.Tok
	addBOS := tok.AddBOS()
	if ids := tok.Encode(rendered, false); len(ids) > 0 && ids[0] == tok.BOS() {
		addBOS = false
	}
	var reply strings.Builder
	if _, err := gen.Generate(engine.Request{Prompt: rendered, MaxTokens: chatMaxTokens, Sampling: sample.Greedy(), AddBOS: &addBOS}, func(s string) error {
		reply.WriteString(s)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return reply.String()
}

// chatPageInBrowser drives the chat page, served by the real server (with
// a fake engine behind the websocket), in "in this browser" mode: it loads
// the runtime from /wasm/, downloads kjv-30m from /v1/models/{model}/file,
// checks the streamed greedy reply against the native one, then stops a
// reply with the Stop button. Stop is wgllm.cancel, so this covers cancel.
func chatPageInBrowser(t *testing.T, ctx context.Context, wasmDir, want string) {
	fake := servetest.New(servetest.Options{Model: "kjv-30m"})
	defer fake.Close()
	srv := serve.New(serve.Config{
		Static:    web.FS(),
		WasmDir:   wasmDir,
		ModelFile: func(name string) (string, bool) { return modelPath, name == "" },
	}, zerolog.Nop())
	srv.SetBackend(fake)
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()

	run := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, actions...); err != nil {
			t.Fatalf("chat page: %s: %v", what, err)
		}
	}
	waitFor := func(what, cond string, timeout time.Duration) {
		t.Helper()
		if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](cond, chromedp.WithPollingTimeout(timeout))); err != nil {
			status, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById('local-status').textContent`))
			t.Fatalf("chat page: waiting for %s: %v (page says %q)", what, err, status)
		}
	}
	settings := fmt.Sprintf(`localStorage.setItem('wgllm.chat.settings', JSON.stringify({temperature: 0, maxTokens: %d}))`, chatMaxTokens)
	run("open the page", chromedp.Navigate(hs.URL+"/"), chromedp.Evaluate[chromedp.Void](settings), chromedp.Reload())
	waitFor("the server's hello", `document.getElementById('model-name').textContent === 'kjv-30m'`, 20*time.Second)
	run("switch to in this browser", chromedp.SetValue("#mode", "browser"),
		chromedp.Evaluate[chromedp.Void](`document.getElementById('mode').dispatchEvent(new Event('change'))`),
		chromedp.Click("#local-download"))
	waitFor("the model to load in the page", `!document.getElementById('send').disabled`, 2*time.Minute)
	status := evalTo[string](t, ctx, `document.getElementById('local-status').textContent`)
	shown := evalTo[string](t, ctx, `document.getElementById('model-name').textContent`)
	t.Logf("page: %s", status)
	if !strings.Contains(status, "runs in this browser on") || !strings.Contains(shown, "in this browser") {
		t.Errorf("the page does not say the model runs in the browser on an adapter: status %q, model %q", status, shown)
	}

	// Record what the runtime streams to the page, and the reply's state
	// as each piece arrives.
	run("watch the stream", chromedp.Evaluate[chromedp.Void](`(() => {
  const gen = wgllm.generate;
  window.pieces = [];
  wgllm.generate = (req, onText) => gen(req, s => {
    const m = document.querySelectorAll('#messages .msg.assistant');
    window.pieces.push({text: s, state: m[m.length - 1].dataset.state});
    onText(s);
  });
})()`))
	run("send a prompt", chromedp.SetValue("#prompt", prompt), chromedp.Click("#send"))
	waitFor("the reply", `(() => { const m = document.querySelector('#messages .msg.assistant'); return m && m.dataset.state !== 'streaming'; })()`, 2*time.Minute)
	type reply struct {
		State, Body, Meta, Speed string
		Pieces                   []struct{ Text, State string }
	}
	got := evalTo[reply](t, ctx, `(() => {
  const m = document.querySelector('#messages .msg.assistant');
  return {state: m.dataset.state, body: m.querySelector('.body').textContent, meta: m.querySelector('.meta').textContent,
          speed: document.getElementById('stat-speed').textContent, pieces: window.pieces};
})()`)
	var streamed strings.Builder
	for _, p := range got.Pieces {
		streamed.WriteString(p.Text)
		if p.State != "streaming" {
			t.Errorf("a piece arrived while the reply was %q, not streaming", p.State)
		}
	}
	t.Logf("page reply (%s): %q; %s; top bar %s", got.State, streamed.String(), got.Meta, got.Speed)
	if got.State != "done" {
		t.Fatalf("reply state %q (%s), want done", got.State, got.Body)
	}
	if streamed.String() != want {
		t.Errorf("the page's greedy chat reply differs:\npage   %q\nnative %q", streamed.String(), want)
	}
	if !strings.Contains(got.Speed, "tok/s") || strings.HasPrefix(got.Speed, "–") {
		t.Errorf("the top bar shows no speed: %q", got.Speed)
	}

	// New chat, the same prompt, Stop after the first piece.
	run("new chat and send again", chromedp.Click("#new-chat"), chromedp.SetValue("#prompt", prompt), chromedp.Click("#send"))
	waitFor("a first piece", `window.pieces.length > `+fmt.Sprint(len(got.Pieces)), 2*time.Minute)
	run("press stop", chromedp.Click("#stop"))
	waitFor("the reply to stop", `document.querySelector('#messages .msg.assistant').dataset.state === 'cancelled' && !document.getElementById('send').disabled`, time.Minute)
	tag := evalTo[string](t, ctx, `document.querySelector('#messages .msg.assistant .meta').textContent`)
	if !strings.Contains(tag, "Stopped") {
		t.Errorf("the stopped reply's meta %q does not say Stopped", tag)
	}
	if n := len(fake.Jobs()); n != 0 {
		t.Errorf("the server's engine got %d jobs; in browser mode the page must not use it", n)
	}
}

// evalTo evaluates expr in the page and decodes its JSON value into T.
func evalTo[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	var v T
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[[]byte](expr))
	if err != nil {
		t.Fatalf("evaluating %.60q: %v", expr, err)
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("decoding %s: %v", raw, err)
	}
	return v
}
