package chat

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"github.com/nikolalohinski/gonja/v2/exec"
)

// The tojson filter as transformers defines it for chat templates:
// json.dumps(x, ensure_ascii=False, indent=indent, separators=separators,
// sort_keys=sort_keys). gonja's own uses Go's encoding/json (no spaces after
// separators, HTML escapes, sorted map keys), which changes the prompt.

const maxJSONDepth = 64

type jsonEncoder struct {
	b        strings.Builder
	indent   *string // nil: one line
	itemSep  string
	keySep   string
	sortKeys bool
	limit    int
}

func filterToJSON(limit int) exec.FilterFunction {
	return func(_ *exec.Evaluator, in *exec.Value, params *exec.VarArgs) *exec.Value {
		if in.IsError() {
			return in
		}
		var indent, separators *exec.Value
		var ensureASCII, sortKeys bool
		if err := params.Take(
			exec.KeywordArgument("indent", exec.AsValue(nil), anyArg(&indent)),
			exec.KeywordArgument("ensure_ascii", exec.AsValue(false), exec.BoolArgument(&ensureASCII)),
			exec.KeywordArgument("separators", exec.AsValue(nil), anyArg(&separators)),
			exec.KeywordArgument("sort_keys", exec.AsValue(false), exec.BoolArgument(&sortKeys)),
		); err != nil {
			return exec.AsValue(fmt.Errorf("tojson: %w", err))
		}
		if ensureASCII {
			return exec.AsValue(errors.New("tojson: ensure_ascii=True is not supported"))
		}
		enc := &jsonEncoder{itemSep: ", ", keySep: ": ", sortKeys: sortKeys, limit: limit}
		if !indent.IsNil() {
			var ind string
			switch {
			case indent.IsString():
				ind = indent.String()
			case indent.IsInteger() && indent.Integer() >= 0 && indent.Integer() <= 64:
				ind = strings.Repeat(" ", indent.Integer())
			default:
				return exec.AsValue(fmt.Errorf("tojson: indent must be a string or an integer in [0, 64], got %s", indent.String()))
			}
			enc.indent = &ind
			enc.itemSep = ","
		}
		if !separators.IsNil() {
			if !separators.IsList() || separators.Len() != 2 {
				return exec.AsValue(fmt.Errorf("tojson: separators must be a pair of strings, got %s", separators.String()))
			}
			item, _ := separators.GetItem(0)
			key, _ := separators.GetItem(1)
			enc.itemSep, enc.keySep = item.String(), key.String()
		}
		if err := enc.value(reflect.ValueOf(in.Interface()), 0); err != nil {
			return exec.AsValue(fmt.Errorf("tojson: %w", err))
		}
		return exec.AsSafeValue(enc.b.String())
	}
}

// anyArg stores an argument as is.
func anyArg(out **exec.Value) exec.ArgumentTransmuter {
	return func(v *exec.Value) error { *out = v; return nil }
}

func (e *jsonEncoder) newline(depth int) {
	if e.indent != nil {
		e.b.WriteByte('\n')
		for range depth {
			e.b.WriteString(*e.indent)
		}
	}
}

