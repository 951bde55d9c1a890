package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// The end-to-end tests drive the page in headless Chromium. They skip only
// when no Chromium binary is found. WGLLM_CHROMIUM names a binary to use;
// WGLLM_ARTIFACTS a directory for screenshots and the browser log.

// findChromium returns the browser binary to drive, or "" when there is none.
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

// artifactsDir is where screenshots go: $WGLLM_ARTIFACTS or a temp dir.
func artifactsDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("WGLLM_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("artifacts dir %s: %v", dir, err)
	}
	t.Logf("artifacts (screenshots, browser log) in %s", dir)
	return dir
}

// startBrowser starts headless Chromium with a fresh profile and returns a
// context whose children (chromedp.NewContext) are tabs of that browser.
func startBrowser(t *testing.T, artifacts string) context.Context {
	t.Helper()
	bin := findChromium()
	if bin == "" {
		t.Skip("no Chromium binary found (looked for $WGLLM_CHROMIUM, /usr/bin/chromium, chromium, chromium-browser, google-chrome); install the Debian package chromium to run the browser tests")
	}
	logFile, err := os.Create(filepath.Join(artifacts, "chromium.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logFile.Close() })
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1200, 860),
		chromedp.CombinedOutput(logFile),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	browserCtx, cancelBrowser := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancelBrowser()
		cancelAlloc()
	})
	// The first Do starts the browser; its life is bound to browserCtx, so
	// this call gets no timeout of its own.
	if err := chromedp.Do(browserCtx); err != nil {
		t.Fatalf("starting %s: %v (see %s)", bin, err, logFile.Name())
	}
	return browserCtx
}

// newTab opens a tab of the browser, closed at the end of the test.
func newTab(t *testing.T, browserCtx context.Context) context.Context {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browserCtx)
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("opening a tab: %v", err)
	}
	return ctx
}

// pageWatch records JavaScript dialogs (alert, confirm, prompt) and uncaught
// exceptions of a tab. A dialog is dismissed at once so it cannot hang the page.
type pageWatch struct {
	mu         sync.Mutex
	dialogs    []string
	exceptions []string
}

func watchPage(t *testing.T, ctx context.Context) *pageWatch {
	t.Helper()
	w := &pageWatch{}
	dialogs := chromedp.Events(ctx, page.JavascriptDialogOpening)
	go func() {
		for ev, err := range dialogs {
			if err != nil {
				return
			}
			w.mu.Lock()
			w.dialogs = append(w.dialogs, fmt.Sprintf("%s(%q)", ev.Type, ev.Message))
			w.mu.Unlock()
			chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: false})
		}
	}()
	console := chromedp.Console(ctx)
	go func() {
		for m, err := range console {
			if err != nil {
				return
			}
			if m.IsException() {
				w.mu.Lock()
				w.exceptions = append(w.exceptions, m.String())
				w.mu.Unlock()
			}
		}
	}()
	return w
}

// check fails the test for any dialog or uncaught exception seen so far.
func (w *pageWatch) check(t *testing.T) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.dialogs) > 0 {
		t.Errorf("the page opened JavaScript dialogs (model output ran as code?): %v", w.dialogs)
	}
	if len(w.exceptions) > 0 {
		t.Errorf("uncaught exceptions in the page: %v", w.exceptions)
	}
}

// browserPage bundles a tab with the test so steps read as a script.
type browserPage struct {
	t         *testing.T
	ctx       context.Context
	artifacts string
	shots     int
}

// do runs actions with a time limit; on failure it saves a screenshot.
func (p *browserPage) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		p.failShot(what)
		p.t.Fatalf("%s: %v", what, err)
	}
}

// eval evaluates a JavaScript expression and decodes its value into out.
func (p *browserPage) eval(expr string, out any) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[[]byte](expr))
	if err == nil {
		err = json.Unmarshal(raw, out)
	}
	if err != nil {
		p.t.Fatalf("evaluating %s: %v", expr, err)
	}
}

func (p *browserPage) evalString(expr string) string {
	p.t.Helper()
	var s string
	p.eval(expr, &s)
	return s
}

// waitFor polls a JavaScript expression until it is truthy.
func (p *browserPage) waitFor(what, expr string, timeout time.Duration) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, timeout+5*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr,
		chromedp.WithPollingInterval(10*time.Millisecond), chromedp.WithPollingTimeout(timeout)))
	if err != nil {
		p.failShot(what)
		p.t.Fatalf("waiting %v for %s (%s): %v", timeout, what, expr, err)
	}
}

