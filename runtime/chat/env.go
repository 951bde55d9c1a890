package chat

import (
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"unicode/utf8"

	"github.com/nikolalohinski/gonja/v2/builtins"
	"github.com/nikolalohinski/gonja/v2/builtins/methods"
	"github.com/nikolalohinski/gonja/v2/config"
	"github.com/nikolalohinski/gonja/v2/exec"
	"github.com/nikolalohinski/gonja/v2/loaders"
	"github.com/nikolalohinski/gonja/v2/parser"
)

// The gonja environment of a chat template: transformers' settings, and
// replacements for the gonja built-ins that differ from Jinja2, found by
// rendering testdata/probes.txt through both (TestProbes keeps them
// covered and lists what still differs):
//   - str.split(), lstrip(), rstrip() without arguments, replace() without
//     a count, ljust/rjust without a fill character fail in gonja (wrong
//     default arguments); strip, trim and split use Go's whitespace set,
//     not Python's; startswith/endswith are true on an empty string and take
//     no tuple; find/rfind count bytes; count counts the string itself;
//   - tojson is Go's encoding/json (compact, HTML-escaped, sorted keys);
//   - the reverse filter sorts; round rounds half away from zero; items and
//     dictsort return nothing for dict literals; dict .keys()/.items() lose
//     the order;
//   - messages[-len(messages)] is out of range (off by one), see messageList;
//   - *, //, % and ** (see rewriteArithmetic);
//   - range() streams through a goroutine that leaks when a loop breaks;
//   - lstrip_blocks and string literals ending in a backslash (see prepass).
// Dropped, because they would touch files or mutate values (transformers'
// ImmutableSandboxedEnvironment refuses mutation) or are unbounded: the
// include/import/extends/block/do/trans tags, list and dict mutators,
// str.format/format_map/expandtabs/encode, lipsum, random and gettext.

const rootName = "chat_template"

// maxWidth bounds padding widths and slice counts (center, ljust, slice...).
const maxWidth = 1 << 16

func parse(source string, opts Options) (*exec.Template, error) {
	cfg := config.New()
	cfg.TrimBlocks = true
	cfg.LeftStripBlocks = false // done by prepass, as Jinja2 does it
	cfg.KeepTrailingNewline = false
	cfg.AutoEscape = false

	env := &exec.Environment{
		Context:           globals(opts),
		Filters:           filters(opts.Limits.MaxValueBytes),
		Tests:             exec.NewTestSet(map[string]exec.TestFunction{}).Update(builtins.Tests),
		ControlStructures: controlStructureSet(),
		Methods:           methodSets(opts.Limits.MaxValueBytes),
	}
	src, err := prepass(source)
	if err != nil {
		return nil, fmt.Errorf("chat: parsing template: %w", err)
	}
	src = inlineConditionals(src)
	var tmpl *exec.Template
	err = catchPanic(func() error {
		var err error
		tmpl, err = exec.NewTemplate(rootName, cfg, sourceLoader(src), env)
		return err
	})
	if errors.Is(err, errPanic) {
		return nil, fmt.Errorf("chat: parsing template: %w", err)
	}
	if err != nil {
		return nil, fmt.Errorf("chat: parsing template: %s", tidyError(err.Error()))
	}
	rewriteArithmetic(tmpl.Root())
	return tmpl, nil
}

func catchPanic(f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w on this template: %v", errPanic, r)
		}
	}()
	return f()
}

// sourceLoader serves the template itself and nothing else: a template
// from a model file must not read the file system.
type sourceLoader string

func (l sourceLoader) Read(path string) (io.Reader, error) {
	if path != rootName {
		return nil, fmt.Errorf("chat templates cannot load other templates (%q)", path)
	}
	return strings.NewReader(string(l)), nil
}

func (l sourceLoader) Resolve(path string) (string, error) { return path, nil }

func (l sourceLoader) Inherit(string) (loaders.Loader, error) { return l, nil }

func controlStructureSet() *exec.ControlStructureSet {
	set := map[string]parser.ControlStructureParser{}
	for _, name := range []string{"if", "raw", "break", "continue", "call", "filter", "with", "autoescape"} {
		p, ok := builtins.ControlStructures.Get(name)
		if !ok {
			panic("chat: gonja lacks the " + name + " tag")
		}
		set[name] = p
	}
	wrap := map[string]func(parser.ControlStructureParser) parser.ControlStructureParser{
		"for": guardedFor, "macro": guardedMacro, "set": checkedSetParser,
	}
	for name, w := range wrap {
		p, ok := builtins.ControlStructures.Get(name)
		if !ok {
			panic("chat: gonja lacks the " + name + " tag")
		}
		set[name] = w(p)
	}
	return exec.NewControlStructureSet(set)
}

