//go:build js && wasm

// Command wgllm-wasm is the wgllm runtime for a web page: the same model,
// tokenizer, sampler and generation loop as `wgllm run`, on the browser's
// WebGPU. `make wasm` builds it into web/static/wasm/ beside Go's
// wasm_exec.js. It installs globalThis.wgllm:
//
//	wgllm.adapter()                      → Promise<{name, vendor, architecture, shaderF16, maxBinding, maxBuffer}>
//	wgllm.load(bytes, {ctxSize, kvType, onProgress(done, total)})
//	                                     → Promise<{arch, vocab, ctxSize, layers, adapter, weightsBytes, kvBytes, chatTemplate}>
//	wgllm.generate({prompt | messages, maxTokens, temperature, topK, topP, minP, repeatPenalty, seed}, onText(text), onReasoning(text))
//	                                     → Promise<{promptTokens, completionTokens, finishReason, prefillMs, decodeMs}>
//	wgllm.cancel()                       stops the running generation (finishReason "cancelled")
//	wgllm.unload()                       frees the model and the device
//
// bytes is an ArrayBuffer or Uint8Array holding a GGUF file. messages,
// [{role, content}, …], is a chat: it is rendered with the model's chat
// template (chatTemplate "model"), or ChatML when the file has none
// ("chatml", which then also stops at <|im_end|>), as `wgllm serve` does;
// the reply is split as the server splits it (runtime/chat's output
// parser: Qwen3's <think>, gpt-oss's harmony channels): onText gets the
// answer, onReasoning (optional) the reasoning, and no markers reach either.
// Calls run one
// at a time; a call made while another runs is rejected. When the API is
// ready, main calls globalThis.onWgllmReady() if the page defined it.
package main

import (
	"errors"
	"fmt"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"syscall/js"

	"github.com/wgllm/wgllm/ops"
	"github.com/wgllm/wgllm/runtime/chat"
	"github.com/wgllm/wgllm/runtime/engine"
	"github.com/wgllm/wgllm/runtime/gguf"
	"github.com/wgllm/wgllm/runtime/gpu"
	"github.com/wgllm/wgllm/runtime/model"
	"github.com/wgllm/wgllm/runtime/sample"
	"github.com/wgllm/wgllm/runtime/tokenizer"
)

// session is what one page has loaded.
type session struct {
	mu      sync.Mutex // held by the one running call
	ctx     *gpu.Context
	file    *gguf.File
	m       *model.Model
	gen     *engine.Generator
	tmpl    *chat.Template // nil when the file's template does not parse
	tmplErr error
	cancel  atomic.Bool
}

var (
	errCancelled  = errors.New("cancelled")
	errStopString = errors.New("stop string")
)

func main() {
	s := &session{}
	api := js.Global().Get("Object").New()
	api.Set("adapter", js.FuncOf(func(this js.Value, args []js.Value) any {
		return s.async(func() (any, error) { return s.adapter() })
	}))
	api.Set("load", js.FuncOf(func(this js.Value, args []js.Value) any {
		var data, opts js.Value
		if len(args) > 0 {
			data = args[0]
		}
		if len(args) > 1 {
			opts = args[1]
		}
		// The bytes are copied now, while the caller's buffer is surely
		// unchanged; the load itself runs on its own goroutine.
		b, err := bytesOf(data)
		if err != nil {
			return rejected(err)
		}
		return s.async(func() (any, error) { return s.load(b, opts) })
	}))
	api.Set("generate", js.FuncOf(func(this js.Value, args []js.Value) any {
		var req, onText, onReasoning js.Value
		if len(args) > 0 {
			req = args[0]
		}
		if len(args) > 1 {
			onText = args[1]
		}
		if len(args) > 2 {
			onReasoning = args[2]
		}
		return s.async(func() (any, error) { return s.generate(req, onText, onReasoning) })
	}))
	api.Set("cancel", js.FuncOf(func(this js.Value, args []js.Value) any {
		s.cancel.Store(true)
		// At the end of the current step, not at the next piece. (Go's
		// wasm runs every goroutine on the page's one thread: reading s.gen
		// here races nothing.)
		if gen := s.gen; gen != nil {
			gen.Cancel()
		}
		return nil
	}))
	api.Set("unload", js.FuncOf(func(this js.Value, args []js.Value) any {
		return s.async(func() (any, error) { s.close(); return nil, nil })
	}))
	js.Global().Set("wgllm", api)
	if ready := js.Global().Get("onWgllmReady"); ready.Type() == js.TypeFunction {
		ready.Invoke()
	}
	select {} // the API lives as long as the page
}