func (p *browserPage) screenshot(name string) string {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		p.t.Fatalf("screenshot %s: %v", name, err)
	}
	path := filepath.Join(p.artifacts, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		p.t.Fatal(err)
	}
	p.t.Logf("screenshot: %s", path)
	return path
}

// failShot saves a screenshot for a failing step, best effort.
func (p *browserPage) failShot(what string) {
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	if png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot()); err == nil {
		p.shots++
		name := fmt.Sprintf("failure-%d-%s.png", p.shots, regexp.MustCompile(`[^A-Za-z0-9]+`).ReplaceAllString(what, "-"))
		path := filepath.Join(p.artifacts, name)
		if os.WriteFile(path, png, 0o644) == nil {
			p.t.Logf("screenshot of the failure: %s", path)
		}
	}
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// replyTrace is what the page's trace recorder saw of one assistant reply.
type replyTrace struct {
	PartialLengths []int  `json:"partial"` // text lengths seen while streaming, in order
	FinalState     string `json:"state"`
	FinalLength    int    `json:"len"`
}

// installTraceJS records, on every DOM change of the conversation, the state
// and text length of each assistant reply, so the test sees partial text even
// when it polls too slowly to catch it.
const installTraceJS = `(() => {
  if (window.__wgllmTrace) return true;
  const trace = window.__wgllmTrace = [];
  const snap = () => {
    document.querySelectorAll('#messages .msg.assistant').forEach((m, i) => {
      const rec = trace[i] || (trace[i] = {partial: [], state: '', len: 0});
      const len = m.querySelector('.body').textContent.length;
      rec.state = m.dataset.state || '';
      rec.len = len;
      if (rec.state === 'streaming' && len > 0 && rec.partial[rec.partial.length - 1] !== len) rec.partial.push(len);
    });
  };
  new MutationObserver(snap).observe(document.getElementById('messages'),
    {subtree: true, childList: true, characterData: true, attributes: true, attributeFilter: ['data-state']});
  return true;
})()`

// chatPageCheck configures runChatPageSteps.
type chatPageCheck struct {
	BaseURL   string // where the page is served; /ws must speak the chat protocol
	WantModel string // the model name the page must show; "" accepts any
	// HostilePrompt, when set, is a prompt whose reply contains HTML and
	// markdown (a scripted model); the steps check that the HTML stays text.
	HostilePrompt string
	Artifacts     string
	// ReplyTimeout bounds one reply (generation speed of a real model).
	ReplyTimeout time.Duration
}