func globals(opts Options) *exec.Context {
	g := map[string]any{
		"strftime_now": func(format string) (string, error) { return strftime(format, opts.Now()) },
		"range":        rangeFunc(opts.Limits.MaxSteps),
	}
	for _, name := range []string{"namespace", "dict", "cycler", "joiner"} {
		v, ok := builtins.GlobalFunctions.Get(name)
		if !ok {
			panic("chat: gonja lacks the " + name + " function")
		}
		g[name] = v
	}
	for name, f := range arithFuncs(opts.Limits.MaxValueBytes) {
		g[name] = f
	}
	ctx := exec.NewContext(g)
	// Like Jinja, true/false/none (and Python's spellings) are globals in gonja.
	return ctx.Update(builtins.GlobalVariables)
}

// rangeFunc is Python's range as a list, at most limit long (a longer one
// could only serve a loop the step limit would stop anyway).
func rangeFunc(limit int) func(*exec.Evaluator, *exec.VarArgs) *exec.Value {
	return func(e *exec.Evaluator, va *exec.VarArgs) *exec.Value {
		var start, stop, step = 0, 0, 1
		ints := make([]int, len(va.Args))
		for i, a := range va.Args {
			if !a.IsInteger() {
				return exec.AsValue(fmt.Errorf("range: argument %d is not an integer: %s", i+1, a.String()))
			}
			ints[i] = a.Integer()
		}
		switch len(ints) {
		case 1:
			stop = ints[0]
		case 2:
			start, stop = ints[0], ints[1]
		case 3:
			start, stop, step = ints[0], ints[1], ints[2]
		default:
			return exec.AsValue(errors.New("range expects 1 to 3 integer arguments"))
		}
		if step == 0 || len(va.KwArgs) != 0 {
			return exec.AsValue(errors.New("range: step must not be zero, and range takes no keyword arguments"))
		}
		n := 0
		if step > 0 && start < stop {
			n = (stop-start-1)/step + 1
		} else if step < 0 && start > stop {
			n = (start-stop-1)/(-step) + 1
		}
		if n > limit || n < 0 {
			return recordLimit(e, exec.AsValue(limitError("range length", limit)))
		}
		out := make([]any, n)
		for i := range out {
			out[i] = start + i*step
		}
		return exec.AsValue(out)
	}
}

func filters(maxValue int) *exec.FilterSet {
	keep := []string{"abs", "attr", "capitalize", "default", "d", "escape", "e", "first",
		"float", "forceescape", "groupby", "int", "last", "length", "count", "list", "lower", "map",
		"max", "min", "pprint", "reject", "rejectattr", "safe", "select", "selectattr",
		"sort", "string", "striptags", "sum", "title", "truncate", "unique", "upper", "urlencode",
		"wordcount", "wordwrap", "xmlattr"}
	set := map[string]exec.FilterFunction{}
	for _, name := range keep {
		f, ok := builtins.Filters.Get(name)
		if !ok {
			panic("chat: gonja lacks the " + name + " filter")
		}
		set[name] = f
	}
	builtin := func(name string) exec.FilterFunction {
		f, ok := builtins.Filters.Get(name)
		if !ok {
			panic("chat: gonja lacks the " + name + " filter")
		}
		return f
	}
	set["tojson"] = filterToJSON(maxValue)
	set["trim"] = filterTrim
	set["reverse"] = filterReverse
	set["round"] = filterRound
	set["items"] = filterItems
	set["dictsort"] = filterDictSort
	set["replace"] = filterReplace(maxValue)
	// Filters whose output grows with a numeric argument: bound the argument
	// (and for indent and join the product) before gonja allocates.
	set["center"] = boundedFilter(builtin("center"), maxValue, nil)
	set["slice"] = boundedFilter(builtin("slice"), maxValue, nil)
	set["batch"] = boundedFilter(builtin("batch"), maxValue, nil)
	set["indent"] = boundedFilter(builtin("indent"), maxValue, func(in *exec.Value, params *exec.VarArgs) int {
		width := params.GetKeywordArgument("width", 4)
		if len(params.Args) > 0 {
			width = params.Args[0]
		}
		w := len(width.String())
		if width.IsInteger() {
			w = width.Integer()
		}
		return len(in.String()) + (strings.Count(in.String(), "\n")+1)*w
	})
	set["join"] = boundedFilter(builtin("join"), maxValue, func(in *exec.Value, params *exec.VarArgs) int {
		sep := params.GetKeywordArgument("d", "")
		if len(params.Args) > 0 {
			sep = params.Args[0]
		}
		size := 0
		if in.IsIterable() {
			size = valueSize(reflect.ValueOf(in.Interface()), maxValue, 0) + in.Len()*len(sep.String())
		}
		return size
	})
	set["format"] = boundedFilter(builtin("format"), maxValue, func(in *exec.Value, _ *exec.VarArgs) int {
		// Go's fmt does the formatting: a width like %99999999d allocates it.
		digits := 0
		for _, c := range in.String() {
			if c >= '0' && c <= '9' {
				if digits++; digits > 4 {
					return maxValue + 1
				}
			} else {
				digits = 0
			}
		}
		return 0
	})
	return exec.NewFilterSet(set)
}

