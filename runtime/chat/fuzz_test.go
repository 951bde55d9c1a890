package chat

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

// FuzzRender renders arbitrary message contents (and one arbitrary role)
// through every template. Contents are data: no panic inside gonja, no
// error except a template's own raise_exception, and for the ChatML
// fallback and Phi-3.5 the exact output, built here independently.
func FuzzRender(f *testing.F) {
	names := []string{"Qwen-Qwen2.5-7B-Instruct.jinja", "google-gemma-2-2b-it.jinja",
		"meta-llama-Llama-3.2-3B-Instruct.jinja", "microsoft-Phi-3.5-mini-instruct.jinja", "chatml.jinja", "openai-gpt-oss-120b.jinja"}
	templates := map[string]*Template{}
	for _, name := range names {
		src, err := os.ReadFile(templatePath(name))
		if err != nil {
			f.Fatal(err)
		}
		tmpl, err := New(string(src), Options{BOSToken: "<bos>", EOSToken: "<eos>",
			Now: func() time.Time { return time.Date(2024, 9, 5, 0, 0, 0, 0, time.UTC) }})
		if err != nil {
			f.Fatal(err)
		}
		templates[name] = tmpl
	}
	f.Add("You are helpful.", "Hi", "Hello!", "user", false)
	f.Fuzz(func(t *testing.T, system, user, assistant, lastRole string, gen bool) {
		msgs := []Message{{Role: "system", Content: system}, {Role: "user", Content: user}, {Role: "assistant", Content: assistant}, {Role: lastRole, Content: user + assistant}}
		for _, name := range names {
			out, err := templates[name].Render(msgs, gen)
			var raised *RaisedError
			switch {
			case errors.Is(err, errPanic):
				t.Fatalf("%s: %v", name, err)
			case errors.As(err, &raised):
				continue // Gemma refuses system messages
			case errors.Is(err, ErrLimit) && len(system)+len(user)+len(assistant) > DefaultLimits.MaxValueBytes/4:
				continue
			case err != nil:
				t.Fatalf("%s: %v", name, err)
			}
			var want string
			switch name {
			case "chatml.jinja":
				want = chatMLOracle(msgs, gen)
			case "microsoft-Phi-3.5-mini-instruct.jinja":
				want = phiOracle(msgs, gen)
			default:
				for _, m := range msgs[1:3] {
					if c := pyStrip(m.Content, nil, true, true); !strings.Contains(out, c) {
						t.Fatalf("%s: output lacks content %q", name, c)
					}
				}
				continue
			}
			if out != want {
				t.Fatalf("%s: %s", name, firstDifference(out, want))
			}
		}
	})
}

func chatMLOracle(msgs []Message, gen bool) string {
	var b strings.Builder
	for _, m := range msgs {
		b.WriteString("<|im_start|>" + m.Role + "\n" + m.Content + "<|im_end|>\n")
	}
	if gen {
		b.WriteString("<|im_start|>assistant\n")
	}
	return b.String()
}

// phiOracle is Phi-3.5's template: known roles only, empty system
// messages dropped, EOS at the end unless a turn is requested.
func phiOracle(msgs []Message, gen bool) string {
	var b strings.Builder
	for _, m := range msgs {
		switch {
		case m.Role == "system" && m.Content != "", m.Role == "user", m.Role == "assistant":
			b.WriteString("<|" + m.Role + "|>\n" + m.Content + "<|end|>\n")
		}
	}
	if gen {
		b.WriteString("<|assistant|>\n")
	} else {
		b.WriteString("<eos>")
	}
	return b.String()
}

// FuzzTemplate parses and renders arbitrary template text. Errors are fine,
// including gonja's own panics on malformed input, which New and Render
// turn into errors (testdata/fuzz/FuzzTemplate holds one it found:
// "{%if 0 is %}"); a crash, a slow parse or render, or an unbounded error
// message is not. Seeds are the real templates and the probes.
func FuzzTemplate(f *testing.F) {
	for _, name := range []string{"Qwen-Qwen2.5-7B-Instruct.jinja", "google-gemma-2-2b-it.jinja",
		"meta-llama-Llama-3.2-3B-Instruct.jinja", "microsoft-Phi-3.5-mini-instruct.jinja", "features.jinja",
		"openai-gpt-oss-120b.jinja"} {
		src, err := os.ReadFile(templatePath(name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(src))
	}
	probes, err := os.ReadFile("testdata/probes.txt")
	if err != nil {
		f.Fatal(err)
	}
	for _, p := range strings.Split(strings.TrimSpace(string(probes)), "\n") {
		f.Add(p)
	}
	// Conditionals inside brackets, which inlineConditionals rewrites.
	for _, p := range []string{`{{ (a if b else c) + (d if e else (f if g else h)) }}`, `{{ f(x if y else z, k=(1 if 2 else 3))[a if b else c:] }}`,
		`{{ ("if" if 'else' else "(") }}`, `{{ (if else) }}`, `{{ (a if) }}`, `{{ [x if y else] }}`, `{% for a in (b if c else d) if e %}{% endfor %}`} {
		f.Add(p)
	}
	limits := Limits{MaxSteps: 10_000, MaxDepth: 50, MaxOutputBytes: 1 << 20, MaxValueBytes: 1 << 20, Timeout: time.Second}
	f.Fuzz(func(t *testing.T, src string) {
		start := time.Now()
		tmpl, err := New(src, Options{BOSToken: "<s>", EOSToken: "</s>", Limits: limits})
		if err == nil {
			_, err = tmpl.Render(someMessages, true)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("took %s", d)
		}
		if err != nil && len(err.Error()) > 2*maxErrorBytes {
			t.Fatalf("error message of %d bytes", len(err.Error()))
		}
	})
}