// async runs fn on a goroutine of its own and answers with a promise: a
// JavaScript callback must not block, and GPU waits block (see
// runtime/gpu/platform_js.go). One call runs at a time.
func (s *session) async(fn func() (any, error)) js.Value {
	if !s.mu.TryLock() {
		return rejected(errors.New("wgllm: busy with another call"))
	}
	var handler js.Func
	handler = js.FuncOf(func(this js.Value, args []js.Value) any {
		resolve, reject := args[0], args[1]
		go func() {
			defer handler.Release()
			defer s.mu.Unlock()
			defer func() { // bad input gets an error, never takes the page down
				if r := recover(); r != nil {
					reject.Invoke(jsError(fmt.Errorf("wgllm: internal error: %v\n%s", r, debug.Stack())))
				}
			}()
			v, err := fn()
			if err != nil {
				reject.Invoke(jsError(err))
				return
			}
			resolve.Invoke(v)
		}()
		return nil
	})
	return js.Global().Get("Promise").New(handler)
}

func jsError(err error) js.Value { return js.Global().Get("Error").New(err.Error()) }

func rejected(err error) js.Value {
	return js.Global().Get("Promise").Call("reject", jsError(err))
}

func bytesOf(v js.Value) ([]byte, error) {
	if v.Type() != js.TypeObject {
		return nil, errors.New("wgllm.load: want the model file as an ArrayBuffer or Uint8Array")
	}
	if v.InstanceOf(js.Global().Get("ArrayBuffer")) {
		v = js.Global().Get("Uint8Array").New(v)
	}
	if !v.InstanceOf(js.Global().Get("Uint8Array")) {
		return nil, errors.New("wgllm.load: want the model file as an ArrayBuffer or Uint8Array")
	}
	b := make([]byte, v.Get("length").Int())
	js.CopyBytesToGo(b, v)
	return b, nil
}

func adapterJS(d gpu.AdapterDesc) map[string]any {
	return map[string]any{
		"name":       d.Name,
		"vendor":     d.Vendor,
		"type":       d.Type,
		"shaderF16":  d.ShaderF16,
		"maxBinding": float64(d.MaxBinding),
		"maxBuffer":  float64(d.MaxBuffer),
	}
}

func (s *session) adapter() (any, error) {
	descs, chosen, err := gpu.ListAdapters(gpu.Options{})
	if err != nil {
		return nil, err
	}
	return adapterJS(descs[chosen]), nil
}

// opt reads a field of an options object; missing or null fields give def.
func opt(o js.Value, key string, def js.Value) js.Value {
	if o.Type() != js.TypeObject {
		return def
	}
	if v := o.Get(key); !v.IsUndefined() && !v.IsNull() {
		return v
	}
	return def
}

func optInt(o js.Value, key string, def int) (int, error) {
	v := opt(o, key, js.ValueOf(def))
	if v.Type() != js.TypeNumber || v.Float() != float64(int(v.Float())) {
		return 0, fmt.Errorf("wgllm: %s must be a whole number", key)
	}
	return v.Int(), nil
}

func optFloat(o js.Value, key string, def float64) (float64, error) {
	v := opt(o, key, js.ValueOf(def))
	if v.Type() != js.TypeNumber {
		return 0, fmt.Errorf("wgllm: %s must be a number", key)
	}
	return v.Float(), nil
}

