package grammar

import (
	"fmt"
	"strconv"
	"strings"
)

// SchemaError is a schema that cannot be compiled; Path is the JSON
// pointer of the offending part within the schema ("" for its root).
type SchemaError struct {
	Path string
	Msg  string
}

func (e *SchemaError) Error() string {
	if e.Path == "" {
		return "grammar: schema: " + e.Msg
	}
	return "grammar: schema at " + e.Path + ": " + e.Msg
}

// maxRepeat bounds minLength/maxLength/minItems/maxItems, which expand into
// rules.
const maxRepeat = 4096

// JSON is the grammar of any JSON object (OpenAI's json_object mode,
// Ollama's format "json"), with llama.cpp's bounded whitespace.
func JSON() *Grammar { return jsonGrammar }

var jsonGrammar = func() *Grammar {
	c := newCompiler(nil)
	g, err := c.b.finish(c.anyObject())
	if err != nil {
		panic(err) // a fixed grammar: cannot fail
	}
	return g
}()

// FromJSONSchema compiles a JSON schema into the grammar of the JSON texts
// it accepts. Supported: type (one or a list), properties (generated in the
// order written: required ones always, optional ones in order, each
// optional), required, additionalProperties (false, true or a schema; with
// properties, no extra members are generated), enum, const, items,
// prefixItems, minItems, maxItems, anyOf, oneOf, allOf of object schemas,
// $ref to "#" and JSON pointers into the document ($defs, definitions),
// minLength, maxLength, the formats date, time, date-time and uuid (other
// formats are annotations), nullable, and minimum ≥ 0 (no sign). Annotations
// (title, description, default, examples, $schema, ...) are ignored.
// Keywords that would constrain values in ways the grammar cannot express
// (pattern, numeric bounds, uniqueItems, ...) are an error, so that what it
// generates always validates.
func FromJSONSchema(schema []byte) (*Grammar, error) {
	doc, err := parseValue(schema)
	if err != nil {
		return nil, &SchemaError{Msg: "not valid JSON: " + err.Error()}
	}
	c := newCompiler(doc)
	root := c.schema(doc, "")
	if c.err != nil {
		return nil, c.err
	}
	c.resolveRefs()
	if c.err != nil {
		return nil, c.err
	}
	g, err := c.b.finish(root)
	if err != nil {
		return nil, &SchemaError{Msg: err.Error()}
	}
	return g, nil
}

type compiler struct {
	b    *builder
	doc  *value
	err  *SchemaError
	refs map[string]int32 // JSON pointer → its rule
	todo []string         // pointers referenced but not yet compiled
	// shared rules, made on first use
	shared map[string]expr
	depth  int
}

func newCompiler(doc *value) *compiler {
	return &compiler{b: newBuilder(), doc: doc, refs: map[string]int32{}, shared: map[string]expr{}}
}

func (c *compiler) fail(path, format string, a ...any) expr {
	if c.err == nil {
		c.err = &SchemaError{Path: path, Msg: fmt.Sprintf(format, a...)}
	}
	return exprSeq{}
}

// once makes a shared rule on first use.
func (c *compiler) once(name string, body func() expr) expr {
	if x, ok := c.shared[name]; ok {
		return x
	}
	r := c.b.declare(name)
	c.shared[name] = exprRef{r}
	c.b.define(r, body())
	return exprRef{r}
}

func (c *compiler) space() expr {
	return c.once("space", func() expr {
		return alt(exprSeq{}, lit(" "), seq(lit("\n"), rep(class(' ', ' ', '\t', '\t'), 0, 20)))
	})
}