// runChatPageSteps drives the chat page at cfg.BaseURL like a user and checks
// what it shows. It works against any server that speaks the protocol; the
// checks of the scripted fake model's exact replies are left to the caller.
func runChatPageSteps(t *testing.T, browserCtx context.Context, cfg chatPageCheck) {
	if cfg.ReplyTimeout == 0 {
		cfg.ReplyTimeout = 15 * time.Second
	}
	p := &browserPage{t: t, ctx: newTab(t, browserCtx), artifacts: cfg.Artifacts}
	watch := watchPage(t, p.ctx)
	defer watch.check(t)

	p.do("open the page", chromedp.EmulateViewport(1200, 860), chromedp.Navigate(cfg.BaseURL))

	// 1. The page connects and shows the model name.
	p.waitFor("connected", `document.getElementById('conn-dot').dataset.conn === 'open'`, 10*time.Second)
	if cfg.WantModel != "" {
		p.waitFor("the model name", `document.getElementById('model-name').textContent === `+jsString(cfg.WantModel), 5*time.Second)
	} else {
		p.waitFor("a model name", `!/connecting|not connected/.test(document.getElementById('model-name').textContent)`, 5*time.Second)
	}
	if got := p.evalString(`document.activeElement.id`); got != "prompt" {
		t.Errorf("focus after load is on %q, want the message box", got)
	}
	p.screenshot("chat-start.png")
	var ok bool
	p.eval(installTraceJS, &ok)

	// 2. Shift+Enter adds a line and sends nothing; Enter sends.
	p.do("type two lines",
		chromedp.SendKeys(chromedp.ID("prompt"), "first line"),
		pressEnter(true),
		chromedp.SendKeys(chromedp.ID("prompt"), "second line"),
	)
	if got := p.evalString(`document.getElementById('prompt').value`); got != "first line\nsecond line" {
		t.Fatalf("after Shift+Enter the message box holds %q, want %q", got, "first line\nsecond line")
	}
	var count int
	p.eval(`document.querySelectorAll('#messages .msg').length`, &count)
	if count != 0 {
		t.Fatalf("Shift+Enter sent a message (%d messages on the page)", count)
	}
	p.do("press Enter", pressEnter(false))
	p.waitFor("the user message", `document.querySelectorAll('#messages .msg.user').length === 1`, 5*time.Second)
	if got := p.evalString(`document.querySelector('#messages .msg.user .body').textContent`); got != "first line\nsecond line" {
		t.Errorf("the user message shows %q, want both lines", got)
	}
	if got := p.evalString(`document.getElementById('prompt').value`); got != "" {
		t.Errorf("the message box still holds %q after sending", got)
	}

	// 3. The reply streams in: partial text appears before it is done.
	p.waitFor("the first reply to finish", `(() => { const m = document.querySelectorAll('#messages .msg.assistant')[0]; return m && m.dataset.state === 'done'; })()`, cfg.ReplyTimeout)
	var traces []replyTrace
	p.eval(`window.__wgllmTrace`, &traces)
	if len(traces) < 1 {
		t.Fatalf("trace recorder saw no reply")
	}
	first := traces[0]
	if len(first.PartialLengths) < 2 {
		t.Errorf("reply did not stream: text lengths seen while streaming %v (want at least two different partial texts)", first.PartialLengths)
	} else if first.PartialLengths[0] >= first.FinalLength {
		t.Errorf("first partial text (%d chars) is not shorter than the final text (%d chars)", first.PartialLengths[0], first.FinalLength)
	}
	stats := p.evalString(`document.getElementById('stats').textContent`)
	if !regexp.MustCompile(`\d+(\.\d+)? tok/s`).MatchString(stats) || !regexp.MustCompile(`TTFT \d+(\.\d+)? m?s`).MatchString(stats) {
		t.Errorf("stats show %q, want tokens/s and time to first token of the last reply", stats)
	}

	// 4. Stop cancels a running reply; it ends as cancelled and stops growing.
	p.do("ask for a long reply", typeAndSend("Tell me a long story."))
	second := `document.querySelectorAll('#messages .msg.assistant')[1]`
	p.waitFor("the second reply to start", `(() => { const m = `+second+`; return m && m.querySelector('.body').textContent.length > 0; })()`, cfg.ReplyTimeout)
	if state := p.evalString(second + `.dataset.state`); state != "streaming" {
		t.Fatalf("the long reply is %q before Stop could be pressed; the server answered too fast for this check", state)
	}
	p.waitFor("the Stop button", `!document.getElementById('stop').hidden && document.getElementById('send').hidden`, time.Second)
	p.screenshot("chat-streaming.png")
	p.do("press Stop", chromedp.Click(chromedp.ID("stop")))
	p.waitFor("the reply to end as cancelled", second+`.dataset.state === 'cancelled'`, 5*time.Second)
	if got := p.evalString(second + `.dataset.finish`); got != "cancelled" {
		t.Errorf("finish reason shown %q, want cancelled", got)
	}
	if tag := p.evalString(second + `.querySelector('.meta').textContent`); !strings.Contains(tag, "Stopped") {
		t.Errorf("a stopped reply's footer reads %q, want it to say Stopped", tag)
	}
	var stoppedLen, laterLen int
	p.eval(second+`.querySelector('.body').textContent.length`, &stoppedLen)
	p.do("wait after Stop", chromedp.Sleep(300*time.Millisecond))
	p.eval(second+`.querySelector('.body').textContent.length`, &laterLen)
	if laterLen != stoppedLen {
		t.Errorf("the reply kept growing after it was cancelled: %d → %d chars", stoppedLen, laterLen)
	}
	p.waitFor("Send back after Stop", `!document.getElementById('send').hidden && document.getElementById('stop').hidden`, time.Second)

	// 5. Model output is text: HTML in a reply creates no elements and runs nothing.
	if cfg.HostilePrompt != "" {
		p.do("send the hostile prompt", typeAndSend(cfg.HostilePrompt))
		third := `document.querySelectorAll('#messages .msg.assistant')[2]`
		p.waitFor("the hostile reply to finish", `(() => { const m = `+third+`; return m && m.dataset.state === 'done'; })()`, cfg.ReplyTimeout)
		text := p.evalString(third + `.querySelector('.body').textContent`)
		for _, want := range []string{"<script>alert(1)</script>", "<img src=x onerror=alert(2)>", "<b>code</b>", "<iframe src=x></iframe>", "<script>alert(3)</script>"} {
			if !strings.Contains(text, want) {
				t.Errorf("the hostile reply does not show %q as text; it shows %q", want, text)
			}
		}
		var rendered map[string]int
		p.eval(`(() => { const b = `+third+`.querySelector('.body'); const n = (s) => b.querySelectorAll(s).length;
			return {strong: n('strong'), em: n('em'), inlineCode: n('p code'), li: n('li'), pre: n('pre code')}; })()`, &rendered)
		for _, tag := range []string{"strong", "em", "inlineCode", "li", "pre"} {
			if rendered[tag] == 0 {
				t.Errorf("the hostile reply's markdown did not render a %s element: %v", tag, rendered)
			}
		}
	}
	var injected []string
	p.eval(`Array.from(document.querySelectorAll('#messages *')).filter(e =>
		/^(SCRIPT|IMG|IFRAME|OBJECT|EMBED|SVG|A|STYLE|LINK|FORM|INPUT)$/i.test(e.tagName) ||
		Array.from(e.attributes).some(a => /^on/i.test(a.name) || a.name === 'style')).map(e => e.outerHTML.slice(0, 120))`, &injected)
	if len(injected) > 0 {
		t.Errorf("model text created elements or handlers in the conversation: %q", injected)
	}
	var scripts []string
	p.eval(`Array.from(document.scripts).map(s => s.getAttribute('src') || 'inline')`, &scripts)
	if strings.Join(scripts, ",") != "md.js,app.js" {
		t.Errorf("scripts on the page: %v, want only md.js and app.js", scripts)
	}

	// 6. Screenshots: desktop light, dark, and a phone width.
	p.do("scroll the conversation to the end", chromedp.Evaluate[chromedp.Void](`document.getElementById('messages').scrollTop = 1e9`))
	p.screenshot("chat-desktop-light.png")
	p.do("dark mode", command(emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
		Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}}}))
	p.screenshot("chat-desktop-dark.png")
	p.do("phone width",
		command(emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
			Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "light"}}}),
		chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile),
		chromedp.Evaluate[chromedp.Void](`document.getElementById('messages').scrollTop = 1e9`))
	p.screenshot("chat-phone.png")
	p.do("back to desktop", chromedp.EmulateViewport(1200, 860))

	// 7. New chat empties the conversation and puts focus in the message box.
	p.do("New chat", chromedp.Click(chromedp.ID("new-chat")))
	p.waitFor("an empty conversation", `document.querySelectorAll('#messages .msg').length === 0 && !document.getElementById('empty-state').hidden`, 2*time.Second)
	if got := p.evalString(`document.activeElement.id`); got != "prompt" {
		t.Errorf("focus after New chat is on %q, want the message box", got)
	}
}