// boundedFilter refuses integer arguments outside ±maxWidth and, with
// size, calls whose predicted output exceeds maxValue.
func boundedFilter(f exec.FilterFunction, maxValue int, size func(in *exec.Value, params *exec.VarArgs) int) exec.FilterFunction {
	return func(e *exec.Evaluator, in *exec.Value, params *exec.VarArgs) *exec.Value {
		if in.IsError() {
			return in
		}
		args := append([]*exec.Value{}, params.Args...)
		for _, v := range params.KwArgs {
			args = append(args, v)
		}
		for _, a := range args {
			if a.IsInteger() && (a.Integer() > maxWidth || a.Integer() < -maxWidth) {
				return recordLimit(e, exec.AsValue(limitError("width or count argument", maxWidth)))
			}
		}
		if size != nil && size(in, params) > maxValue {
			return recordLimit(e, exec.AsValue(limitError("value size", maxValue)))
		}
		return f(e, in, params)
	}
}

func filterTrim(_ *exec.Evaluator, in *exec.Value, params *exec.VarArgs) *exec.Value {
	var chars *exec.Value
	if err := params.Take(exec.KeywordArgument("chars", exec.AsValue(nil), anyArg(&chars))); err != nil {
		return exec.AsValue(fmt.Errorf("trim: %w", err))
	}
	var set *string
	if !chars.IsNil() {
		s := chars.String()
		set = &s
	}
	return exec.AsValue(pyStrip(in.String(), set, true, true))
}

func filterReplace(maxValue int) exec.FilterFunction {
	return func(e *exec.Evaluator, in *exec.Value, params *exec.VarArgs) *exec.Value {
		var old, new string
		var count *exec.Value
		if err := params.Take(
			exec.PositionalArgument("old", nil, exec.StringArgument(&old)),
			exec.PositionalArgument("new", nil, exec.StringArgument(&new)),
			exec.KeywordArgument("count", exec.AsValue(nil), anyArg(&count)),
		); err != nil {
			return exec.AsValue(fmt.Errorf("replace: %w", err))
		}
		n := -1
		if !count.IsNil() {
			n = count.Integer()
		}
		out, err := pyReplace(in.String(), old, new, n, maxValue)
		if err != nil {
			return recordLimit(e, exec.AsValue(err))
		}
		return exec.AsValue(out)
	}
}

// messageList is the messages list. gonja resolves x[-i] only for
// i < len(x); an ItemGetter takes precedence over its reflection.
type messageList []any

func (l messageList) GetItem(key any) (*exec.Value, bool) {
	i, ok := key.(int)
	if !ok {
		return exec.AsValue(nil), false
	}
	if i < 0 {
		i += len(l)
	}
	if i < 0 || i >= len(l) {
		return exec.AsValue(nil), false
	}
	return exec.ToValue(l[i]), true
}