func (s *session) load(b []byte, opts js.Value) (any, error) {
	s.close()
	ctxSize, err := optInt(opts, "ctxSize", 0)
	if err != nil {
		return nil, err
	}
	if ctxSize < 0 {
		return nil, errors.New("wgllm: ctxSize must not be negative")
	}
	kt := ops.F16 // the native default (kv.dtype), so the two give the same text
	switch k := opt(opts, "kvType", js.ValueOf("f16")); k.String() {
	case "f16":
	case "f32":
		kt = ops.F32
	case "q8_0":
		kt = ops.Q8_0
	default:
		return nil, fmt.Errorf("wgllm: kvType %q: want f16, f32 or q8_0", k.String())
	}
	mopt := model.Options{CtxLen: ctxSize, KVType: kt}
	if p := opt(opts, "onProgress", js.Undefined()); p.Type() == js.TypeFunction {
		mopt.Progress = func(done, total uint64) { p.Invoke(float64(done), float64(total)) }
	}
	ok := false
	defer func() {
		if !ok {
			s.close()
		}
	}()
	if s.file, err = gguf.ParseBytes(b); err != nil {
		return nil, err
	}
	tok, err := tokenizer.FromGGUF(s.file)
	if err != nil {
		return nil, err
	}
	if s.ctx, err = gpu.New(gpu.Options{}); err != nil {
		return nil, err
	}
	if s.m, err = model.Load(s.ctx, s.file, mopt); err != nil {
		return nil, err
	}
	if s.gen, err = engine.New(s.m, tok); err != nil {
		return nil, err
	}
	// A broken template fails chats only, not plain prompts.
	s.tmpl, s.tmplErr = chat.FromGGUF(s.file)
	tmplKind := "model"
	switch {
	case s.tmplErr != nil:
		tmplKind = "error: " + s.tmplErr.Error()
	case s.tmpl.IsFallback():
		tmplKind = "chatml"
	}
	ok = true
	w, k, _ := s.m.Memory()
	return map[string]any{
		"arch":         s.m.Cfg.Arch,
		"vocab":        s.m.Cfg.Vocab,
		"ctxSize":      s.m.KV.Config().MaxSeqLen,
		"layers":       s.m.Cfg.Layers,
		"adapter":      adapterJS(s.ctx.Adapter),
		"weightsBytes": float64(w),
		"kvBytes":      float64(k),
		"chatTemplate": tmplKind,
	}, nil
}

func (s *session) generate(req, onText, onReasoning js.Value) (any, error) {
	if s.gen == nil {
		return nil, errors.New("wgllm.generate: no model loaded (call wgllm.load first)")
	}
	if req.Type() != js.TypeObject {
		return nil, errors.New("wgllm.generate: want a request object {prompt, maxTokens, ...}")
	}
	r := engine.Request{Sampling: sample.DefaultParams()}
	var stops []string
	var parser *chat.OutputParser // chats: the reply split into reasoning and answer
	if msgs := opt(req, "messages", js.Undefined()); !msgs.IsUndefined() {
		var err error
		if r.Prompt, r.AddBOS, stops, err = s.renderChat(msgs); err != nil {
			return nil, err
		}
		if s.tmplErr == nil && s.tmpl != nil {
			f := s.tmpl.Format()
			parser = chat.NewOutputParser(f, false, f.OpensThinking(r.Prompt))
		}
	} else {
		prompt := opt(req, "prompt", js.ValueOf(""))
		if prompt.Type() != js.TypeString {
			return nil, errors.New("wgllm.generate: prompt must be a string")
		}
		r.Prompt = prompt.String()
	}
	var err error
	if r.MaxTokens, err = optInt(req, "maxTokens", 128); err != nil {
		return nil, err
	}
	p := &r.Sampling
	floats := []struct {
		key string
		dst *float32
	}{{"temperature", &p.Temperature}, {"topP", &p.TopP}, {"minP", &p.MinP}, {"repeatPenalty", &p.RepeatPenalty}}
	for _, f := range floats {
		v, err := optFloat(req, f.key, float64(*f.dst))
		if err != nil {
			return nil, err
		}
		*f.dst = float32(v)
	}
	if p.TopK, err = optInt(req, "topK", p.TopK); err != nil {
		return nil, err
	}
	seed, err := optFloat(req, "seed", 0)
	if err != nil || seed < 0 || seed != float64(uint64(seed)) {
		return nil, errors.New("wgllm.generate: seed must be a whole number ≥ 0")
	}
	p.Seed = uint64(seed)
	if err := p.Validate(); err != nil {
		return nil, err
	}
	s.cancel.Store(false)
	call := func(f js.Value, text string) {
		if text != "" && f.Type() == js.TypeFunction {
			f.Invoke(text)
		}
	}
	parts := func(ps []chat.Part) {
		for _, p := range ps {
			call(onReasoning, p.Reasoning)
			call(onText, p.Content) // no tools are offered: calls stay text
		}
	}
	send := func(text string) {
		if parser == nil {
			call(onText, text)
			return
		}
		parts(parser.Feed(text))
	}
	cut := stopCutter{stops: stops}
	st, err := s.gen.Generate(r, func(text string) error {
		if s.cancel.Load() {
			return errCancelled
		}
		out, stopped := cut.push(text)
		send(out)
		if stopped {
			return errStopString
		}
		return nil
	})
	switch {
	case errors.Is(err, errCancelled):
		st.FinishReason, err = "cancelled", nil
	case errors.Is(err, errStopString):
		st.FinishReason, err = "stop", nil
	case err == nil && st.FinishReason != "cancelled":
		send(cut.flush())
	}
	if parser != nil {
		parts(parser.Finish())
	}
	if err != nil {
		return nil, err
	}
	return map[string]any{
		"promptTokens":     st.PromptTokens,
		"completionTokens": st.CompletionTokens,
		"finishReason":     st.FinishReason,
		"prefillMs":        float64(st.Prefill.Microseconds()) / 1000,
		"decodeMs":         float64(st.Decode.Microseconds()) / 1000,
	}, nil
}