func TestChatPageEndToEnd(t *testing.T) {
	artifacts := artifactsDir(t)
	browser := startBrowser(t, artifacts)

	t.Run("chat", func(t *testing.T) {
		srv := newFakeServer(t, "")
		runChatPageSteps(t, browser, chatPageCheck{
			BaseURL:       srv.URL + "/",
			WantModel:     fakeModelName,
			HostilePrompt: hostilePrompt,
			Artifacts:     artifacts,
		})
		if t.Failed() {
			return
		}
		// What the server saw: the requests carry the conversation and the
		// default settings, and Stop sent a cancel for the running request.
		chats, cancels, finished, _, _, _ := srv.snapshot()
		if len(chats) != 3 {
			t.Fatalf("server got %d chat requests, want 3", len(chats))
		}
		c0 := chats[0]
		if c0.Temperature == nil || *c0.Temperature != 0.8 || c0.MaxTokens == nil || *c0.MaxTokens != 256 {
			t.Errorf("first request has temperature %v max_tokens %v, want the defaults 0.8 and 256", deref(c0.Temperature), deref(c0.MaxTokens))
		}
		wantFirst := []chatMessage{{Role: "user", Content: "first line\nsecond line"}}
		if !equalMessages(c0.Messages, wantFirst) {
			t.Errorf("first request messages %+v, want %+v", c0.Messages, wantFirst)
		}
		firstReply := strings.Join(fakeReply("first line\nsecond line"), "")
		wantSecond := append(wantFirst, chatMessage{Role: "assistant", Content: firstReply}, chatMessage{Role: "user", Content: "Tell me a long story."})
		if !equalMessages(chats[1].Messages, wantSecond) {
			t.Errorf("second request messages %+v, want %+v", chats[1].Messages, wantSecond)
		}
		if len(cancels) != 1 || cancels[0] != chats[1].ID {
			t.Errorf("server got cancels %v, want one for %q", cancels, chats[1].ID)
		}
		if finished[chats[1].ID] != "cancelled" {
			t.Errorf("the long request finished as %q on the server, want cancelled", finished[chats[1].ID])
		}
		// The stopped partial reply stays in the conversation that follows.
		m2 := chats[2].Messages
		if len(m2) != 5 || m2[3].Role != "assistant" || !strings.HasPrefix(m2[3].Content, "word1 ") || strings.Contains(m2[3].Content, "word300") || m2[4].Content != hostilePrompt {
			t.Errorf("third request messages %+v, want the stopped partial reply then the new prompt", m2)
		}
		if chats[0].ID == chats[1].ID || chats[1].ID == chats[2].ID {
			t.Errorf("request ids repeat: %q %q %q", chats[0].ID, chats[1].ID, chats[2].ID)
		}
	})

	t.Run("reconnect", func(t *testing.T) {
		srv := newFakeServer(t, "")
		testReconnect(t, browser, srv, artifacts)
	})

	t.Run("settings and api key", func(t *testing.T) {
		srv := newFakeServer(t, "k-123")
		testSettings(t, browser, srv, artifacts)
	})

	t.Run("markdown", func(t *testing.T) {
		srv := newFakeServer(t, "")
		testMarkdown(t, browser, srv, artifacts)
	})
}