func methodSets(maxValue int) exec.Methods {
	str := map[string]exec.Method[string]{}
	for _, name := range []string{"capitalize", "capwords", "casefold", "isalnum",
		"isalpha", "isascii", "isdecimal", "isdigit", "islower", "isnumeric", "isprintable", "isspace",
		"istitle", "isupper", "lower", "partition", "removeprefix", "removesuffix", "rpartition",
		"splitlines", "swapcase", "title", "upper"} {
		str[name] = builtinMethod(methods.All.Str, name)
	}
	str["startswith"] = affixMethod(strings.HasPrefix)
	str["endswith"] = affixMethod(strings.HasSuffix)
	str["find"] = findMethod(false)
	str["rfind"] = findMethod(true)
	for name, align := range map[string]byte{"center": 'c', "ljust": 'l', "rjust": 'r'} {
		str[name] = func(self string, _ *exec.Value, va *exec.VarArgs) (any, error) {
			width, fill := 0, " "
			if err := va.Take(
				exec.PositionalArgument("width", nil, exec.IntArgument(&width)),
				exec.PositionalArgument("fillchar", exec.AsValue(" "), exec.StringArgument(&fill)),
			); err != nil {
				return nil, err
			}
			if utf8.RuneCountInString(fill) != 1 {
				return nil, errors.New("the fill character must be exactly one character long")
			}
			if width > maxWidth {
				return nil, limitError("width argument", maxWidth)
			}
			r, _ := utf8.DecodeRuneInString(fill)
			return pyPad(self, width, r, align), nil
		}
	}
	str["zfill"] = func(self string, _ *exec.Value, va *exec.VarArgs) (any, error) {
		width := 0
		if err := va.Take(exec.PositionalArgument("width", nil, exec.IntArgument(&width))); err != nil {
			return nil, err
		}
		if width > maxWidth {
			return nil, limitError("width argument", maxWidth)
		}
		return pyZfill(self, width), nil
	}
	str["strip"] = stripMethod(true, true)
	str["lstrip"] = stripMethod(true, false)
	str["rstrip"] = stripMethod(false, true)
	str["split"] = splitMethod(false)
	str["rsplit"] = splitMethod(true)
	str["count"] = func(self string, _ *exec.Value, va *exec.VarArgs) (any, error) {
		var sub string
		if err := va.Take(exec.PositionalArgument("sub", nil, exec.StringArgument(&sub))); err != nil {
			return nil, err
		}
		return strings.Count(self, sub), nil
	}
	str["replace"] = func(self string, _ *exec.Value, va *exec.VarArgs) (any, error) {
		var old, new string
		count := -1
		if err := va.Take(
			exec.PositionalArgument("old", nil, exec.StringArgument(&old)),
			exec.PositionalArgument("new", nil, exec.StringArgument(&new)),
			exec.PositionalArgument("count", exec.AsValue(-1), exec.IntArgument(&count)),
		); err != nil {
			return nil, err
		}
		return pyReplace(self, old, new, count, maxValue)
	}
	str["join"] = func(self string, _ *exec.Value, va *exec.VarArgs) (any, error) {
		if len(va.Args) != 1 || len(va.KwArgs) != 0 || !va.Args[0].IsIterable() {
			return nil, errors.New("join expects one iterable argument")
		}
		var parts []string
		size := 0
		var err error
		va.Args[0].Iterate(func(_, _ int, key, _ *exec.Value) bool {
			if !key.IsString() {
				err = fmt.Errorf("join: sequence item is not a str: %s", key.String())
				return false
			}
			size += len(key.String()) + len(self)
			if size > maxValue {
				err = limitError("value size", maxValue)
				return false
			}
			parts = append(parts, key.String())
			return true
		}, func() {})
		if err != nil {
			return nil, err
		}
		return strings.Join(parts, self), nil
	}

	dict := map[string]exec.Method[map[string]any]{"get": builtinMethod(methods.All.Dict, "get"), "copy": builtinMethod(methods.All.Dict, "copy")}
	// keys/values/items in insertion order when the dict keeps one (messages,
	// dict literals); gonja's go through a Go map.
	for _, name := range []string{"keys", "values", "items"} {
		fallback := builtinMethod(methods.All.Dict, name)
		dict[name] = func(self map[string]any, sv *exec.Value, va *exec.VarArgs) (any, error) {
			d, ok := sv.Interface().(*exec.Dict)
			if !ok || len(va.Args) != 0 || len(va.KwArgs) != 0 {
				return fallback(self, sv, va)
			}
			out := make([]any, len(d.Pairs))
			for i, p := range d.Pairs {
				switch name {
				case "keys":
					out[i] = p.Key
				case "values":
					out[i] = p.Value
				default:
					out[i] = []any{p.Key, p.Value}
				}
			}
			return out, nil
		}
	}
	list := map[string]exec.Method[[]any]{"copy": builtinMethod(methods.All.List, "copy")}

	return exec.Methods{
		Bool:  methods.All.Bool,
		Int:   methods.All.Int,
		Float: methods.All.Float,
		Str:   exec.NewMethodSet(str),
		Dict:  exec.NewMethodSet(dict),
		List:  exec.NewMethodSet(list),
	}
}