func (e *jsonEncoder) value(v reflect.Value, depth int) error {
	if depth > maxJSONDepth {
		return errors.New("value nested too deeply")
	}
	if e.b.Len() > e.limit {
		return limitError("value size", e.limit)
	}
	for v.IsValid() && (v.Kind() == reflect.Interface || v.Kind() == reflect.Pointer) {
		if v.IsNil() {
			e.b.WriteString("null")
			return nil
		}
		switch x := v.Interface().(type) {
		case *exec.Value:
			v = x.Val
			continue
		case *exec.Dict:
			return e.dict(x, depth)
		}
		v = v.Elem()
	}
	if !v.IsValid() {
		e.b.WriteString("null")
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		writeJSONString(&e.b, v.String())
	case reflect.Bool:
		e.b.WriteString(strconv.FormatBool(v.Bool()))
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		e.b.WriteString(strconv.FormatInt(v.Int(), 10))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		e.b.WriteString(strconv.FormatUint(v.Uint(), 10))
	case reflect.Float32, reflect.Float64:
		e.b.WriteString(pyFloatRepr(v.Float()))
	case reflect.Slice, reflect.Array:
		if v.Len() == 0 {
			e.b.WriteString("[]")
			return nil
		}
		e.b.WriteByte('[')
		for i := range v.Len() {
			if i > 0 {
				e.b.WriteString(e.itemSep)
			}
			e.newline(depth + 1)
			if err := e.value(v.Index(i), depth+1); err != nil {
				return err
			}
		}
		e.newline(depth)
		e.b.WriteByte(']')
	case reflect.Map:
		// Go maps (namespaces, gonja's dict() results) have no order; sort
		// so the output is at least deterministic.
		keys := v.MapKeys()
		names := make([]string, len(keys))
		for i, k := range keys {
			names[i] = fmt.Sprint(k.Interface())
		}
		idx := make([]int, len(keys))
		for i := range idx {
			idx[i] = i
		}
		sort.Slice(idx, func(a, b int) bool { return names[idx[a]] < names[idx[b]] })
		pairs := make([]jsonPair, len(keys))
		for i, j := range idx {
			pairs[i] = jsonPair{names[j], v.MapIndex(keys[j])}
		}
		return e.object(pairs, depth)
	case reflect.Struct:
		if d, ok := v.Interface().(exec.Dict); ok {
			return e.dict(&d, depth)
		}
		return fmt.Errorf("object of type %s is not JSON serializable", v.Type())
	default:
		return fmt.Errorf("object of type %s is not JSON serializable", v.Type())
	}
	return nil
}

type jsonPair struct {
	key   string
	value reflect.Value
}

func (e *jsonEncoder) dict(d *exec.Dict, depth int) error {
	pairs := make([]jsonPair, 0, len(d.Pairs))
	for _, p := range d.Pairs {
		key, err := jsonKey(p.Key)
		if err != nil {
			return err
		}
		pairs = append(pairs, jsonPair{key, reflect.ValueOf(p.Value)})
	}
	return e.object(pairs, depth)
}

// jsonKey converts a dict key the way json.dumps does.
func jsonKey(k *exec.Value) (string, error) {
	switch {
	case k.IsString():
		return k.String(), nil
	case k.IsBool():
		return strconv.FormatBool(k.Bool()), nil
	case k.IsInteger():
		return strconv.Itoa(k.Integer()), nil
	case k.IsFloat():
		return pyFloatRepr(k.Float()), nil
	case k.IsNil():
		return "null", nil
	}
	return "", fmt.Errorf("keys must be str, int, float, bool or None, not %s", k.Val.Type())
}

func (e *jsonEncoder) object(pairs []jsonPair, depth int) error {
	if e.sortKeys {
		sort.SliceStable(pairs, func(a, b int) bool { return pairs[a].key < pairs[b].key })
	}
	if len(pairs) == 0 {
		e.b.WriteString("{}")
		return nil
	}
	e.b.WriteByte('{')
	for i, p := range pairs {
		if i > 0 {
			e.b.WriteString(e.itemSep)
		}
		e.newline(depth + 1)
		writeJSONString(&e.b, p.key)
		e.b.WriteString(e.keySep)
		if err := e.value(p.value, depth+1); err != nil {
			return err
		}
	}
	e.newline(depth)
	e.b.WriteByte('}')
	return nil
}

// writeJSONString quotes s like json.dumps with ensure_ascii=False: only the
// quote, the backslash and control characters are escaped.
func writeJSONString(b *strings.Builder, s string) {
	const hex = "0123456789abcdef"
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		default:
			if c < 0x20 {
				b.WriteString(`\u00`)
				b.WriteByte(hex[c>>4])
				b.WriteByte(hex[c&15])
			} else {
				b.WriteByte(c)
			}
		}
	}
	b.WriteByte('"')
}

// pyFloatRepr formats f like Python's repr(float): the shortest digits that
// round-trip, positional notation for exponents in [-4, 16), and a ".0" on
// integral values.
func pyFloatRepr(f float64) string {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	}
	s := strconv.FormatFloat(f, 'e', -1, 64) // d.ddde±XX
	mant, expStr, _ := strings.Cut(s, "e")
	exp, _ := strconv.Atoi(expStr)
	if exp < -4 || exp >= 16 {
		sign := "+"
		if exp < 0 {
			sign, exp = "-", -exp
		}
		return fmt.Sprintf("%se%s%02d", mant, sign, exp)
	}
	out := strconv.FormatFloat(f, 'f', -1, 64)
	if f == math.Trunc(f) {
		out += ".0"
	}
	return out
}