// TestChatPageAgainstServer runs the browser steps against a running server,
// e.g. WGLLM_E2E_URL=http://127.0.0.1:8080/ go test ./web -run AgainstServer.
func TestChatPageAgainstServer(t *testing.T) {
	base := os.Getenv("WGLLM_E2E_URL")
	if base == "" {
		t.Skip("WGLLM_E2E_URL is not set; it names a running wgllm server to test the page against")
	}
	artifacts := artifactsDir(t)
	browser := startBrowser(t, artifacts)
	// A software adapter on a busy CI machine may take minutes for a
	// 256-token reply; WGLLM_E2E_REPLY_TIMEOUT (a Go duration) says how long.
	timeout := 60 * time.Second
	if v := os.Getenv("WGLLM_E2E_REPLY_TIMEOUT"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("WGLLM_E2E_REPLY_TIMEOUT %q: %v", v, err)
		}
		timeout = d
	}
	runChatPageSteps(t, browser, chatPageCheck{
		BaseURL:      base,
		WantModel:    os.Getenv("WGLLM_E2E_MODEL"),
		Artifacts:    artifacts,
		ReplyTimeout: timeout,
	})
}

// testReconnect drops the socket, keeps the server down for a while and
// checks that the page says so, retries with growing delays, fails the reply
// that was running, and comes back when the server does.
func testReconnect(t *testing.T, browserCtx context.Context, srv *fakeServer, artifacts string) {
	p := &browserPage{t: t, ctx: newTab(t, browserCtx), artifacts: artifacts}
	watch := watchPage(t, p.ctx)
	defer watch.check(t)
	p.do("open the page", chromedp.EmulateViewport(1200, 860), chromedp.Navigate(srv.URL+"/"))
	p.waitFor("connected", `document.getElementById('conn-dot').dataset.conn === 'open'`, 10*time.Second)

	// A drop mid-reply fails that reply and reconnects at once (server up).
	p.do("ask for a long reply", typeAndSend("A long story please."))
	p.waitFor("streaming", `(() => { const m = document.querySelector('#messages .msg.assistant'); return m && m.querySelector('.body').textContent.length > 0; })()`, 5*time.Second)
	srv.dropAll()
	p.waitFor("the reply to fail", `document.querySelector('#messages .msg.assistant').dataset.state === 'error'`, 5*time.Second)
	if msg := p.evalString(`document.querySelector('#messages .msg.assistant .error-text').textContent`); !strings.Contains(msg, "connection was lost") {
		t.Errorf("the interrupted reply says %q, want it to say the connection was lost", msg)
	}
	p.waitFor("reconnected", `document.getElementById('conn-dot').dataset.conn === 'open' && document.getElementById('conn-banner').hidden`, 5*time.Second)
	if got := p.evalString(`document.getElementById('stop').hidden ? 'send' : 'stop'`); got != "send" {
		t.Errorf("after the failed reply the composer shows %s, want send", got)
	}

	// Server down: the page says so and retries with backoff.
	srv.setRefusing(true)
	_, _, _, _, before, _ := srv.snapshot()
	dropped := time.Now()
	srv.dropAll()
	p.waitFor("the banner", `!document.getElementById('conn-banner').hidden && /Reconnecting in \d+ s/.test(document.getElementById('conn-text').textContent)`, 3*time.Second)
	if s := p.evalString(`document.getElementById('conn-dot').dataset.conn`); s == "open" {
		t.Errorf("connection dot says open while the server is down")
	}
	var sendDisabled bool
	p.eval(`document.getElementById('send').disabled`, &sendDisabled)
	if !sendDisabled {
		t.Errorf("Send is enabled while disconnected")
	}
	p.do("let it retry", chromedp.Sleep(2600*time.Millisecond))
	_, _, _, hellosDown, attempts, _ := srv.snapshot()
	retries := attempts[len(before):]
	// Delays of 0.5, 1 and 2 s (±20%) give two or three tries in 2.6 s or a
	// little more; a client without backoff would try many more times.
	if len(retries) < 2 || len(retries) > 3 {
		t.Errorf("page tried %d times in 2.6 s while the server was down, want 2 or 3 (backoff from 0.5 s)", len(retries))
	} else if gap0, gap1 := retries[0].Sub(dropped), retries[1].Sub(retries[0]); gap1 <= gap0 {
		t.Errorf("retry delays do not grow: %v then %v", gap0, gap1)
	}
	p.screenshot("chat-reconnecting.png")

	srv.setRefusing(false)
	// Press "Retry now" unless the next scheduled retry won the race.
	p.do("Retry now", chromedp.Evaluate[chromedp.Void](`(() => { if (!document.getElementById('conn-banner').hidden) document.getElementById('retry-now').click(); })()`))
	p.waitFor("reconnected after the outage", `document.getElementById('conn-dot').dataset.conn === 'open' && document.getElementById('conn-banner').hidden`, 5*time.Second)
	_, _, _, hellosUp, _, _ := srv.snapshot()
	if hellosUp <= hellosDown {
		t.Errorf("server greeted no new connection after coming back")
	}
	// And the page works again.
	p.do("chat after reconnecting", typeAndSend("hello again"))
	p.waitFor("a reply after reconnecting", `(() => { const m = document.querySelectorAll('#messages .msg.assistant')[1]; return m && m.dataset.state === 'done'; })()`, 10*time.Second)
	chats, _, _, _, _, _ := srv.snapshot()
	last := chats[len(chats)-1].Messages
	// The failed exchange is left out of the context sent to the model.
	if len(last) != 1 || last[0].Content != "hello again" {
		t.Errorf("request after a failed reply sent %+v, want only the new prompt", last)
	}
}

