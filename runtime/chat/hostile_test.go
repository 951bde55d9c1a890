package chat

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

var someMessages = []Message{
	{Role: "system", Content: "Be brief."},
	{Role: "user", Content: "Hello"},
	{Role: "assistant", Content: "Hi!"},
	{Role: "user", Content: "Bye"},
}

// smallLimits keeps the hostile cases fast on a slow CI machine; the
// default limits are exercised separately.
var smallLimits = Limits{MaxSteps: 20_000, MaxDepth: 50, MaxOutputBytes: 1 << 20, MaxValueBytes: 1 << 20, Timeout: 10 * time.Second}

// renderHostile renders src and returns the error and the elapsed time.
func renderHostile(t *testing.T, src string, limits Limits) (string, error, time.Duration) {
	t.Helper()
	start := time.Now()
	tmpl, err := New(src, Options{Limits: limits})
	if err != nil {
		return "", err, time.Since(start)
	}
	out, err := tmpl.Render(someMessages, true)
	return out, err, time.Since(start)
}

// TestHostileTemplatesHitLimits: templates built to loop, recurse or
// allocate without end stop with a *LimitError naming the limit.
func TestHostileTemplatesHitLimits(t *testing.T) {
	cases := []struct{ name, src, what string }{
		{"nested loops", `{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}`, "loop iterations"},
		{"loop over messages forever", `{% for i in range(20000) %}{% for m in messages %}{{ '' }}{% endfor %}{% endfor %}`, "loop iterations"},
		{"macro recursion", `{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}`, "nesting depth"},
		{"mutual macro recursion", `{% macro a() %}{{ b() }}{% endmacro %}{% macro b() %}{{ a() }}{% endmacro %}{{ a() }}`, "nesting depth"},
		{"recursive loop", `{% for x in [1] recursive %}{{ loop([1]) }}{% endfor %}`, "nesting depth"},
		{"exponential macro calls", `{% macro a(n) %}{% if n > 0 %}{{ a(n - 1) }}{{ a(n - 1) }}{% endif %}{% endmacro %}{{ a(40) }}`, "loop iterations"},
		{"string doubling in a namespace", `{% set ns = namespace(s='x') %}{% for i in range(100) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}`, "value size"},
		{"list doubling", `{% set ns = namespace(l=[1]) %}{% for i in range(100) %}{% set ns.l = ns.l + ns.l %}{% endfor %}`, "value size"},
		{"block set doubling", `{% set ns = namespace(s='x') %}{% for i in range(100) %}{% set s %}{{ ns.s }}{{ ns.s }}{% endset %}{% set ns.s = s %}{% endfor %}`, "value size"},
		{"macro argument doubling", `{% macro d(s, n) %}{% if n > 0 %}{{ d(s ~ s, n - 1) }}{% endif %}{% endmacro %}{{ d('x', 45) }}`, "macro argument size"},
		{"output flood", `{% for i in range(10000) %}{{ 'x' * 1000 }}{% endfor %}`, "output size"},
		{"string repetition", `{{ 'x' * 100000000000 }}`, "value size"},
		{"repetition of a product", `{{ 'ab' * (100000 * 100000) }}`, "value size"},
		{"repetition on the left", `{{ 100000000000 * 'x' }}`, "value size"},
		{"huge range", `{{ range(1000000000000) | length }}`, "range length"},
		{"center method", `{{ 'x'.center(1000000000) }}`, "width argument"},
		{"center filter", `{{ 'x' | center(1000000000) }}`, "width or count"},
		{"slice filter", `{{ [1] | slice(1000000000) | list }}`, "width or count"},
		{"indent of many lines", `{{ ('a\n' * 100000) | indent(60000) }}`, "value size"},
		{"join with a big separator", `{% set s = 'x' * 500000 %}{{ range(1000) | map('string') | join(s) }}`, "value size"},
		{"join method with a big separator", `{% set s = 'x' * 500000 %}{{ s.join(range(1000) | map('string')) }}`, "value size"},
		{"replace growth", `{% set s = 'x' * 100000 %}{{ s.replace('x', 'y' * 1000) }}`, "value size"},
		{"replace filter growth", `{{ ('x' * 100000) | replace('x', 'y' * 1000) }}`, "value size"},
		{"format width", `{{ '%999999999d' | format(1) }}`, "value size"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err, elapsed := renderHostile(t, c.src, smallLimits)
			var le *LimitError
			if !errors.As(err, &le) || !errors.Is(err, ErrLimit) {
				t.Fatalf("error %.300v, want a *LimitError (%s)", err, c.what)
			}
			if !strings.Contains(le.What, c.what) {
				t.Errorf("limit %q, want %q", le.What, c.what)
			}
			if elapsed > 5*time.Second {
				t.Errorf("took %s", elapsed)
			}
		})
	}
}