func builtinMethod[I any](set *exec.MethodSet[I], name string) exec.Method[I] {
	m, ok := set.Get(name)
	if !ok {
		panic("chat: gonja lacks the method " + name)
	}
	return m
}

// optionalInt takes an argument that may be None.
func optionalInt(out **int) exec.ArgumentTransmuter {
	return func(v *exec.Value) error {
		if v.IsNil() {
			*out = nil
			return nil
		}
		if !v.IsInteger() {
			return fmt.Errorf("%s is not an integer or None", v.String())
		}
		i := v.Integer()
		*out = &i
		return nil
	}
}

// affixMethod is str.startswith/endswith: the affix may be a tuple of
// strings, and start/end select a code-point slice.
func affixMethod(has func(s, affix string) bool) exec.Method[string] {
	return func(self string, _ *exec.Value, va *exec.VarArgs) (any, error) {
		var affix *exec.Value
		var start, end *int
		if err := va.Take(
			exec.PositionalArgument("affix", nil, anyArg(&affix)),
			exec.PositionalArgument("start", exec.AsValue(nil), optionalInt(&start)),
			exec.PositionalArgument("end", exec.AsValue(nil), optionalInt(&end)),
		); err != nil {
			return nil, err
		}
		if start != nil || end != nil {
			r := []rune(self)
			lo, hi := pyBounds(len(r), start, end)
			if lo > hi {
				return false, nil
			}
			self = string(r[lo:hi])
		}
		if affix.IsString() {
			return has(self, affix.String()), nil
		}
		if !affix.IsList() {
			return nil, fmt.Errorf("the affix must be a str or a tuple of str, not %s", typeName(affix))
		}
		found := false
		var err error
		affix.Iterate(func(_, _ int, key, _ *exec.Value) bool {
			if !key.IsString() {
				err = fmt.Errorf("the affix tuple must hold str, not %s", typeName(key))
				return false
			}
			found = has(self, key.String())
			return !found
		}, func() {})
		return found, err
	}
}

func findMethod(fromRight bool) exec.Method[string] {
	return func(self string, _ *exec.Value, va *exec.VarArgs) (any, error) {
		var sub string
		var start, end *int
		if err := va.Take(
			exec.PositionalArgument("sub", nil, exec.StringArgument(&sub)),
			exec.PositionalArgument("start", exec.AsValue(nil), optionalInt(&start)),
			exec.PositionalArgument("end", exec.AsValue(nil), optionalInt(&end)),
		); err != nil {
			return nil, err
		}
		return pyFind(self, sub, start, end, fromRight), nil
	}
}

// optionalString takes an argument that may be None.
func optionalString(out **string) exec.ArgumentTransmuter {
	return func(v *exec.Value) error {
		if v.IsNil() {
			*out = nil
			return nil
		}
		if !v.IsString() {
			return fmt.Errorf("%s is not a string or None", v.String())
		}
		s := v.String()
		*out = &s
		return nil
	}
}

func stripMethod(left, right bool) exec.Method[string] {
	return func(self string, _ *exec.Value, va *exec.VarArgs) (any, error) {
		var chars *string
		if err := va.Take(exec.PositionalArgument("chars", exec.AsValue(nil), optionalString(&chars))); err != nil {
			return nil, err
		}
		return pyStrip(self, chars, left, right), nil
	}
}

func splitMethod(fromRight bool) exec.Method[string] {
	return func(self string, _ *exec.Value, va *exec.VarArgs) (any, error) {
		var sep *string
		maxsplit := -1
		if err := va.Take(
			exec.PositionalArgument("sep", exec.AsValue(nil), optionalString(&sep)),
			exec.PositionalArgument("maxsplit", exec.AsValue(-1), exec.IntArgument(&maxsplit)),
		); err != nil {
			return nil, err
		}
		parts, err := pySplit(self, sep, maxsplit, fromRight)
		if err != nil {
			return nil, err
		}
		out := make([]any, len(parts))
		for i, p := range parts {
			out[i] = p
		}
		return out, nil
	}
}