// testSettings covers the settings dialog: validation, the API key as the
// api_key query parameter, settings used in requests, and persistence in
// localStorage across a reload.
func testSettings(t *testing.T, browserCtx context.Context, srv *fakeServer, artifacts string) {
	p := &browserPage{t: t, ctx: newTab(t, browserCtx), artifacts: artifacts}
	watch := watchPage(t, p.ctx)
	defer watch.check(t)
	p.do("open the page", chromedp.EmulateViewport(1200, 860), chromedp.Navigate(srv.URL+"/"))
	// No key yet: the server refuses, and the page says it can't connect.
	p.waitFor("the cannot-connect banner", `!document.getElementById('conn-banner').hidden && /Cannot reach the server/.test(document.getElementById('conn-text').textContent)`, 5*time.Second)

	p.do("open Settings", chromedp.Click(chromedp.ID("open-settings")))
	p.waitFor("the dialog", `document.getElementById('settings').open`, 2*time.Second)
	if got := p.evalString(`document.activeElement.id`); got != "set-system" {
		t.Errorf("focus in the settings dialog is on %q, want the first field", got)
	}
	// Max tokens offers what the server accepts (its /props), not more.
	if got := p.evalString(`document.getElementById('set-max-tokens').max`); got != "512" {
		t.Errorf("max tokens field allows up to %q, want the server's 512", got)
	}
	// Every field has a label.
	var unlabeled []string
	p.eval(`Array.from(document.querySelectorAll('input, textarea')).filter(e => !e.labels || e.labels.length === 0).map(e => e.id)`, &unlabeled)
	if len(unlabeled) > 0 {
		t.Errorf("fields without a label: %v", unlabeled)
	}

	p.do("fill in a bad temperature",
		chromedp.SetValue(chromedp.ID("set-system"), "Answer briefly."),
		chromedp.SetValue(chromedp.ID("set-temperature"), "5"),
		chromedp.SetValue(chromedp.ID("set-max-tokens"), "64"),
		chromedp.SetValue(chromedp.ID("set-api-key"), "k-123"),
		chromedp.Click(chromedp.ID("settings-save")))
	p.waitFor("the validation error", `!document.getElementById('settings-error').hidden && document.getElementById('settings').open`, 2*time.Second)
	p.screenshot("chat-settings.png")

	p.do("fix the temperature and save",
		chromedp.SetValue(chromedp.ID("set-temperature"), "0.3"),
		chromedp.Click(chromedp.ID("settings-save")))
	p.waitFor("the dialog to close", `!document.getElementById('settings').open`, 2*time.Second)
	p.waitFor("connected with the key", `document.getElementById('conn-dot').dataset.conn === 'open' && document.getElementById('model-name').textContent === `+jsString(fakeModelName), 5*time.Second)

	p.do("send a message", typeAndSend("hi"))
	p.waitFor("the reply", `(() => { const m = document.querySelector('#messages .msg.assistant'); return m && m.dataset.state === 'done'; })()`, 10*time.Second)
	chats, _, _, _, _, keys := srv.snapshot()
	if len(chats) != 1 {
		t.Fatalf("server got %d chat requests, want 1", len(chats))
	}
	c := chats[0]
	want := []chatMessage{{Role: "system", Content: "Answer briefly."}, {Role: "user", Content: "hi"}}
	if !equalMessages(c.Messages, want) || deref(c.Temperature) != 0.3 || deref(c.MaxTokens) != 64 {
		t.Errorf("request: messages %+v temperature %v max_tokens %v; want %+v, 0.3, 64", c.Messages, deref(c.Temperature), deref(c.MaxTokens), want)
	}
	if len(keys) != 1 || keys[0] != "k-123" {
		t.Errorf("accepted connections had api_key %q, want one with k-123", keys)
	}

	// The settings survive a reload, and the page connects with the key at once.
	p.do("reload", chromedp.Reload())
	p.waitFor("connected after reload", `document.getElementById('conn-dot').dataset.conn === 'open'`, 5*time.Second)
	p.do("open Settings again", chromedp.Click(chromedp.ID("open-settings")))
	var got map[string]string
	p.eval(`({system: document.getElementById('set-system').value, temperature: document.getElementById('set-temperature').value,
		maxTokens: document.getElementById('set-max-tokens').value, apiKey: document.getElementById('set-api-key').value})`, &got)
	wantSettings := map[string]string{"system": "Answer briefly.", "temperature": "0.3", "maxTokens": "64", "apiKey": "k-123"}
	for k, v := range wantSettings {
		if got[k] != v {
			t.Errorf("after reload setting %s = %q, want %q", k, got[k], v)
		}
	}
	p.do("Cancel closes the dialog", chromedp.Click(chromedp.ID("settings-cancel")))
	p.waitFor("the dialog to close", `!document.getElementById('settings').open`, 2*time.Second)
	if got := p.evalString(`document.activeElement.id`); got != "open-settings" {
		t.Errorf("focus after closing settings is on %q, want the Settings button", got)
	}
}

