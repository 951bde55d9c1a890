package chat

import (
	"fmt"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"github.com/nikolalohinski/gonja/v2/exec"
)

// Filters whose gonja versions disagree with Jinja2's.

// filterReverse: gonja's sorts lists in descending order.
func filterReverse(_ *exec.Evaluator, in *exec.Value, params *exec.VarArgs) *exec.Value {
	if in.IsError() {
		return in
	}
	if err := params.Take(); err != nil {
		return exec.AsValue(fmt.Errorf("reverse: %w", err))
	}
	if in.IsString() {
		r := []rune(in.String())
		for i, j := 0, len(r)-1; i < j; i, j = i+1, j-1 {
			r[i], r[j] = r[j], r[i]
		}
		return exec.AsValue(string(r))
	}
	if !in.IsIterable() {
		return exec.AsValue(fmt.Errorf("reverse: %s is not iterable", typeName(in)))
	}
	var out []any
	in.Iterate(func(_, _ int, key, _ *exec.Value) bool {
		out = append(out, key.Interface())
		return true
	}, func() {})
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return exec.AsValue(out)
}

// filterRound: Python's round (half to even on the exact binary value,
// which strconv's correctly rounded formatting reproduces); gonja rounds
// half away from zero.
func filterRound(_ *exec.Evaluator, in *exec.Value, params *exec.VarArgs) *exec.Value {
	if in.IsError() {
		return in
	}
	precision := 0
	method := "common"
	if err := params.Take(
		exec.PositionalArgument("precision", exec.AsValue(0), exec.IntArgument(&precision)),
		exec.PositionalArgument("method", exec.AsValue("common"), exec.StringEnumArgument(&method, []string{"common", "ceil", "floor"})),
	); err != nil {
		return exec.AsValue(fmt.Errorf("round: %w", err))
	}
	_, f, _, ok := number(in)
	if !ok {
		return exec.AsValue(fmt.Errorf("round: %s is not a number", typeName(in)))
	}
	if precision < 0 || precision > 17 {
		return exec.AsValue(fmt.Errorf("round: precision %d is outside [0, 17]", precision))
	}
	switch method {
	case "ceil", "floor":
		scale := math.Pow(10, float64(precision))
		op := math.Ceil
		if method == "floor" {
			op = math.Floor
		}
		return exec.AsValue(op(f*scale) / scale)
	}
	r, err := strconv.ParseFloat(strconv.FormatFloat(f, 'f', precision, 64), 64)
	if err != nil {
		return exec.AsValue(fmt.Errorf("round: %w", err))
	}
	return exec.AsValue(r)
}

// dictPairs lists a mapping's (key, value) pairs: a Dict in insertion
// order, a Go map by key. gonja's items and dictsort return nothing for
// dict literals.
func dictPairs(in *exec.Value) ([][2]*exec.Value, error) {
	if d, ok := in.Interface().(*exec.Dict); ok {
		out := make([][2]*exec.Value, len(d.Pairs))
		for i, p := range d.Pairs {
			out[i] = [2]*exec.Value{p.Key, p.Value}
		}
		return out, nil
	}
	v := in.Val
	for v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
		v = v.Elem()
	}
	if v.Kind() != reflect.Map {
		return nil, fmt.Errorf("%s is not a mapping", typeName(in))
	}
	keys := v.MapKeys()
	out := make([][2]*exec.Value, len(keys))
	for i, k := range keys {
		out[i] = [2]*exec.Value{exec.ToValue(k), exec.ToValue(v.MapIndex(k))}
	}
	sort.Slice(out, func(a, b int) bool { return out[a][0].String() < out[b][0].String() })
	return out, nil
}

func pairsValue(pairs [][2]*exec.Value) *exec.Value {
	out := make([]any, len(pairs))
	for i, p := range pairs {
		out[i] = []any{p[0].Interface(), p[1].Interface()}
	}
	return exec.AsValue(out)
}

func filterItems(_ *exec.Evaluator, in *exec.Value, params *exec.VarArgs) *exec.Value {
	if in.IsError() {
		return in
	}
	if err := params.Take(); err != nil {
		return exec.AsValue(fmt.Errorf("items: %w", err))
	}
	if in.IsNil() { // Jinja: items of an undefined value is empty
		return exec.AsValue([]any{})
	}
	pairs, err := dictPairs(in)
	if err != nil {
		return exec.AsValue(fmt.Errorf("items: %w", err))
	}
	return pairsValue(pairs)
}

func filterDictSort(_ *exec.Evaluator, in *exec.Value, params *exec.VarArgs) *exec.Value {
	if in.IsError() {
		return in
	}
	var caseSensitive, reverse bool
	by := "key"
	if err := params.Take(
		exec.PositionalArgument("case_sensitive", exec.AsValue(false), exec.BoolArgument(&caseSensitive)),
		exec.PositionalArgument("by", exec.AsValue("key"), exec.StringEnumArgument(&by, []string{"key", "value"})),
		exec.PositionalArgument("reverse", exec.AsValue(false), exec.BoolArgument(&reverse)),
	); err != nil {
		return exec.AsValue(fmt.Errorf("dictsort: %w", err))
	}
	pairs, err := dictPairs(in)
	if err != nil {
		return exec.AsValue(fmt.Errorf("dictsort: %w", err))
	}
	idx := 0
	if by == "value" {
		idx = 1
	}
	var cmpErr error
	sort.SliceStable(pairs, func(a, b int) bool {
		c, err := compareValues(pairs[a][idx], pairs[b][idx], caseSensitive)
		if err != nil && cmpErr == nil {
			cmpErr = err
		}
		if reverse {
			return c > 0
		}
		return c < 0
	})
	if cmpErr != nil {
		return exec.AsValue(fmt.Errorf("dictsort: %w", cmpErr))
	}
	return pairsValue(pairs)
}

// compareValues orders two numbers or two strings as Python does.
func compareValues(a, b *exec.Value, caseSensitive bool) (int, error) {
	_, af, _, aNum := number(a)
	_, bf, _, bNum := number(b)
	switch {
	case aNum && bNum:
		switch {
		case af < bf:
			return -1, nil
		case af > bf:
			return 1, nil
		}
		return 0, nil
	case a.IsString() && b.IsString():
		x, y := a.String(), b.String()
		if !caseSensitive {
			x, y = strings.ToLower(x), strings.ToLower(y)
		}
		return strings.Compare(x, y), nil
	}
	return 0, fmt.Errorf("'<' not supported between %s and %s", typeName(a), typeName(b))
}
