package chat

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wgllm/wgllm/internal/sharedfiles"
)

// fixtures is testdata/fixtures/fixtures.json, written by
// testdata/gen_fixtures.py with Python's Jinja2.
type fixtures struct {
	Generator     string `json:"generator"`
	Date          string `json:"date"`
	Tokens        map[string]struct{ BOS, EOS string }
	Conversations map[string][]Message
	Cases         []fixtureCase
	// ToolConversations use tools, tool_calls, tool_call_id and name.
	ToolConversations map[string]struct {
		Tools    []json.RawMessage
		Messages []Message
	} `json:"tool_conversations"`
	ToolCases     []fixtureCase `json:"tool_cases"`
	ProbeMessages []Message     `json:"probe_messages"`
	Probes        []struct {
		Template string
		Output   *string
		Error    string
	}
}

type fixtureCase struct {
	Template            string
	Conversation        string
	AddGenerationPrompt bool `json:"add_generation_prompt"`
	Output              *string
	Error               string
}

func (c fixtureCase) name() string {
	name := c.Template + "/" + c.Conversation
	if c.AddGenerationPrompt {
		name += "/gen"
	}
	return name
}

// check compares a render with Jinja2's: the same output, or an error
// where Jinja2 failed (the same message where it was raise_exception).
func (c fixtureCase) check(t *testing.T, got string, err error) {
	t.Helper()
	name := c.name()
	switch {
	case c.Output == nil && err == nil:
		t.Errorf("%s: rendered %q, Jinja2 failed with %s", name, got, c.Error)
	case c.Output == nil:
		// Where Jinja2's error comes from raise_exception, ours must
		// carry the same message as a *RaisedError.
		if msg, ok := strings.CutPrefix(c.Error, "TemplateError: "); ok {
			var re *RaisedError
			if !errors.As(err, &re) || re.Message != msg {
				t.Errorf("%s: error %v, want a RaisedError %q", name, err, msg)
			}
		}
	case err != nil:
		t.Errorf("%s: %v", name, err)
	case got != *c.Output:
		t.Errorf("%s: %s", name, firstDifference(got, *c.Output))
	}
}

// fixtureTemplates parses the fixtures' templates on demand.
type fixtureTemplates struct {
	t      *testing.T
	f      *fixtures
	clock  func() time.Time
	parsed map[string]*Template
}

func (ft *fixtureTemplates) get(name string) *Template {
	ft.t.Helper()
	if tmpl, ok := ft.parsed[name]; ok {
		return tmpl
	}
	src, err := os.ReadFile(templatePath(name))
	if err != nil {
		ft.t.Fatal(err)
	}
	tok := ft.f.Tokens[name]
	tmpl, err := New(string(src), Options{BOSToken: tok.BOS, EOSToken: tok.EOS, Now: ft.clock})
	if err != nil {
		ft.t.Fatalf("%s: %v", name, err)
	}
	ft.parsed[name] = tmpl
	return tmpl
}

func newFixtureTemplates(t *testing.T, f *fixtures) *fixtureTemplates {
	return &fixtureTemplates{t: t, f: f, clock: fixedClock(t, f.Date), parsed: map[string]*Template{}}
}

func loadFixtures(t *testing.T) fixtures {
	t.Helper()
	b, err := os.ReadFile("testdata/fixtures/fixtures.json")
	if err != nil {
		t.Fatal(err)
	}
	var f fixtures
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	if len(f.Cases) == 0 || len(f.Conversations) == 0 {
		t.Fatal("fixtures hold no cases")
	}
	return f
}

func templatePath(name string) string {
	if name == "chatml.jinja" {
		return "chatml.jinja"
	}
	return filepath.Join("testdata", "templates", name)
}

func fixedClock(t *testing.T, date string) func() time.Time {
	t.Helper()
	d, err := time.Parse("2006-01-02", date)
	if err != nil {
		t.Fatal(err)
	}
	return func() time.Time { return d }
}

// TestFixtures renders every template on every conversation and compares
// byte for byte with Jinja2's output, or expects an error where Jinja2
// raised one.
func TestFixtures(t *testing.T) {
	f := loadFixtures(t)
	templates := newFixtureTemplates(t, &f)
	perTemplate := map[string]int{}
	for _, c := range f.Cases {
		msgs, ok := f.Conversations[c.Conversation]
		if !ok {
			t.Fatalf("unknown conversation %q", c.Conversation)
		}
		got, err := templates.get(c.Template).Render(msgs, c.AddGenerationPrompt)
		c.check(t, got, err)
		perTemplate[c.Template]++
	}
	for _, name := range []string{"Qwen-Qwen2.5-7B-Instruct.jinja", "google-gemma-2-2b-it.jinja",
		"meta-llama-Llama-3.2-3B-Instruct.jinja", "microsoft-Phi-3.5-mini-instruct.jinja", "features.jinja", "chatml.jinja"} {
		if perTemplate[name] < 2*len(f.Conversations) {
			t.Errorf("%s: only %d cases", name, perTemplate[name])
		}
	}
}