// testMarkdown checks the renderer's output element by element.
func testMarkdown(t *testing.T, browserCtx context.Context, srv *fakeServer, artifacts string) {
	p := &browserPage{t: t, ctx: newTab(t, browserCtx), artifacts: artifacts}
	watch := watchPage(t, p.ctx)
	defer watch.check(t)
	p.do("open the page", chromedp.Navigate(srv.URL+"/"))
	p.waitFor("the renderer", `typeof window.renderMarkdown === 'function'`, 5*time.Second)
	cases := []struct{ in, want string }{
		{"Hello **world**", `<p>Hello <strong>world</strong></p>`},
		{"a *b* _c_ __d__", `<p>a <em>b</em> <em>c</em> <strong>d</strong></p>`},
		{"snake_case_name stays", `<p>snake_case_name stays</p>`},
		{"**bold *and italic***", `<p><strong>bold <em>and italic</em></strong></p>`},
		{"*italic **bold***", `<p><em>italic <strong>bold</strong></em></p>`},
		{"***both***", `<p><strong><em>both</em></strong></p>`},
		{"2 * 3 * 4 and a*b*c", `<p>2 * 3 * 4 and a<em>b</em>c</p>`},
		{"use `<b>x</b>` here", `<p>use <code>&lt;b&gt;x&lt;/b&gt;</code> here</p>`},
		{"``a ` b``", "<p><code>a ` b</code></p>"},
		{"line1\nline2\n\npara2", `<p>line1<br>line2</p><p>para2</p>`},
		{"<script>alert(1)</script><img src=x onerror=alert(2)>",
			`<p>&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;</p>`},
		{"[click](javascript:alert(1))", `<p>[click](javascript:alert(1))</p>`},
		{"```go\nfmt.Println(\"<hi>\")\n\n```",
			`<div class="code-block"><div class="code-bar"><span class="code-lang">go</span></div><pre><code class="language-go">fmt.Println("&lt;hi&gt;")` + "\n" + `</code></pre></div>`},
		{"```\"><img src=x>\ncode", // a hostile language tag; an unclosed fence runs to the end
			`<div class="code-block"><div class="code-bar"><span class="code-lang">img</span></div><pre><code class="language-img">code</code></pre></div>`},
		{"- one\n- two\n  - nested\n- three", `<ul><li>one</li><li>two<ul><li>nested</li></ul></li><li>three</li></ul>`},
		{"3. c\n4. d", `<ol start="3"><li>c</li><li>d</li></ol>`},
		{"intro\n- a\n- b\n\nafter", `<p>intro</p><ul><li>a</li><li>b</li></ul><p>after</p>`},
		{"# Title\n> quoted *text*\n\n---", `<h3>Title</h3><blockquote><p>quoted <em>text</em></p></blockquote><hr>`},
		{"**unclosed and \\*escaped\\*", `<p>**unclosed and *escaped*</p>`},
		{"", ``},
	}
	for _, c := range cases {
		got := p.evalString(`(() => { const d = document.createElement('div'); d.append(renderMarkdown(` + jsString(c.in) + `));
			d.querySelectorAll('.code-copy').forEach(b => b.remove()); return d.innerHTML; })()`)
		if got != c.want {
			t.Errorf("renderMarkdown(%q)\n got %s\nwant %s", c.in, got, c.want)
		}
	}
	// Rendering stays fast on adversarial input (many unmatched markers).
	var ms float64
	p.eval(`(() => { const s = '*_'.repeat(20000) + '`+"`"+`'.repeat(3); const t0 = performance.now(); renderMarkdown(s); return performance.now() - t0; })()`, &ms)
	if ms > 1000 {
		t.Errorf("rendering 40k unmatched markers took %.0f ms", ms)
	}
}

