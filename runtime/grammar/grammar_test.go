package grammar

import (
	"bytes"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// byteVocab is every single byte as a token, some multi-byte tokens, a
// control token with no text and an end-of-generation token (the last).
func byteVocab(t testing.TB) (*Vocab, int32) {
	t.Helper()
	var pieces []string
	for b := 0; b < 256; b++ {
		pieces = append(pieces, string([]byte{byte(b)}))
	}
	pieces = append(pieces, `{"`, `":`, `", "`, `"}`, "true", "null", "12", "-0", "é", "\xE2\x82", "\xAC", "  ", "\n ", `\u00`, "ab", "abc", "abc", "")
	pieces = append(pieces, "") // end of generation
	eos := int32(len(pieces) - 1)
	v, err := NewVocab(pieces, []int32{eos})
	if err != nil {
		t.Fatal(err)
	}
	return v, eos
}

// feed runs text through a matcher byte token by byte token.
func feed(m *Matcher, text string) error {
	for i := 0; i < len(text); i++ {
		if err := m.Accept(int32(text[i])); err != nil {
			return err
		}
	}
	return nil
}

type schemaCase struct {
	name    string
	schema  string
	valid   []string
	invalid []string // not a complete match (rejected, or incomplete)
}

var schemaCases = []schemaCase{
	{"object", `{"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"}},"required":["name","age"],"additionalProperties":false}`,
		[]string{`{"name":"Al","age":3}`, "{ \"name\" : \"\\u00e9\\n\", \"age\":-12}", `{"name":"é€😀","age":0}`},
		[]string{`{"age":3,"name":"x"}`, `{"name":"x"}`, `{"name":"x","age":03}`, `{"name":"x","age":1.5}`, `{"name":"a` + "\x01" + `","age":1}`, `{"name":"x","age":1,"z":1}`, "{\"name\":\"\xff\",\"age\":1}"}},
	{"optional", `{"type":"object","properties":{"a":{"type":"boolean"},"b":{"type":"null"},"c":{"type":"number"}}}`,
		[]string{`{}`, `{"a":true}`, `{"b":null}`, `{"a":false,"c":1.5e-3}`, `{"a":true,"b":null,"c":-0.25}`, `{"c":12}`},
		[]string{`{"b":null,"a":true}`, `{,"a":true}`, `{"a":true,}`, `{"c":1.}`, `{"c":1e}`}},
	{"enum-const", `{"type":"object","properties":{"color":{"enum":["red","green",3,null]},"k":{"const":{"x":[1,"é"]}}},"required":["color","k"]}`,
		[]string{`{"color":"red","k":{"x":[1,"é"]}}`, `{"color":3,"k":{"x":[1,"é"]}}`, `{"color":null,"k":{"x":[1,"é"]}}`},
		[]string{`{"color":"blue","k":{"x":[1,"é"]}}`, `{"color":"red","k":{"x":[1]}}`}},
	{"array", `{"type":"array","items":{"type":"integer"},"minItems":2,"maxItems":3}`,
		[]string{`[1,2]`, `[1, 2, 3]`, "[\n  1,\n  2\n]"},
		[]string{`[]`, `[1]`, `[1,2,3,4]`, `[1,"a"]`}},
	{"tuple", `{"type":"array","prefixItems":[{"type":"string"},{"type":"boolean"}],"items":false}`,
		[]string{`["a",true]`, `[]`},
		[]string{`["a"]`, `["a",true,1]`, `[true,"a"]`}},
	{"anyOf-types", `{"anyOf":[{"type":"string","maxLength":2},{"type":["integer","null"]}]}`,
		[]string{`"ab"`, `""`, `7`, `null`},
		[]string{`"abc"`, `true`, `1.5`}},
	{"oneOf-objects", `{"oneOf":[{"type":"object","properties":{"kind":{"const":"a"},"n":{"type":"integer"}},"required":["kind","n"]},{"type":"object","properties":{"kind":{"const":"b"}},"required":["kind"]}]}`,
		[]string{`{"kind":"a","n":1}`, `{"kind":"b"}`},
		[]string{`{"kind":"a"}`, `{"kind":"b","n":1}`}},
	{"refs", `{"$defs":{"node":{"type":"object","properties":{"v":{"type":"integer"},"next":{"anyOf":[{"$ref":"#/$defs/node"},{"type":"null"}]}},"required":["v","next"]}},"$ref":"#/$defs/node"}`,
		[]string{`{"v":1,"next":null}`, `{"v":1,"next":{"v":2,"next":{"v":3,"next":null}}}`},
		[]string{`{"v":1,"next":{"v":2}}`, `{"v":1}`}},
	{"formats", `{"type":"object","properties":{"d":{"type":"string","format":"date"},"t":{"type":"string","format":"date-time"},"u":{"type":"string","format":"uuid"}},"required":["d","t","u"]}`,
		[]string{`{"d":"2026-12-04","t":"2026-12-04T18:30:00Z","u":"123e4567-e89b-12d3-a456-426614174000"}`},
		[]string{`{"d":"2026-02-30","t":"2026-12-04T18:30:00Z","u":"123e4567-e89b-12d3-a456-426614174000"}`, `{"d":"2026-13-04","t":"2026-12-04T18:30:00Z","u":"123e4567-e89b-12d3-a456-426614174000"}`, `{"d":"2026-12-04","t":"2026-12-04 18:30:00Z","u":"123e4567-e89b-12d3-a456-426614174000"}`}},
	{"map", `{"type":"object","additionalProperties":{"type":"integer"}}`,
		[]string{`{}`, `{"a":1,"b":2}`},
		[]string{`{"a":"x"}`}},
	{"allOf", `{"allOf":[{"type":"object","properties":{"a":{"type":"integer"}},"required":["a"]},{"properties":{"b":{"type":"string"}},"required":["b"]}]}`,
		[]string{`{"a":1,"b":"x"}`},
		[]string{`{"a":1}`, `{"b":"x"}`}},
	{"nonnegative", `{"type":"integer","minimum":0}`, []string{`0`, `17`}, []string{`-1`}},
	{"strlen", `{"type":"string","minLength":2,"maxLength":3}`, []string{`"ab"`, `"a\"c"`}, []string{`"a"`, `"abcd"`}},
	{"any", `{}`, []string{`1`, `"x"`, `[{"a":[null,true]}]`, `{"a":{}}`}, []string{`tru`, `[1,]`, `01`}},
}

func TestSchemaAcceptsAndRejects(t *testing.T) {
	v, _ := byteVocab(t)
	for _, tc := range schemaCases {
		t.Run(tc.name, func(t *testing.T) {
			g, err := FromJSONSchema([]byte(tc.schema))
			if err != nil {
				t.Fatal(err)
			}
			validator := compileValidator(t, tc.schema)
			for _, text := range tc.valid {
				assertValid(t, validator, text) // the case itself must be right
				m := NewMatcher(g, v)
				if err := feed(m, text); err != nil {
					t.Errorf("%s: rejected: %v", text, err)
				} else if !m.Complete() {
					t.Errorf("%s: accepted but not complete", text)
				}
			}
			for _, text := range tc.invalid {
				m := NewMatcher(g, v)
				if err := feed(m, text); err == nil && m.Complete() {
					t.Errorf("%s: accepted", text)
				}
			}
		})
	}
}

func compileValidator(t testing.TB, schema string) *jsonschema.Schema {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(strings.NewReader(schema))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource("schema.json", doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile("schema.json")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func assertValid(t testing.TB, s *jsonschema.Schema, text string) {
	t.Helper()
	var x any
	if err := json.Unmarshal([]byte(text), &x); err != nil {
		t.Fatalf("%q does not parse: %v", text, err)
	}
	doc, err := jsonschema.UnmarshalJSON(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Validate(doc); err != nil {
		t.Fatalf("%q does not validate: %v", text, err)
	}
}

// generate samples tokens uniformly among those the mask allows until the
// end, within a budget of maxTokens.
func generate(t *testing.T, m *Matcher, v *Vocab, rng *rand.Rand, maxTokens int) string {
	t.Helper()
	allowed := make([]bool, v.Size())
	var out bytes.Buffer
	for n := 0; n < maxTokens; n++ {
		if m.Done() {
			break
		}
		m.SetRemaining(maxTokens - n)
		m.Mask(allowed)
		var ids []int32
		for id, ok := range allowed {
			if ok {
				ids = append(ids, int32(id))
			}
		}
		if len(ids) == 0 {
			t.Fatalf("no token allowed after %q", out.String())
		}
		id := ids[rng.IntN(len(ids))]
		if err := m.Accept(id); err != nil {
			t.Fatalf("after %q: %v", out.String(), err)
		}
		if v.eog[id] {
			break
		}
		out.Write(v.pieces[id])
	}
	if !m.Complete() {
		t.Fatalf("not complete after %d tokens: %q", maxTokens, out.String())
	}
	return out.String()
}

// Random walks through each schema's grammar, under token budgets from
// tight to loose, always give text that parses and validates.
func TestRandomOutputValidates(t *testing.T) {
	v, _ := byteVocab(t)
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tc := range schemaCases {
		t.Run(tc.name, func(t *testing.T) {
			g, err := FromJSONSchema([]byte(tc.schema))
			if err != nil {
				t.Fatal(err)
			}
			validator := compileValidator(t, tc.schema)
			budget := g.MinLength() + 1
			for i := 0; i < 60; i++ {
				text := generate(t, NewMatcher(g, v), v, rng, budget+i*3)
				assertValid(t, validator, text)
			}
		})
	}
}

func TestJSONMode(t *testing.T) {
	v, _ := byteVocab(t)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 100; i++ {
		text := generate(t, NewMatcher(JSON(), v), v, rng, 4+i)
		var x map[string]any
		if err := json.Unmarshal([]byte(text), &x); err != nil {
			t.Fatalf("%q: %v", text, err)
		}
	}
	m := NewMatcher(JSON(), v)
	if err := feed(m, `[1]`); err == nil {
		t.Error("JSON mode accepted an array at the top")
	}
}

// Mask agrees with trying every token on a clone, in random states.
func TestMaskMatchesBruteForce(t *testing.T) {
	v, eos := byteVocab(t)
	rng := rand.New(rand.NewPCG(5, 6))
	g, err := FromJSONSchema([]byte(schemaCases[0].schema))
	if err != nil {
		t.Fatal(err)
	}
	allowed := make([]bool, v.Size()+3) // longer than the vocabulary
	for walk := 0; walk < 20; walk++ {
		m := NewMatcher(g, v)
		for step := 0; step < 40 && !m.Done(); step++ {
			for i := range allowed {
				allowed[i] = true // poison
			}
			m.Mask(allowed)
			for i := v.Size(); i < len(allowed); i++ {
				if allowed[i] {
					t.Fatalf("token %d past the vocabulary allowed", i)
				}
			}
			var ids []int32
			for id := int32(0); id < int32(v.Size()); id++ {
				ok := m.Clone().Accept(id) == nil
				if ok != allowed[id] || ok != m.Allows(id) {
					t.Fatalf("token %d (%q): Accept says %v, Mask %v, Allows %v", id, v.pieces[id], ok, allowed[id], m.Allows(id))
				}
				if ok && id != eos {
					ids = append(ids, id)
				}
			}
			if len(ids) == 0 {
				break
			}
			if err := m.Accept(ids[rng.IntN(len(ids))]); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestEndOfGeneration(t *testing.T) {
	v, eos := byteVocab(t)
	g, err := FromJSONSchema([]byte(`{"type":"integer"}`))
	if err != nil {
		t.Fatal(err)
	}
	m := NewMatcher(g, v)
	if m.Allows(eos) || m.Accept(eos) == nil {
		t.Fatal("end allowed before any digit")
	}
	if err := feed(m, "12"); err != nil {
		t.Fatal(err)
	}
	if !m.Complete() || m.Done() || !m.Allows(eos) {
		t.Fatalf("after 12: complete %v, done %v, eos %v; want true, false, true", m.Complete(), m.Done(), m.Allows(eos))
	}
	if m.Allows(int32(len(v.pieces) - 2)) {
		t.Error("a token with no text allowed")
	}
	if err := m.Accept(eos); err != nil || !m.Done() {
		t.Fatalf("accepting the end: %v, done %v", err, m.Done())
	}
	o := NewMatcher(JSON(), v)
	if err := feed(o, `{}`); err != nil || !o.Done() {
		t.Fatalf("{} in JSON mode: %v, done %v; want done (nothing may follow)", err, o.Done())
	}
}

func TestBadSchemas(t *testing.T) {
	cases := []struct{ schema, path string }{
		{`{"type":"strin"}`, "/type"},
		{`{"type":"object","properties":{"a":{"type":"string","pattern":"x+"}}}`, "/properties/a/pattern"},
		{`{"$ref":"#/$defs/missing"}`, "/$ref"},
		{`{"$ref":"http://example.com/s.json"}`, "/$ref"},
		{`{"type":"array","items":{"type":"integer","maximum":3}}`, "/items/maximum"},
		{`{"type":"string","maxLength":-1}`, "/maxLength"},
		{`{"type":"string","minLength":3,"maxLength":2}`, "/maxLength"},
		{`{"enum":[]}`, "/enum"},
		{`{"anyOf":[{"type":"integer"},false]}`, "/anyOf/1"},
		{`{"type":"integer","minimum":3}`, "/minimum"},
		{`{"type":"string","maxLength":100000}`, "/maxLength"},
		{`[1]`, ""},
		{`{"type":`, ""},
	}
	for _, tc := range cases {
		_, err := FromJSONSchema([]byte(tc.schema))
		var se *SchemaError
		if !errors.As(err, &se) {
			t.Errorf("%s: got %v, want a SchemaError", tc.schema, err)
			continue
		}
		if se.Path != tc.path {
			t.Errorf("%s: error %q at %q, want at %q", tc.schema, se.Msg, se.Path, tc.path)
		}
	}
}

func TestLeftRecursionRefused(t *testing.T) {
	b := newBuilder()
	r := b.declare("loop")
	b.define(r, alt(seq(exprRef{r}, lit("a")), lit("b")))
	if _, err := b.finish(exprRef{r}); err == nil || !strings.Contains(err.Error(), "left-recursive") {
		t.Fatalf("got %v, want a left-recursion error", err)
	}
	_, err := FromJSONSchema([]byte(`{"$ref":"#"}`))
	if err == nil {
		t.Fatal("a schema that is only a reference to itself compiled")
	}
}

func TestVocabTrie(t *testing.T) {
	pieces := []string{"b", "ab", "a", "", "abc", "ab", "ba"}
	v, err := NewVocab(pieces, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Every non-empty token reachable at the node spelling its piece.
	found := map[int32]string{}
	path := []byte{}
	for i := 1; i < len(v.nodes); i++ {
		n := v.nodes[i]
		path = append(path[:n.depth-1], n.b)
		for _, id := range v.tokens[n.tokStart:n.tokEnd] {
			found[id] = string(path)
		}
		if n.end <= int32(i) || n.end > int32(len(v.nodes)) {
			t.Fatalf("node %d: subtree end %d", i, n.end)
		}
	}
	for id, p := range pieces {
		if got, ok := found[int32(id)]; (p != "") != ok || got != p {
			t.Errorf("token %d (%q): found at %q (%v)", id, p, got, ok)
		}
	}
	if _, err := NewVocab(pieces, []int32{7}); err == nil {
		t.Error("an end token outside the vocabulary was accepted")
	}
}

// A budget too small from the start still leaves tokens, those closest to
// the end, so the output ends as soon as it can.
func TestBudgetTooSmallHeadsForTheEnd(t *testing.T) {
	v, eos := byteVocab(t)
	rng := rand.New(rand.NewPCG(13, 14))
	for _, tc := range schemaCases {
		g, err := FromJSONSchema([]byte(tc.schema))
		if err != nil {
			t.Fatal(err)
		}
		m := NewMatcher(g, v)
		allowed := make([]bool, v.Size())
		var out []byte
		for steps := 0; !m.Complete(); steps++ {
			if steps > g.MinLength() {
				t.Fatalf("%s: not done after %d tokens (shortest text: %d bytes): %q", tc.name, steps, g.MinLength(), out)
			}
			m.SetRemaining(1)
			m.Mask(allowed)
			var ids []int32
			for id, ok := range allowed {
				if ok {
					ids = append(ids, int32(id))
				}
			}
			if len(ids) == 0 {
				t.Fatalf("%s: empty mask after %q", tc.name, out)
			}
			id := ids[rng.IntN(len(ids))]
			if err := m.Accept(id); err != nil {
				t.Fatal(err)
			}
			if id == eos {
				break
			}
			out = append(out, v.pieces[id]...)
		}
		assertValid(t, compileValidator(t, tc.schema), string(out))
	}
}