// The templates in testdata are copies of the shared ones (so this package's
// tests need no shared directory); fail when they drift apart.
func TestTemplatesMatchShared(t *testing.T) {
	dir := filepath.Join(sharedfiles.SharedDir(t), "testdata", "templates")
	shared, err := filepath.Glob(filepath.Join(dir, "*.jinja"))
	if err != nil || len(shared) == 0 {
		t.Skipf("no shared templates in %s", dir)
	}
	for _, p := range shared {
		want, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(templatePath(filepath.Base(p)))
		if err != nil {
			t.Errorf("%s is not copied into testdata/templates: %v", filepath.Base(p), err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("testdata/templates/%s differs from %s", filepath.Base(p), p)
		}
	}
}

// firstDifference describes where got departs from want, with context.
func firstDifference(got, want string) string {
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	from := max(0, i-40)
	return fmt.Sprintf("differs at byte %d (got %d bytes, want %d):\n got …%q\nwant …%q",
		i, len(got), len(want), got[from:min(len(got), i+40)], want[from:min(len(want), i+40)])
}

// knownDivergences are the probes where gonja still renders differently
// from Jinja2, none of which the published chat templates we know rely on.
// Each must still differ, so a fix (a gonja upgrade) shows here.
var knownDivergences = map[string]string{
	"{{ true }} {{ false }} {{ none }} {{ 1 == 1 }}": "None prints as an empty string",
	"{{ 1 ~ 'a' ~ none }}":                           "None prints as an empty string",
	"{{ foo | default('dflt') }} {{ '' | default('dflt', true) }} {{ none | default('d') }}": "default replaces None as well as undefined",
	"{{ foo }}|{{ foo.bar is defined }}":                                                     "an attribute of an undefined value is undefined, not an error",
	"{{ {'b':1,'a':2} | dictsort }}":                                                         "tuples print as lists",
	"{{ 'abc'.partition('b') }}":                                                             "tuples print as lists",
	"{% for m in messages %}{% if m.tool_calls is defined %}y{% endif %}{% if m.tool_calls is none %}n{% endif %}{% endfor %}ok":                                            "an undefined value is none",
	"{{ ('a</think>b\\n\\nc'.split('</think>')[-1]).lstrip('\\n') }}":                                                                                                       "no method calls on a parenthesised expression",
	"{{ 'hello world'.capitalize() }} {{ 'HELLO'.capitalize() }} {{ 'ß'.upper() }} {{ 'İ'.lower() | length }} {{ 'hello world'.title() }} {{ \"they're bill's\".title() }}": "Go's case mapping lacks Unicode's special casing (ß to SS)",
	"{{ 'a\\nb\\r\\nc'.splitlines() }} {{ ''.splitlines() }} {{ 'a\\n'.splitlines(true) }}":                                                                                 "lists print their strings without escapes",
	"{{ {'a': 1, 'b': 2}|items|list }} {{ {'b': 1, 'a': 2}|dictsort|list }}":                                                                                                "tuples print as lists",
	"{{ 1 < 2 < 3 }} {{ 1 == 1.0 }} {{ 'a' == 'a' }} {{ [1, 2] == [1, 2] }} {{ none == none }} {{ 0 == false }} {{ '' == none }}":                                           "0 == false is false",
	"{{ not '' }} {{ not [] }} {{ not 'x' }} {{ not 0 }} {{ '' or 'x' }} {{ 'a' and 'b' }} {{ 0 or none or 'z' }}":                                                          "not 0 prints 1",
	"{{ -3 }} {{ +3 }} {{ -(2) }} {{ 1 - -1 }} {{ 10 / 4 }} {{ 10 / 5 }} {{ 1 + 2.0 }} {{ 1 + true }}":                                                                      "true is not 1 in +",
	"{{ 'ab'[0] }} {{ 'héllo'[1] }} {{ 'héllo'[1:3] }} {{ 'héllo'[-1] }} {{ 'abc'[::-1] }} {{ 'abc'[5:] }}|":                                                                "string indexing counts bytes (slicing counts code points)",
	"{% for x in [[1, 2], [3]] %}{% for y in x %}{{ loop.depth }}{{ y }}{% endfor %}{% endfor %}":                                                                           "loop.depth counts nested loops, not only recursion",
}

// TestProbes renders one-construct templates and compares with Jinja2.
func TestProbes(t *testing.T) {
	f := loadFixtures(t)
	if len(f.Probes) < 100 {
		t.Fatalf("only %d probes", len(f.Probes))
	}
	seen := map[string]bool{}
	for _, p := range f.Probes {
		seen[p.Template] = true
		got, err := func() (string, error) {
			tmpl, err := New(p.Template, Options{BOSToken: "<s>", EOSToken: "</s>", Now: fixedClock(t, f.Date)})
			if err != nil {
				return "", err
			}
			return tmpl.Render(f.ProbeMessages, true)
		}()
		same := (p.Output == nil) == (err != nil) && (p.Output == nil || got == *p.Output)
		if reason, known := knownDivergences[p.Template]; known {
			if same {
				t.Errorf("known divergence (%s) now matches Jinja2; remove it from the list: %s", reason, p.Template)
			}
			continue
		}
		switch {
		case same:
		case p.Output == nil:
			t.Errorf("%s: rendered %q, Jinja2 failed with %s", p.Template, got, p.Error)
		case err != nil:
			t.Errorf("%s: %v (Jinja2: %q)", p.Template, err, *p.Output)
		default:
			t.Errorf("%s: %s", p.Template, firstDifference(got, *p.Output))
		}
	}
	for tmpl := range knownDivergences {
		if !seen[tmpl] {
			t.Errorf("known divergence is not a probe: %s", tmpl)
		}
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