func deref[T any](v *T) any {
	if v == nil {
		return nil
	}
	return *v
}

func equalMessages(a, b []chatMessage) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// pressEnter presses Enter (with Shift if asked) as a keyboard does: one
// keyDown that carries the text, so the browser types no newline when the page
// cancels the keydown. chromedp's KeyEvent sends the text as a separate char
// event, which a page cannot cancel, so Enter would send and also type "\n".
func pressEnter(shift bool) chromedp.Action[chromedp.Void] {
	var modifiers int64
	if shift {
		modifiers = int64(chromedp.ModifierShift)
	}
	down := input.DispatchKeyEventParams{
		Type: input.DispatchKeyEventTypeKeyDown, Modifiers: modifiers, Key: "Enter", Code: "Enter",
		Text: "\r", UnmodifiedText: "\r", WindowsVirtualKeyCode: 13, NativeVirtualKeyCode: 13,
	}
	up := down
	up.Type, up.Text, up.UnmodifiedText = input.DispatchKeyEventTypeKeyUp, "", ""
	return chromedp.Steps(command(input.DispatchKeyEvent, down), command(input.DispatchKeyEvent, up))
}

// typeAndSend types text into the message box and presses Enter.
func typeAndSend(text string) chromedp.Action[chromedp.Void] {
	return chromedp.Steps(chromedp.SendKeys(chromedp.ID("prompt"), text), pressEnter(false))
}

// command makes an action of one DevTools protocol command.
func command[P, R any](cmd cdp.Command[P, R], params P) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, cmd, params)
		return err
	})
}