// char is one character of a JSON string's body: an escape or a UTF-8
// encoded code point other than '"', '\' and the control characters.
func (c *compiler) char() expr {
	return c.once("char", func() expr {
		cont := class(0x80, 0xBF)
		hex := class('0', '9', 'a', 'f', 'A', 'F')
		return alt(
			class(0x20, 0x21, 0x23, 0x5B, 0x5D, 0x7F),
			seq(lit(`\`), alt(class('"', '"', '\\', '\\', '/', '/', 'b', 'b', 'f', 'f', 'n', 'n', 'r', 'r', 't', 't'),
				seq(lit("u"), hex, hex, hex, hex))),
			seq(class(0xC2, 0xDF), cont),
			seq(lit("\xE0"), class(0xA0, 0xBF), cont),
			seq(class(0xE1, 0xEC), cont, cont),
			seq(lit("\xED"), class(0x80, 0x9F), cont),
			seq(class(0xEE, 0xEF), cont, cont),
			seq(lit("\xF0"), class(0x90, 0xBF), cont, cont),
			seq(class(0xF1, 0xF3), cont, cont, cont),
			seq(lit("\xF4"), class(0x80, 0x8F), cont, cont),
		)
	})
}

func (c *compiler) str() expr {
	return c.once("string", func() expr { return seq(lit(`"`), star(c.char()), lit(`"`)) })
}

var digit = class('0', '9')

// integerPart is an integer without leading zeros, at most 16 digits (so
// it fits an int64 and a float64 holds it well).
func integerPart() expr {
	return alt(lit("0"), seq(class('1', '9'), rep(digit, 0, 15)))
}

func (c *compiler) integer(signed bool) expr {
	if !signed {
		return c.once("natural", integerPart)
	}
	return c.once("integer", func() expr { return seq(opt(lit("-")), integerPart()) })
}

func (c *compiler) number(signed bool) expr {
	body := func() expr {
		frac := seq(lit("."), rep(digit, 1, 16))
		exp := seq(class('e', 'e', 'E', 'E'), opt(class('+', '+', '-', '-')), rep(digit, 1, 2))
		sign := expr(exprSeq{})
		if signed {
			sign = opt(lit("-"))
		}
		return seq(sign, integerPart(), opt(frac), opt(exp))
	}
	if signed {
		return c.once("number", body)
	}
	return c.once("nonnegative-number", body)
}

func (c *compiler) boolean() expr {
	return c.once("boolean", func() expr { return alt(lit("true"), lit("false")) })
}

func (c *compiler) null() expr { return c.once("null", func() expr { return lit("null") }) }

// anyValue is any JSON value.
func (c *compiler) anyValue() expr {
	if x, ok := c.shared["value"]; ok {
		return x
	}
	r := c.b.declare("value")
	c.shared["value"] = exprRef{r}
	c.b.define(r, alt(c.anyObject(), c.anyArray(), c.str(), c.number(true), c.boolean(), c.null()))
	return exprRef{r}
}

func (c *compiler) anyObject() expr {
	return c.once("object", func() expr { return c.mapObject(c.anyValue()) })
}

func (c *compiler) anyArray() expr {
	return c.once("array", func() expr { return c.array(nil, c.anyValue(), 0, -1) })
}

// mapObject is an object whose members all have values matching val.
func (c *compiler) mapObject(val expr) expr {
	kv := seq(c.str(), c.space(), lit(":"), c.space(), val, c.space())
	return seq(lit("{"), c.space(), opt(seq(kv, star(seq(lit(","), c.space(), kv)))), lit("}"))
}

// array is prefix items, then items between min and max in all (max < 0:
// unbounded).
func (c *compiler) array(prefix []expr, item expr, minItems, maxItems int) expr {
	elems := make([]expr, 0, len(prefix)+1)
	for _, p := range prefix {
		elems = append(elems, seq(p, c.space()))
	}
	sep := seq(lit(","), c.space())
	var body expr
	switch {
	case len(elems) > 0:
		// The tuple part comes in full (when minItems asks for it) or as a
		// prefix of any length otherwise; keep it simple: in full, then
		// items up to the bound.
		parts := exprSeq{elems[0]}
		for _, e := range elems[1:] {
			parts = append(parts, sep, e)
		}
		n := len(elems)
		if item != nil && (maxItems < 0 || maxItems > n) {
			more := max(minItems-n, 0)
			moreMax := -1
			if maxItems >= 0 {
				moreMax = maxItems - n
			}
			parts = append(parts, rep(seq(sep, item, c.space()), more, moreMax))
		}
		body = parts
		if minItems == 0 && len(elems) > 0 {
			body = opt(parts)
		}
	case item == nil || maxItems == 0:
		body = exprSeq{}
	default:
		first := seq(item, c.space())
		restMax := -1
		if maxItems > 0 {
			restMax = maxItems - 1
		}
		list := seq(first, rep(seq(sep, first), max(minItems-1, 0), restMax))
		body = list
		if minItems == 0 {
			body = opt(list)
		}
	}
	return seq(lit("["), c.space(), body, lit("]"))
}

// Keywords ignored (annotations) and refused (constraints not expressed).
var (
	annotations = map[string]bool{"$schema": true, "$id": true, "$comment": true, "$anchor": true, "title": true,
		"description": true, "default": true, "examples": true, "readOnly": true, "writeOnly": true,
		"deprecated": true, "$defs": true, "definitions": true, "strict": true, "name": true}
	unsupported = map[string]bool{"pattern": true, "patternProperties": true, "maximum": true,
		"exclusiveMinimum": true, "exclusiveMaximum": true, "multipleOf": true, "uniqueItems": true,
		"contains": true, "minContains": true, "maxContains": true, "not": true, "if": true, "then": true,
		"else": true, "dependentRequired": true, "dependentSchemas": true, "dependencies": true,
		"propertyNames": true, "minProperties": true, "maxProperties": true, "unevaluatedProperties": true,
		"unevaluatedItems": true, "$dynamicRef": true, "$recursiveRef": true}
)

// schema compiles the schema s found at JSON pointer path.
func (c *compiler) schema(s *value, path string) expr {
	if c.err != nil {
		return exprSeq{}
	}
	c.depth++
	defer func() { c.depth-- }()
	if c.depth > maxSchemaDepth {
		return c.fail(path, "nested deeper than %d", maxSchemaDepth)
	}
	switch s.kind {
	case 'b':
		if s.b {
			return c.anyValue()
		}
		return c.fail(path, "the schema false matches nothing")
	case 'o':
	default:
		return c.fail(path, "a schema must be an object or a boolean")
	}
	for _, m := range s.members {
		if unsupported[m.key] {
			return c.fail(path+"/"+m.key, "the keyword %s is not supported", m.key)
		}
	}
	if s.get("minimum") != nil && !nonNegative(s) {
		return c.fail(path+"/minimum", "only minimum 0 is supported")
	}
	if ref := s.get("$ref"); ref != nil {
		if ref.kind != 's' {
			return c.fail(path+"/$ref", "must be a string")
		}
		return c.ref(ref.str, path+"/$ref")
	}
	if v := s.get("const"); v != nil {
		return c.literal(v)
	}
	if v := s.get("enum"); v != nil {
		if v.kind != 'a' || len(v.items) == 0 {
			return c.fail(path+"/enum", "must be a non-empty array")
		}
		alts := make(exprAlt, len(v.items))
		for i, x := range v.items {
			alts[i] = c.literal(x)
		}
		return c.nullable(s, alts)
	}
	for _, kw := range []string{"anyOf", "oneOf"} {
		if v := s.get(kw); v != nil {
			if v.kind != 'a' || len(v.items) == 0 {
				return c.fail(path+"/"+kw, "must be a non-empty array of schemas")
			}
			alts := make(exprAlt, len(v.items))
			for i, x := range v.items {
				alts[i] = c.schema(x, fmt.Sprintf("%s/%s/%d", path, kw, i))
			}
			return c.nullable(s, alts)
		}
	}
	if v := s.get("allOf"); v != nil {
		merged, err := c.mergeAllOf(s, v, path)
		if err != nil {
			return c.fail(err.Path, "%s", err.Msg)
		}
		return c.schema(merged, path)
	}
	t := s.get("type")
	var types []string
	switch {
	case t == nil:
		types = []string{c.implicitType(s)}
	case t.kind == 's':
		types = []string{t.str}
	case t.kind == 'a' && len(t.items) > 0:
		for i, x := range t.items {
			if x.kind != 's' {
				return c.fail(fmt.Sprintf("%s/type/%d", path, i), "must be a type name")
			}
			types = append(types, x.str)
		}
	default:
		return c.fail(path+"/type", "must be a type name or a non-empty array of them")
	}
	alts := make(exprAlt, 0, len(types))
	for _, ty := range types {
		alts = append(alts, c.typed(s, ty, path))
	}
	return c.nullable(s, alts)
}

// nullable adds null to x when the schema says nullable (OpenAPI).
func (c *compiler) nullable(s *value, x exprAlt) expr {
	if n := s.get("nullable"); n != nil && n.kind == 'b' && n.b {
		x = append(x, c.null())
	}
	if len(x) == 1 {
		return x[0]
	}
	return x
}

// implicitType is the type a schema without "type" describes: the one its
// keywords imply, or any value.
func (c *compiler) implicitType(s *value) string {
	for _, m := range s.members {
		switch m.key {
		case "properties", "additionalProperties", "required":
			return "object"
		case "items", "prefixItems", "minItems", "maxItems":
			return "array"
		case "minLength", "maxLength", "format":
			return "string"
		}
	}
	return "any"
}

func (c *compiler) typed(s *value, ty, path string) expr {
	switch ty {
	case "string":
		return c.stringSchema(s, path)
	case "integer":
		return c.integer(!nonNegative(s))
	case "number":
		return c.number(!nonNegative(s))
	case "boolean":
		return c.boolean()
	case "null":
		return c.null()
	case "object":
		return c.object(s, path)
	case "array":
		return c.arraySchema(s, path)
	case "any":
		return c.anyValue()
	}
	return c.fail(path+"/type", "unknown type %q", ty)
}

// nonNegative reports whether minimum is at least 0 (the only bound
// supported: it drops the sign). Any other minimum is refused.
func nonNegative(s *value) bool {
	m := s.get("minimum")
	if m == nil || m.kind != 'n' {
		return false
	}
	f, err := strconv.ParseFloat(m.num.String(), 64)
	return err == nil && f == 0
}

func (c *compiler) stringSchema(s *value, path string) expr {
	if f := s.get("format"); f != nil && f.kind == 's' {
		if x := c.format(f.str); x != nil {
			return x
		}
	}
	minLen, ok1 := c.count(s, "minLength", path, 0)
	maxLen, ok2 := c.count(s, "maxLength", path, -1)
	if !ok1 || !ok2 {
		return exprSeq{}
	}
	if minLen == 0 && maxLen < 0 {
		return c.str()
	}
	if maxLen >= 0 && maxLen < minLen {
		return c.fail(path+"/maxLength", "is below minLength")
	}
	return seq(lit(`"`), rep(c.char(), minLen, maxLen), lit(`"`))
}

// count reads a non-negative integer keyword (def when absent).
func (c *compiler) count(s *value, key, path string, def int) (int, bool) {
	v := s.get(key)
	if v == nil {
		return def, true
	}
	n, err := strconv.ParseInt(v.num.String(), 10, 64)
	if v.kind != 'n' || err != nil || n < 0 {
		c.fail(path+"/"+key, "must be a non-negative integer")
		return 0, false
	}
	if n > maxRepeat {
		c.fail(path+"/"+key, "%d is more than the %d supported", n, maxRepeat)
		return 0, false
	}
	return int(n), true
}

// format is the grammar of a string format, nil for those taken as
// annotations.
func (c *compiler) format(name string) expr {
	d := func(lo, hi byte) expr { return class(lo, hi) }
	two := func(lo, hi byte) expr { return seq(d(lo, hi), digit) }
	// Days by month, February to the 28th (the 29th would need the year to
	// be a leap year): every date generated is a real one.
	date := func() expr {
		day28 := alt(seq(lit("0"), d('1', '9')), seq(lit("1"), digit), seq(lit("2"), d('0', '8')))
		day30 := alt(day28, lit("29"), lit("30"))
		day31 := alt(day30, lit("31"))
		month := alt(seq(alt(lit("01"), lit("03"), lit("05"), lit("07"), lit("08"), lit("10"), lit("12")), lit("-"), day31),
			seq(alt(lit("04"), lit("06"), lit("09"), lit("11")), lit("-"), day30),
			seq(lit("02-"), day28))
		return seq(rep(digit, 4, 4), lit("-"), month)
	}
	tm := func() expr {
		hour := alt(two('0', '1'), seq(lit("2"), d('0', '3')))
		minute := two('0', '5')
		return seq(hour, lit(":"), minute, lit(":"), minute, opt(seq(lit("."), rep(digit, 1, 6))),
			alt(lit("Z"), seq(class('+', '+', '-', '-'), hour, lit(":"), minute)))
	}
	hex := class('0', '9', 'a', 'f', 'A', 'F')
	quoted := func(x expr) expr { return seq(lit(`"`), x, lit(`"`)) }
	switch name {
	case "date":
		return c.once("date", func() expr { return quoted(date()) })
	case "time":
		return c.once("time", func() expr { return quoted(tm()) })
	case "date-time":
		return c.once("date-time", func() expr { return quoted(seq(date(), lit("T"), tm())) })
	case "uuid":
		return c.once("uuid", func() expr {
			return quoted(seq(rep(hex, 8, 8), lit("-"), rep(hex, 4, 4), lit("-"), rep(hex, 4, 4), lit("-"),
				rep(hex, 4, 4), lit("-"), rep(hex, 12, 12)))
		})
	}
	return nil
}

func (c *compiler) literal(v *value) expr {
	var sb strings.Builder
	v.encode(&sb)
	return lit(sb.String())
}

func (c *compiler) object(s *value, path string) expr {
	props := s.get("properties")
	if props != nil && props.kind != 'o' {
		return c.fail(path+"/properties", "must be an object")
	}
	required := map[string]bool{}
	var requiredOrder []string
	if r := s.get("required"); r != nil {
		if r.kind != 'a' {
			return c.fail(path+"/required", "must be an array of names")
		}
		for i, x := range r.items {
			if x.kind != 's' {
				return c.fail(fmt.Sprintf("%s/required/%d", path, i), "must be a string")
			}
			if !required[x.str] {
				requiredOrder = append(requiredOrder, x.str)
			}
			required[x.str] = true
		}
	}
	extra := s.get("additionalProperties")
	if props == nil || len(props.members) == 0 {
		if len(required) == 0 {
			switch {
			case extra == nil || (extra.kind == 'b' && extra.b):
				return c.anyObject()
			case extra.kind == 'b':
				return seq(lit("{"), c.space(), lit("}"))
			default:
				return c.mapObject(c.schema(extra, path+"/additionalProperties"))
			}
		}
	}
	// Required members first in the order of properties (then required
	// names without a property schema, with any value), optional ones
	// after, each optional, in order.
	var req, optional []expr
	known := map[string]bool{}
	if props != nil {
		for _, m := range props.members {
			known[m.key] = true
			kv := seq(lit(quote(m.key)), c.space(), lit(":"), c.space(),
				c.schema(m.val, path+"/properties/"+escapePointer(m.key)), c.space())
			if required[m.key] {
				req = append(req, kv)
			} else {
				optional = append(optional, kv)
			}
		}
	}
	for _, name := range requiredOrder {
		if !known[name] {
			val := c.anyValue()
			if extra != nil && extra.kind == 'o' {
				val = c.schema(extra, path+"/additionalProperties")
			} else if extra != nil && extra.kind == 'b' && !extra.b {
				return c.fail(path+"/required", "%q is required but additionalProperties is false and it has no property", name)
			}
			req = append(req, seq(lit(quote(name)), c.space(), lit(":"), c.space(), val, c.space()))
		}
	}
	sep := seq(lit(","), c.space())
	body := exprSeq{}
	for i, kv := range req {
		if i > 0 {
			body = append(body, sep)
		}
		body = append(body, kv)
	}
	if len(optional) > 0 {
		tail := c.optionalMembers(optional, sep, path)
		if len(req) > 0 {
			body = append(body, opt(seq(sep, tail)))
		} else {
			body = append(body, opt(tail))
		}
	}
	return seq(lit("{"), c.space(), body, lit("}"))
}

// optionalMembers matches a non-empty subsequence of kvs, in order,
// separated by sep: S_i ::= kv_i (sep S_{i+1})? | S_{i+1}.
func (c *compiler) optionalMembers(kvs []expr, sep expr, path string) expr {
	var next expr
	for i := len(kvs) - 1; i >= 0; i-- {
		var x expr
		if next == nil {
			x = kvs[i]
		} else {
			x = alt(seq(kvs[i], opt(seq(sep, next))), next)
		}
		next = c.b.rule(fmt.Sprintf("opt%d", i), x)
	}
	return next
}

func (c *compiler) arraySchema(s *value, path string) expr {
	minItems, ok1 := c.count(s, "minItems", path, 0)
	maxItems, ok2 := c.count(s, "maxItems", path, -1)
	if !ok1 || !ok2 {
		return exprSeq{}
	}
	if maxItems >= 0 && maxItems < minItems {
		return c.fail(path+"/maxItems", "is below minItems")
	}
	var prefix []expr
	if p := s.get("prefixItems"); p != nil {
		if p.kind != 'a' {
			return c.fail(path+"/prefixItems", "must be an array of schemas")
		}
		for i, x := range p.items {
			prefix = append(prefix, c.schema(x, fmt.Sprintf("%s/prefixItems/%d", path, i)))
		}
	}
	var item expr
	switch it := s.get("items"); {
	case it == nil:
		if prefix == nil {
			item = c.anyValue()
		}
	case it.kind == 'a': // draft 4-7 tuples
		for i, x := range it.items {
			prefix = append(prefix, c.schema(x, fmt.Sprintf("%s/items/%d", path, i)))
		}
	case it.kind == 'b' && !it.b:
	default:
		item = c.schema(it, path+"/items")
	}
	if len(prefix) > 0 && minItems > len(prefix) && item == nil {
		return c.fail(path+"/minItems", "asks for more items than the tuple allows")
	}
	if maxItems >= 0 && len(prefix) > maxItems {
		return c.fail(path+"/maxItems", "is below the tuple's length")
	}
	return c.array(prefix, item, minItems, maxItems)
}

// ref compiles a reference to a JSON pointer in the document.
func (c *compiler) ref(ref, path string) expr {
	if !strings.HasPrefix(ref, "#") {
		return c.fail(path, "only local references (#...) are supported, not %q", ref)
	}
	ptr := ref[1:]
	if r, ok := c.refs[ptr]; ok {
		return exprRef{r}
	}
	if c.resolve(ptr) == nil {
		return c.fail(path, "%q points at nothing in the schema", ref)
	}
	r := c.b.declare("ref" + strings.ReplaceAll(ptr, "/", "-"))
	c.refs[ptr] = r
	c.todo = append(c.todo, ptr)
	return exprRef{r}
}

// resolveRefs compiles every referenced schema (references found while
// compiling them are added as they come).
func (c *compiler) resolveRefs() {
	for len(c.todo) > 0 && c.err == nil {
		ptr := c.todo[0]
		c.todo = c.todo[1:]
		c.b.define(c.refs[ptr], c.schema(c.resolve(ptr), ptr))
	}
}

// resolve follows a JSON pointer ("" is the root).
func (c *compiler) resolve(ptr string) *value {
	v := c.doc
	if ptr == "" {
		return v
	}
	if !strings.HasPrefix(ptr, "/") {
		return nil
	}
	for _, part := range strings.Split(ptr[1:], "/") {
		part = strings.ReplaceAll(strings.ReplaceAll(part, "~1", "/"), "~0", "~")
		switch {
		case v == nil:
			return nil
		case v.kind == 'o':
			v = v.get(part)
		case v.kind == 'a':
			i, err := strconv.Atoi(part)
			if err != nil || i < 0 || i >= len(v.items) {
				return nil
			}
			v = v.items[i]
		default:
			return nil
		}
	}
	return v
}

func escapePointer(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

// mergeAllOf merges allOf's object schemas (and the schema's own object
// keywords) into one: properties joined, required joined.
func (c *compiler) mergeAllOf(s, all *value, path string) (*value, *SchemaError) {
	if all.kind != 'a' || len(all.items) == 0 {
		return nil, &SchemaError{path + "/allOf", "must be a non-empty array of schemas"}
	}
	merged := &value{kind: 'o'}
	props := &value{kind: 'o'}
	req := &value{kind: 'a'}
	add := func(x *value, at string) *SchemaError {
		for x != nil && x.kind == 'o' && x.get("$ref") != nil {
			r := x.get("$ref")
			if r.kind != 's' || !strings.HasPrefix(r.str, "#") || c.resolve(r.str[1:]) == nil {
				return &SchemaError{at + "/$ref", "must point into the schema"}
			}
			x = c.resolve(r.str[1:])
		}
		if x == nil || x.kind != 'o' {
			return &SchemaError{at, "allOf is supported for object schemas only"}
		}
		for _, m := range x.members {
			switch m.key {
			case "properties":
				if m.val.kind == 'o' {
					props.members = append(props.members, m.val.members...)
				}
			case "required":
				if m.val.kind == 'a' {
					req.items = append(req.items, m.val.items...)
				}
			case "allOf":
			case "type":
				if m.val.kind != 's' || m.val.str != "object" {
					return &SchemaError{at + "/type", "allOf is supported for object schemas only"}
				}
			default:
				if !annotations[m.key] {
					merged.members = append(merged.members, m)
				}
			}
		}
		return nil
	}
	if err := add(s, path); err != nil {
		return nil, err
	}
	for i, x := range all.items {
		if err := add(x, fmt.Sprintf("%s/allOf/%d", path, i)); err != nil {
			return nil, err
		}
	}
	merged.members = append(merged.members, member{"type", &value{kind: 's', str: "object"}},
		member{"properties", props}, member{"required", req})
	return merged, nil
}