// TestDefaultLimitsStopRunaways: with the default limits a runaway stops
// with a LimitError within the default time budget.
func TestDefaultLimitsStopRunaways(t *testing.T) {
	for _, src := range []string{
		`{% for i in range(1000000) %}{% for j in range(1000000) %}{% endfor %}{% endfor %}`,
		`{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}`,
		`{% set ns = namespace(s='x') %}{% for i in range(100) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}`,
	} {
		_, err, elapsed := renderHostile(t, src, Limits{})
		if !errors.Is(err, ErrLimit) {
			t.Errorf("%s: error %v, want ErrLimit", src, err)
		}
		if elapsed > DefaultLimits.Timeout+2*time.Second {
			t.Errorf("%s: took %s", src, elapsed)
		}
	}
}

func TestTimeout(t *testing.T) {
	long := make([]Message, 200)
	for i := range long {
		long[i] = Message{Role: "user", Content: strings.Repeat("word ", 200)}
	}
	tmpl, err := New(`{% for i in range(100000) %}{% set x = messages | tojson %}{% endfor %}`,
		Options{Limits: Limits{Timeout: 50 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = tmpl.Render(long, false)
	var le *LimitError
	if !errors.As(err, &le) || le.What != "render time" {
		t.Fatalf("error %v, want the render time limit", err)
	}
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("took %s for a 50ms limit", elapsed)
	}
}

// TestTemplateErrors: malformed templates, refused features and runtime
// errors are Go errors, never panics.
func TestTemplateErrors(t *testing.T) {
	parseErrors := map[string]string{
		"unclosed if":          `{% if true %}x`,
		"stray endfor":         `{% endfor %}`,
		"unclosed expression":  `{{ messages`,
		"unclosed string":      `{{ 'abc }}`,
		"empty if":             `{% if %}x{% endif %}`,
		"bad for":              `{% for in messages %}{% endfor %}`,
		"unknown tag":          `{% frobnicate %}`,
		"include":              `{% include 'other.jinja' %}`,
		"import":               `{% import 'macros.jinja' as m %}`,
		"from import":          `{% from 'macros.jinja' import m %}`,
		"extends":              `{% extends 'base.jinja' %}`,
		"do":                   `{% do messages.append(1) %}`,
		"deep brackets":        "{{ " + strings.Repeat("(", 200) + "1" + strings.Repeat(")", 200) + " }}",
		"huge source":          strings.Repeat("x", maxSourceBytes+1),
		"unclosed comment":     `{# comment`,
		"unclosed raw":         `{% raw %}x`,
		"macro without parens": `{% macro m %}{% endmacro %}`,
	}
	for name, src := range parseErrors {
		t.Run("parse/"+name, func(t *testing.T) {
			if _, err := New(src, Options{}); err == nil {
				t.Errorf("New(%.60q) succeeded", src)
			}
		})
	}
	renderErrors := map[string]string{
		"raise":               `{{ raise_exception('nope') }}`,
		"undefined attribute": `{{ messages[0].content.nothing() }}`,
		"modulo by zero":      `{{ 1 % 0 }}`,
		"floor div by zero":   `{{ 1 // 0 }}`,
		"int overflow":        `{{ 9223372036854775807 * 2 }}`,
		"pow overflow":        `{{ 2 ** 64 }}`,
		"list mutation":       `{{ messages.append(1) }}`,
		"dict mutation":       `{{ messages[0].update({'role': 'x'}) }}`,
		"str format":          `{{ '{}'.format(1) }}`,
		"string percent":      `{{ '%s' % 'x' }}`,
		"tojson ensure_ascii": `{{ 'é' | tojson(ensure_ascii=true) }}`,
		"tojson of a macro":   `{% macro m() %}{% endmacro %}{{ m | tojson }}`,
		"self-containing":     `{% set ns = namespace() %}{% set ns.me = ns %}{{ ns }}`,
		"strftime unknown":    `{{ strftime_now('%Q') }}`,
		"split empty sep":     `{{ 'a'.split('') }}`,
		"range step 0":        `{{ range(1, 5, 0) | list }}`,
		"range of a string":   `{{ range('x') | list }}`,
		"negative limit args": `{{ 'ab' | center(-1000000) }}`,
	}
	for name, src := range renderErrors {
		t.Run("render/"+name, func(t *testing.T) {
			tmpl, err := New(src, Options{})
			if err != nil {
				return // refusing it at parse time is fine too
			}
			if out, err := tmpl.Render(someMessages, true); err == nil {
				t.Errorf("%s rendered %q", src, out)
			}
		})
	}
}

// TestPythonSemantics covers the operators rewritten to Python semantics.
func TestPythonSemantics(t *testing.T) {
	cases := map[string]string{
		`{{ 'ab' * 3 }}|{{ 3 * 'ab' }}|{{ 'ab' * 0 }}|{{ 'ab' * -2 }}|{{ 'ab' * true }}`:                       "ababab|ababab|||ab",
		`{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 // -2 }} {{ 7.5 // 2 }} {{ -7.5 // 2 }}`:                              "3 -4 -4 3.0 -4.0",
		`{{ 7 % 3 }} {{ -7 % 3 }} {{ 7 % -3 }} {{ 7.5 % 2 }} {{ -7.5 % 2 }}`:                                   "1 2 -2 1.5 0.5",
		`{{ 2 ** 10 }} {{ 2 ** 0 }} {{ (-1) ** 3 }} {{ (-1) ** 4 }} {{ 0 ** 0 }} {{ 2 ** -1 }} {{ 2.0 ** 2 }}`: "1024 1 -1 1 1 0.5 4.0",
		`{{ 3 * 4 }} {{ 2.5 * 2 }} {{ 10 - 3 * 2 }} {{ (10 - 3) * 2 }}`:                                        "12 5.0 4 14",
	}
	for src, want := range cases {
		out, err, _ := renderHostile(t, src, Limits{})
		if err != nil || out != want {
			t.Errorf("%s = %q, %v; want %q", src, out, err, want)
		}
	}
}

func TestRaisedError(t *testing.T) {
	_, err, _ := renderHostile(t, `{% if messages[0].role == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}`, Limits{})
	var re *RaisedError
	if !errors.As(err, &re) || re.Message != "System role not supported" {
		t.Fatalf("error %v, want RaisedError", err)
	}
	if errors.Is(err, ErrLimit) {
		t.Error("a raised error is not a limit error")
	}
}

func TestLimitsValidation(t *testing.T) {
	for _, l := range []Limits{{MaxSteps: -1}, {MaxDepth: -1}, {MaxDepth: 5000}, {MaxOutputBytes: -1}, {MaxValueBytes: -1}, {Timeout: -time.Second}} {
		if _, err := New("x", Options{Limits: l}); err == nil {
			t.Errorf("New accepted limits %+v", l)
		}
	}
}

// TestConcurrentRender: a Template serves concurrent renders (run with
// -race) with identical results.
func TestConcurrentRender(t *testing.T) {
	f := loadFixtures(t)
	src := mustRead(t, templatePath("features.jinja"))
	tmpl, err := New(src, Options{BOSToken: "<B>", EOSToken: "<E>", Now: fixedClock(t, f.Date)})
	if err != nil {
		t.Fatal(err)
	}
	want, err := tmpl.Render(f.Conversations["system_multi_turn"], true)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan string, 64)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				got, err := tmpl.Render(f.Conversations["system_multi_turn"], true)
				if err != nil || got != want {
					errs <- firstDifference(got, want)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// TestPathologicalSources: large repetitive sources, closed or not, are
// parsed or refused promptly and never crash the parser.
func TestPathologicalSources(t *testing.T) {
	units := []string{"{{", "{%", "{#", "(", "[", "{", "'", "\"", "{% if 1 %}", "{% endif %}", "{{ 1 }}", "x ",
		"{%- raw %}", "{{ a.b.c", "{% for x in y %}", "{{ x|trim", "not ", "- ", "{% set x = ", "{% set x %}",
		"{% macro m() %}", "{{ m() }}", "\n", "{{ '", "}}", "%}", "{{ [1, 2][", "{{ 1 +", "{%if 1%}{%endif%}"}
	for _, unit := range units {
		src := strings.Repeat(unit, maxSourceBytes/len(unit))
		start := time.Now()
		tmpl, err := New(src, Options{Limits: smallLimits})
		if err == nil {
			_, err = tmpl.Render(someMessages, true)
		}
		if errors.Is(err, errPanic) {
			t.Errorf("%q repeated: %v", unit, err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("%q repeated to %d bytes took %s", unit, len(src), d)
		}
		if err != nil && len(err.Error()) > 2*maxErrorBytes {
			t.Errorf("%q repeated: error message of %d bytes", unit, len(err.Error()))
		}
	}
}

// TestMaxDepthIsStackSafe: recursion to the largest MaxDepth New accepts
// ends in a LimitError, not a fatal stack overflow.
func TestMaxDepthIsStackSafe(t *testing.T) {
	for _, src := range []string{
		`{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}`,
		`{% for x in [1] recursive %}{{ loop([1]) }}{% endfor %}`,
		`{% macro f(n) %}{% for x in [1] %}{% if true %}{{ f(n) }}{% endif %}{% endfor %}{% endmacro %}{{ f(0) }}`,
	} {
		_, err, _ := renderHostile(t, src, Limits{MaxDepth: 1000})
		var le *LimitError
		if !errors.As(err, &le) || le.Limit != "1000" {
			t.Errorf("%s: error %.200v, want the depth limit 1000", src, err)
		}
	}
}