func (s *session) close() {
	if s.m != nil {
		s.m.Close()
		s.m = nil
	}
	s.gen = nil
	if s.ctx != nil {
		s.ctx.Close()
		s.ctx = nil
	}
	if s.file != nil {
		s.file.Close()
		s.file = nil
	}
}

// renderChat renders a messages array with the model's chat template, as
// `wgllm serve` does: the generation prompt is added, a BOS the template
// printed itself is not doubled, and ChatML (the fallback) also stops at
// its turn markers (engine.Options.ChatStop in cmd/wgllm).
func (s *session) renderChat(v js.Value) (prompt string, addBOS *bool, stops []string, err error) {
	if !v.InstanceOf(js.Global().Get("Array")) {
		return "", nil, nil, errors.New("wgllm.generate: messages must be an array of {role, content}")
	}
	if s.tmplErr != nil {
		return "", nil, nil, fmt.Errorf("wgllm.generate: the model's chat template: %w", s.tmplErr)
	}
	n := v.Length()
	if n == 0 {
		return "", nil, nil, errors.New("wgllm.generate: messages is empty")
	}
	msgs := make([]chat.Message, n)
	for i := range n {
		m := v.Index(i)
		role, content := opt(m, "role", js.Undefined()), opt(m, "content", js.Undefined())
		if role.Type() != js.TypeString || content.Type() != js.TypeString {
			return "", nil, nil, fmt.Errorf("wgllm.generate: messages[%d] must be {role: string, content: string}", i)
		}
		msgs[i] = chat.Message{Role: role.String(), Content: content.String()}
	}
	if prompt, err = s.tmpl.Render(msgs, true); err != nil {
		return "", nil, nil, err
	}
	// engine.Engine drops the second of two leading BOS tokens; the
	// Generator adds none when the rendered text starts with one.
	tok := s.gen.Tok
	add := tok.AddBOS()
	if ids := tok.Encode(prompt, false); add && len(ids) > 0 && ids[0] == tok.BOS() {
		add = false
	}
	return prompt, &add, s.tmpl.StopStrings(), nil
}

// stopCutter passes text on until a stop string, holding back the end
// that could be the start of one (as engine.Engine does for stop strings).
type stopCutter struct {
	stops []string
	held  string
}

// push takes the next piece; it returns the text that is surely output
// and whether a stop string was reached (the text before it is returned).
func (c *stopCutter) push(text string) (string, bool) {
	if len(c.stops) == 0 {
		return text, false
	}
	all := c.held + text
	cut := -1
	for _, s := range c.stops {
		if i := strings.Index(all, s); i >= 0 && (cut < 0 || i < cut) {
			cut = i
		}
	}
	if cut >= 0 {
		c.held = ""
		return all[:cut], true
	}
	keep := 0
	for _, s := range c.stops {
		for n := min(len(s)-1, len(all)); n > keep; n-- {
			if strings.HasSuffix(all, s[:n]) {
				keep = n
				break
			}
		}
	}
	c.held = all[len(all)-keep:]
	return all[:len(all)-keep], false
}

// flush returns the text held back at the end of the generation.
func (c *stopCutter) flush() string {
	out := c.held
	c.held = ""
	return out
}
